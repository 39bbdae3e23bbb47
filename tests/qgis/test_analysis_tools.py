"""The analysis map tools: similarity from a clicked point and from features, text queries, actions.

The embedding raster is written with GDAL (as the engine writes it: float32, NaN nodata, the
provenance in the ``eoembed_meta`` item) from a constructed grid whose cells hold known
vectors, so the similarity of every cell is known by hand. Everything runs in QGIS's Python;
text queries reach the engine through the worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_raster, write_tif

pytest.importorskip("qgis.core")

from qgis.core import (  # noqa: E402
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.gui import QgsMapMouseEvent  # noqa: E402
from qgis.PyQt.QtCore import QEvent, Qt  # noqa: E402
from qgis.PyQt.QtWidgets import QMenu, QToolBar  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "qgis_plugin"))

X0, Y0, RES = 550_000.0, 6_340_000.0, 40.0


def write_grid(path: Path, model: str = "rcf") -> np.ndarray:
    """A 4-band 6×8 grid: left half along [1,0,0,0], right half along [0,1,0,0], one NaN cell."""
    import json

    v = np.zeros((4, 6, 8), np.float32)
    v[0, :, :4] = 1.0
    v[1, :, 4:] = 1.0
    v[2] = np.linspace(0.0, 1.0, 48).reshape(6, 8)  # every cell a little different
    v[:, 5, 7] = np.nan
    write_tif(path, v, "EPSG:32632", (X0, RES, 0.0, Y0, 0.0, -RES), nodata=float("nan"),
              descriptions=[f"emb_{i:04d}" for i in range(4)], metadata={"eoembed_meta": json.dumps({"model": model})})
    return v


def cosine(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
    flat = v.reshape(v.shape[0], -1).astype(np.float64)
    return (ref @ flat / (np.linalg.norm(ref) * np.linalg.norm(flat, axis=0))).reshape(v.shape[1:])


@pytest.fixture()
def grid_layer(qgis_iface, tmp_path: Path):
    values = write_grid(tmp_path / "grid.tif")
    layer = QgsRasterLayer(str(tmp_path / "grid.tif"), "grid", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    yield layer, values
    QgsProject.instance().removeAllMapLayers()


def read_band(layer: QgsRasterLayer) -> np.ndarray:
    values, gt, crs = read_raster(layer.source())
    assert values.shape[0] == 1 and crs == "EPSG:32632"
    assert gt == (X0, RES, 0, Y0, 0, -RES)
    return values[0]


def test_clicking_the_map_adds_a_styled_similarity_layer(qgis_iface, grid_layer) -> None:
    from eoembed_qgis.analysis_tools import SimilarityMapTool

    layer, values = grid_layer
    canvas = qgis_iface.mapCanvas()
    canvas.resize(400, 300)
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:32632"))
    canvas.setExtent(QgsRectangle(X0, Y0 - 6 * RES, X0 + 8 * RES, Y0))
    canvas.refresh()
    tool = SimilarityMapTool(qgis_iface)
    target = QgsPointXY(X0 + 2.5 * RES, Y0 - 1.5 * RES)  # cell row 1, col 2
    pixel = canvas.getCoordinateTransform().transform(target).toQPointF().toPoint()
    before = set(QgsProject.instance().mapLayers())
    tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, pixel, Qt.LeftButton))
    added = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before]
    assert len(added) == 1, qgis_iface.messageBar().get_messages(2)
    sim = added[0]
    assert isinstance(sim.renderer(), QgsSingleBandPseudoColorRenderer)
    got = read_band(sim)
    assert got[1, 2] == pytest.approx(1.0)  # the clicked cell is identical to itself
    np.testing.assert_allclose(got, cosine(values, values[:, 1, 2]), atol=1e-6)
    assert np.isnan(got[5, 7])


def test_similarity_from_a_point_in_another_crs(grid_layer) -> None:
    from eoembed_qgis.analysis_tools import similarity_from_point
    from qgis.core import QgsCoordinateTransform

    layer, values = grid_layer
    tr = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32632"),
                                QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    ll = tr.transform(QgsPointXY(X0 + 6.5 * RES, Y0 - 3.5 * RES))
    lon, lat = ll.x(), ll.y()
    sim = similarity_from_point(layer, QgsPointXY(lon, lat), QgsCoordinateReferenceSystem("EPSG:4326"))
    got = read_band(sim)
    assert got[3, 6] == pytest.approx(1.0)
    np.testing.assert_allclose(got, cosine(values, values[:, 3, 6]), atol=1e-6)
    assert sim in QgsProject.instance().mapLayers().values()


def test_similarity_from_selected_features_uses_their_mean_vector(grid_layer) -> None:
    from eoembed_qgis.analysis_tools import similarity_from_features

    layer, values = grid_layer
    vec = QgsVectorLayer("Polygon?crs=EPSG:32632", "refs", "memory")
    f1, f2 = QgsFeature(), QgsFeature()
    # f1 holds the centres of rows 0-1, cols 0-1; f2 (not selected) lies over the right half
    f1.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0 + 1, Y0 - 2 * RES + 1, X0 + 2 * RES - 1, Y0 - 1)))
    f2.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0 + 5 * RES, Y0 - 3 * RES, X0 + 7 * RES, Y0 - RES)))
    vec.dataProvider().addFeatures([f1, f2])
    QgsProject.instance().addMapLayer(vec)
    vec.selectByIds([next(vec.getFeatures()).id()])
    got = read_band(similarity_from_features(layer, vec))
    ref = values[:, 0:2, 0:2].reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(got, cosine(values, ref), atol=1e-6)
    vec.removeSelection()
    from eoembed_qgis.analysis_io import AnalysisError

    with pytest.raises(AnalysisError, match="no selected features"):
        similarity_from_features(layer, vec)


def test_clicking_outside_the_grid_says_so(qgis_iface, grid_layer) -> None:
    from eoembed_qgis.analysis_io import AnalysisError
    from eoembed_qgis.analysis_tools import similarity_from_point

    layer, _ = grid_layer
    with pytest.raises(AnalysisError, match="outside the grid"):
        similarity_from_point(layer, QgsPointXY(X0 - 100, Y0), QgsCoordinateReferenceSystem("EPSG:32632"))


def test_text_query_on_a_model_without_text_encoder_is_a_clear_message(grid_layer) -> None:
    from eoembed_qgis.analysis_io import AnalysisError
    from eoembed_qgis.analysis_tools import text_query

    layer, _ = grid_layer
    with pytest.raises(AnalysisError, match="no text encoder.*CLIP model"):
        text_query(layer, "a river")


def test_cluster_style_is_one_colour_per_class(tmp_path: Path) -> None:
    from eoembed_qgis.analysis_io import clusters
    from eoembed_qgis.analysis_tools import add_result_layer

    write_grid(tmp_path / "g.tif")
    clusters(str(tmp_path / "g.tif"), 3, 0, tmp_path / "k.tif")
    layer = add_result_layer(str(tmp_path / "k.tif"), "clusters", "clusters", "rcf")
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert [c.value for c in layer.renderer().classes()] == [0, 1, 2]
    QgsProject.instance().removeAllMapLayers()


def test_analysis_actions_are_added_and_removed(qgis_iface) -> None:
    from eoembed_qgis.analysis_tools import add_analysis_actions

    toolbar, menu = QToolBar(), QMenu()
    actions = add_analysis_actions(qgis_iface, toolbar, menu)
    names = [a.objectName() for a in toolbar.actions()]
    assert names == ["eoembedSimilarityPoint", "eoembedSimilarityFeatures", "eoembedTextQuery"]
    assert len(menu.actions()) == 3
    actions.point_action.trigger()
    assert qgis_iface.mapCanvas().mapTool() is actions.tool
    actions.unload()
    assert toolbar.actions() == [] and menu.actions() == []
    assert qgis_iface.mapCanvas().mapTool() is not actions.tool


def test_text_query_without_clip_weights_names_the_missing_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eoembed_qgis.analysis_io import AnalysisError
    from eoembed_qgis.analysis_tools import text_query

    # an empty, offline weights cache: nothing can be found and nothing is downloaded
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "weights"))
    write_grid(tmp_path / "clip_grid.tif", model="remoteclip-vit-b-32")
    layer = QgsRasterLayer(str(tmp_path / "clip_grid.tif"), "clip grid", "gdal")
    with pytest.raises(AnalysisError) as err:
        text_query(layer, "a river")
    assert "not in the Hugging Face cache" in str(err.value) and "\n" not in str(err.value)
