"""Processing algorithm: a 3-band PCA colour view of an embedding raster."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import analysis_io
from ..icons import icon
from ..styles import StylePostProcessor


class PcaViewAlgorithm(QgsProcessingAlgorithm):
    """The first three principal components of the cells, stretched to RGB, for looking at a grid."""

    INPUT, OUTPUT = "INPUT", "OUTPUT"

    def name(self) -> str:
        return "pcaview"

    def displayName(self) -> str:  # noqa: N802
        return "PCA colour view"

    def group(self) -> str:
        return "Analysis"

    def groupId(self) -> str:  # noqa: N802
        return "analysis"

    def icon(self):
        return icon("pca")

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Projects every cell of an embedding raster (from <i>Embed area</i>) on its first three "
            "principal components and writes them as a 3-band byte raster (each stretched between "
            "its 2 % and 98 % values to 1 … 255; 0 where the input has no data). Cells that look "
            "alike to the model get similar colours. Runs in QGIS with numpy; no engine needed."
        )

    def createInstance(self) -> PcaViewAlgorithm:  # noqa: N802
        return PcaViewAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Embedding raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "PCA colour view"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        try:
            result = analysis_io.pca_view(analysis_io.raster_path(layer), out)
        except analysis_io.AnalysisError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.setProgress(100)
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).setPostProcessor(StylePostProcessor.create("pca"))
        return {self.OUTPUT: result}
