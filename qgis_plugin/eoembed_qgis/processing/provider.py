"""The eoembed Processing provider: embedding and analysis algorithms in the toolbox."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .cluster_embeddings import ClusterEmbeddingsAlgorithm
from .embed_area import EmbedAreaAlgorithm
from .embed_features import EmbedFeaturesAlgorithm
from .similarity_map import SimilarityMapAlgorithm

ICON = Path(__file__).resolve().parents[1] / "icon.png"


class EoembedProvider(QgsProcessingProvider):
    """Embed features, embed an area, and look at embedding rasters (similarity, clusters)."""

    def id(self) -> str:
        return "eoembed"

    def name(self) -> str:
        return "eoembed"

    def longName(self) -> str:  # noqa: N802
        return "eoembed: embeddings from remote-sensing foundation models"

    def icon(self) -> QIcon:
        return QIcon(str(ICON)) if ICON.exists() else super().icon()

    def loadAlgorithms(self) -> None:  # noqa: N802
        for alg in (EmbedFeaturesAlgorithm(), EmbedAreaAlgorithm(), SimilarityMapAlgorithm(),
                    ClusterEmbeddingsAlgorithm()):
            self.addAlgorithm(alg)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]
