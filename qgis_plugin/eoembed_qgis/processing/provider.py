"""The eoembed Processing provider: embedding and analysis algorithms in the toolbox."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..icons import icon
from .cluster_embeddings import ClusterEmbeddingsAlgorithm
from .embed_area import EmbedAreaAlgorithm
from .embed_features import EmbedFeaturesAlgorithm
from .pca_view import PcaViewAlgorithm
from .similarity_map import SimilarityMapAlgorithm


class EoembedProvider(QgsProcessingProvider):
    """Embed features, embed an area, and look at embedding rasters (similarity, clusters)."""

    def id(self) -> str:
        return "eoembed"

    def name(self) -> str:
        return "eoembed"

    def longName(self) -> str:  # noqa: N802
        return "eoembed: embeddings from remote-sensing foundation models"

    def icon(self) -> QIcon:  # the plugin's icon
        return icon("icon")

    def loadAlgorithms(self) -> None:  # noqa: N802
        for alg in (EmbedFeaturesAlgorithm(), EmbedAreaAlgorithm(), SimilarityMapAlgorithm(),
                    ClusterEmbeddingsAlgorithm(), PcaViewAlgorithm()):
            self.addAlgorithm(alg)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]
