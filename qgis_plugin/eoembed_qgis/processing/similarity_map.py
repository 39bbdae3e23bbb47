"""Processing algorithm: how alike every cell of an embedding raster is to a reference."""

from __future__ import annotations

from qgis.core import (
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterPoint,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import analysis_io
from ..icons import icon
from ..styles import StylePostProcessor


class SimilarityMapAlgorithm(QgsProcessingAlgorithm):
    """Cosine similarity of each grid cell to a reference point's cell or features' mean vector."""

    INPUT, POINT, FEATURES, OUTPUT = "INPUT", "POINT", "FEATURES", "OUTPUT"

    def name(self) -> str:
        return "similaritymap"

    def displayName(self) -> str:  # noqa: N802
        return "Similarity map"

    def group(self) -> str:
        return "Analysis"

    def icon(self):
        return icon("similarity")

    def groupId(self) -> str:  # noqa: N802
        return "analysis"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Compares every cell of an embedding raster (from <i>Embed area</i>) with a reference "
            "and writes a one-band raster of cosine similarity (−1 … 1; 1 = the same direction). "
            "The reference is the cell under the reference point, or the mean vector of the cells "
            "inside the (selected) reference features. Cells without data stay empty. The result "
            "is styled with a diverging ramp: red is most like the reference."
        )

    def createInstance(self) -> SimilarityMapAlgorithm:  # noqa: N802
        return SimilarityMapAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Embedding raster"))
        self.addParameter(QgsProcessingParameterPoint(self.POINT, "Reference point", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.FEATURES, "Or reference features (their cells' mean vector)",
            [QgsProcessing.TypeVectorAnyGeometry], optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Similarity"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        try:
            path = analysis_io.raster_path(layer)
            feedback.setProgress(10)
            if parameters.get(self.FEATURES):
                source = self.parameterAsSource(parameters, self.FEATURES, context)
                geoms = [f.geometry() for f in source.getFeatures() if f.hasGeometry()]
                if not geoms:
                    raise QgsProcessingException("the reference layer has no features (is the selection empty?)")
                wkt = QgsGeometry.unaryUnion(geoms).asWkt(17)
                crs = analysis_io.crs_text(source.sourceCrs())
                if feedback.isCanceled():
                    return {}
                result = analysis_io.similarity_to_geometry(path, wkt, crs, out)
            elif parameters.get(self.POINT):
                pt = self.parameterAsPoint(parameters, self.POINT, context, layer.crs())
                if feedback.isCanceled():
                    return {}
                result = analysis_io.similarity_to_point(path, pt.x(), pt.y(), analysis_io.crs_text(layer.crs()), out)
            else:
                raise QgsProcessingException("give a reference point or reference features")
        except (analysis_io.AnalysisError, ValueError) as exc:  # SpecError is a ValueError
            raise QgsProcessingException(str(exc)) from exc
        feedback.setProgress(100)
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).setPostProcessor(StylePostProcessor.create("similarity"))
        return {self.OUTPUT: result}
