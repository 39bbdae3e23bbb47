"""Styles for eoembed's analysis rasters: a diverging ramp for similarity, a palette for clusters."""

from __future__ import annotations

from qgis.core import (
    QgsColorBrewerColorRamp,
    QgsColorRampShader,
    QgsGradientColorRamp,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
)
from qgis.PyQt.QtGui import QColor

#: the diverging ramp of similarity maps (inverted, so the most similar cells are red)
SIMILARITY_RAMP = "RdBu"


def _diverging_ramp() -> QgsGradientColorRamp | QgsColorBrewerColorRamp:
    ramp = QgsStyle.defaultStyle().colorRamp(SIMILARITY_RAMP)
    if ramp is None:  # a profile without the default style: build the same ColorBrewer ramp
        ramp = QgsColorBrewerColorRamp(SIMILARITY_RAMP, 11)
    ramp.invert()
    return ramp


def similarity_renderer(layer: QgsRasterLayer, minimum: float | None = None,
                        maximum: float | None = None) -> QgsSingleBandPseudoColorRenderer:
    """Band 1 on the diverging ramp, stretched over the layer's min..max (or the given range)."""
    provider = layer.dataProvider()
    if minimum is None or maximum is None:
        stats = provider.bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max)
        minimum = stats.minimumValue if minimum is None else minimum
        maximum = stats.maximumValue if maximum is None else maximum
    if not maximum > minimum:
        minimum, maximum = minimum - 1e-6, minimum + 1e-6
    shader_fn = QgsColorRampShader(minimum, maximum, _diverging_ramp(), QgsColorRampShader.Interpolated)
    shader_fn.classifyColorRamp(11, -1)
    shader = QgsRasterShader(minimum, maximum)
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(minimum)
    renderer.setClassificationMax(maximum)
    return renderer


def style_similarity(layer: QgsRasterLayer) -> None:
    """Give a similarity raster the diverging ramp (red = most like the reference)."""
    layer.setRenderer(similarity_renderer(layer))
    layer.triggerRepaint()


def cluster_colors(k: int) -> list[QColor]:
    """`k` distinct colours: ColorBrewer 'Paired' up to 12 classes, else evenly along 'Spectral'."""
    if k <= 12:
        ramp = QgsColorBrewerColorRamp("Paired", max(k, 3))
        return [ramp.color(i / (max(k, 3) - 1)) for i in range(k)]
    ramp = QgsStyle.defaultStyle().colorRamp("Spectral") or QgsColorBrewerColorRamp("Spectral", 11)
    return [ramp.color(i / (k - 1)) for i in range(k)]


def cluster_renderer(layer: QgsRasterLayer, k: int | None = None) -> QgsPalettedRasterRenderer:
    """Band 1 as classes 0..k-1 (k from the layer's maximum when not given), one colour each."""
    if k is None:
        stats = layer.dataProvider().bandStatistics(1, QgsRasterBandStats.Max)
        k = int(round(stats.maximumValue)) + 1
    classes = [QgsPalettedRasterRenderer.Class(i, c, f"cluster {i}") for i, c in enumerate(cluster_colors(k))]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def style_clusters(layer: QgsRasterLayer, k: int | None = None) -> None:
    """Give a cluster raster one colour per class."""
    layer.setRenderer(cluster_renderer(layer, k))
    layer.triggerRepaint()


def style_pca_rgb(layer: QgsRasterLayer) -> None:
    """Show bands 1, 2, 3 (PC1–PC3, already stretched to 1–255) as red, green, blue."""
    layer.setRenderer(QgsMultiBandColorRenderer(layer.dataProvider(), 1, 2, 3))
    layer.triggerRepaint()


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a Processing output when QGIS loads it (kind 'similarity' or 'clusters')."""

    _alive: list[StylePostProcessor] = []  # QGIS keeps only a pointer: hold the Python objects

    def __init__(self, kind: str, k: int | None = None) -> None:
        super().__init__()
        self.kind, self.k = kind, k

    @classmethod
    def create(cls, kind: str, k: int | None = None) -> StylePostProcessor:
        inst = cls(kind, k)
        cls._alive.append(inst)
        del cls._alive[:-32]
        return inst

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            if self.kind == "similarity":
                style_similarity(layer)
            elif self.kind == "clusters":
                style_clusters(layer, self.k)
            elif self.kind == "pca":
                style_pca_rgb(layer)
