"""Processing algorithm: k-means classes of an embedding raster's cells."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import analysis_io
from ..icons import icon
from ..styles import StylePostProcessor


class ClusterEmbeddingsAlgorithm(QgsProcessingAlgorithm):
    """Unsupervised classes of an embedding raster (k-means with k-means++ seeding)."""

    INPUT, K, SEED, OUTPUT = "INPUT", "K", "SEED", "OUTPUT"

    def name(self) -> str:
        return "clusterembeddings"

    def displayName(self) -> str:  # noqa: N802
        return "Cluster embeddings"

    def group(self) -> str:
        return "Analysis"

    def icon(self):
        return icon("clusters")

    def groupId(self) -> str:  # noqa: N802
        return "analysis"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Groups the cells of an embedding raster (from <i>Embed area</i>) into k clusters "
            "with k-means (k-means++ seeding; the same seed gives the same classes). Writes a "
            "one-band raster of class numbers 0 … k−1, numbered by size (0 is the largest), "
            "empty where the input has no data, styled with one colour per class."
        )

    def createInstance(self) -> ClusterEmbeddingsAlgorithm:  # noqa: N802
        return ClusterEmbeddingsAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Embedding raster"))
        self.addParameter(QgsProcessingParameterNumber(
            self.K, "Number of clusters", QgsProcessingParameterNumber.Integer, defaultValue=6,
            minValue=2, maxValue=64))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, "Random seed", QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Clusters"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        k = self.parameterAsInt(parameters, self.K, context)
        seed = self.parameterAsInt(parameters, self.SEED, context)
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        try:
            path = analysis_io.raster_path(layer)
            feedback.setProgress(10)
            if feedback.isCanceled():
                return {}
            result = analysis_io.clusters(path, k, seed, out)
        except (analysis_io.AnalysisError, ValueError) as exc:  # SpecError is a ValueError
            raise QgsProcessingException(str(exc)) from exc
        feedback.setProgress(100)
        if context.willLoadLayerOnCompletion(out):
            context.layerToLoadOnCompletionDetails(out).setPostProcessor(StylePostProcessor.create("clusters", k))
        return {self.OUTPUT: result}
