"""Processing algorithm: a georeferenced embedding raster over an extent or a layer's features."""

from __future__ import annotations

from qgis.core import (
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterRasterDestination,
)

from ..icons import icon
from . import engine_job


class EmbedAreaAlgorithm(QgsProcessingAlgorithm):
    """Embed an area as a grid (one band per embedding dimension) on the model's own cells."""

    EXTENT, INPUT, OUTPUT, OUTPUT_PCA = "EXTENT", "INPUT", "OUTPUT", "OUTPUT_PCA"

    def name(self) -> str:
        return "embedarea"

    def displayName(self) -> str:  # noqa: N802
        return "Embed area"

    def group(self) -> str:
        return "Embeddings"

    def icon(self):
        return icon("embed_area")

    def groupId(self) -> str:  # noqa: N802
        return "embeddings"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Embeds an area with the chosen model and writes a georeferenced embedding raster: "
            "one band per embedding dimension, one pixel per model cell (e.g. 40 m for rcf), "
            "in the area's CRS. The area is the extent, or the bounding box of the (selected) "
            "features of the layer. Optionally also writes a 3-band PCA colour view. "
            "Use the result with <i>Similarity map</i> and <i>Cluster embeddings</i>."
        )

    def createInstance(self) -> EmbedAreaAlgorithm:  # noqa: N802
        return EmbedAreaAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Area (extent)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.INPUT, "Or the extent of these features", [QgsProcessing.TypeVectorAnyGeometry], optional=True))
        engine_job.add_model_parameters(self)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Embedding raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PCA, "PCA colour view", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        job = engine_job.base_job(self, parameters, context, "area")
        source = self.parameterAsSource(parameters, self.INPUT, context) if parameters.get(self.INPUT) else None
        if source is not None:
            places = [{"id": str(f.id()), "wkt": f.geometry().asWkt(17)}
                      for f in source.getFeatures() if f.hasGeometry() and not f.geometry().isEmpty()]
            if not places:
                raise QgsProcessingException("the layer has no features with a geometry (is the selection empty?)")
            job.update(places=places, crs=engine_job.crs_text(source.sourceCrs()), output="grid_extent")
        elif parameters.get(self.EXTENT):
            crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
            if extent.isEmpty():
                raise QgsProcessingException("the extent is empty; draw or type an area")
            job.update(places=[{"id": "extent", "wkt": QgsGeometry.fromRect(extent).asWkt(17)}],
                       crs=engine_job.crs_text(crs), output="grid")
        else:
            raise QgsProcessingException("give an extent or a layer whose features set the area")
        result = engine_job.run(job, feedback)
        grid = result["grids"][0]
        out = engine_job.copy_atomic(grid["path"], self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        outputs = {self.OUTPUT: out}
        pca_dest = self.parameterAsOutputLayer(parameters, self.OUTPUT_PCA, context)
        if pca_dest and grid.get("pca_path"):
            outputs[self.OUTPUT_PCA] = engine_job.copy_atomic(grid["pca_path"], pca_dest)
        engine_job.remove_outputs(result)
        return outputs
