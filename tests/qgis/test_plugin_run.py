"""Running the task to the end on real imagery: the pooled layers that come back.

Imagery: the real S2 tiles from ../shared as project raster layers (demo stacks when absent).
Layers in EPSG:4326 and EPSG:3857 exercise the reprojection to the tiles' UTM zones.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import memory_layer, wait_for
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

FEATURES = 8  # small RCF: the tests check plumbing and coordinates, not the model
OPTIONS = {"model": "rcf", "output": "pooled", "time_mode": "all", "source": "project", "buffer_m": 160.0,
           "device": "cpu", "id_field": "name",
           "model_config": {"features": FEATURES}}


def _to(crs_from: str, crs_to: str, x: float, y: float) -> QgsPointXY:
    tr = QgsCoordinateTransform(QgsCoordinateReferenceSystem(crs_from), QgsCoordinateReferenceSystem(crs_to),
                                QgsProject.instance())
    return tr.transform(QgsPointXY(x, y))


def _tile_point(raster: QgsRasterLayer, fx: float, fy: float, crs: str) -> QgsPointXY:
    e = raster.extent()
    x, y = e.xMinimum() + fx * e.width(), e.yMinimum() + fy * e.height()
    return _to(raster.crs().authid(), crs, x, y)


def _run(plugin, layer: QgsVectorLayer, tmp_path: Path, **options):
    layer.selectAll()
    task = plugin.start_job(layer, {**OPTIONS, "out_dir": str(tmp_path), **options}, confirm=False)
    wait_for(task, 120)
    assert task.error is None, f"{task.error}: {task.error.details}"
    return task


def test_pooled_run_adds_layer_with_ids_embedding_fields_and_layer_crs(plugin, project_rasters, tmp_path):
    # points in lon/lat on both tiles (two UTM zones), plus one polygon
    pts = [_tile_point(r, fx, 0.5, "EPSG:4326") for r in project_rasters for fx in (0.3, 0.7)]
    wkts = [f"POINT({p.x()} {p.y()})" for p in pts]
    layer = memory_layer("Point", "EPSG:4326", wkts, names=["a", "b", "c", "d"])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path)

    res = task.result
    assert res["failed"] == [] and res["dim"] == FEATURES
    # the worker's step texts reached the task list's description
    assert "indexing imagery" in task.steps and any(t.startswith("embedded ") for t in task.steps)
    assert Path(res["pooled"]).is_file() and Path(res["geoparquet"]).is_file()
    (out,) = task.layers
    assert isinstance(out, QgsVectorLayer) and out.isValid()
    assert out.featureCount() == 4
    assert out.crs().authid() == "EPSG:4326"
    names = out.fields().names()
    assert {"id", "model"} <= set(names)
    assert [n for n in names if n.startswith("e") and n[1:].isdigit()] == [f"e{i}" for i in range(FEATURES)]
    feats = {f["id"]: f for f in out.getFeatures()}
    assert sorted(feats) == ["a", "b", "c", "d"]
    for name, p in zip("abcd", pts):
        g = feats[name].geometry().asPoint()
        assert (g.x(), g.y()) == pytest.approx((p.x(), p.y()), abs=1e-9)
        vec = [feats[name][f"e{i}"] for i in range(FEATURES)]
        assert all(math.isfinite(v) for v in vec) and any(v != 0 for v in vec)
    # different places, different embeddings
    assert [feats["a"][f"e{i}"] for i in range(FEATURES)] != [feats["c"][f"e{i}"] for i in range(FEATURES)]
    group = QgsProject.instance().layerTreeRoot().findGroup("eoembed — rcf")
    assert group is not None and group.findLayer(out.id()) is not None
    # (SQLite's -wal/-shm files exist while QGIS holds the GeoPackage open)
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))
    assert files == sorted([Path(res["pooled"]).name, Path(res["geoparquet"]).name])


def test_polygons_in_web_mercator_are_reprojected_and_masked(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    c = _tile_point(r, 0.5, 0.5, "EPSG:3857")
    d = 400.0  # a triangle and the box around it give different masked means
    tri = f"POLYGON(({c.x() - d} {c.y() - d},{c.x() + d} {c.y() - d},{c.x() - d} {c.y() + d},{c.x() - d} {c.y() - d}))"
    box = f"POLYGON(({c.x() - d} {c.y() - d},{c.x() + d} {c.y() - d},{c.x() + d} {c.y() + d},{c.x() - d} {c.y() + d},{c.x() - d} {c.y() - d}))"
    layer = memory_layer("Polygon", "EPSG:3857", [tri, box], names=["tri", "box"])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path)
    (out,) = task.layers
    assert out.featureCount() == 2 and out.crs().authid() == "EPSG:3857"
    feats = {f["id"]: [f[f"e{i}"] for i in range(FEATURES)] for f in out.getFeatures()}
    assert feats["tri"] != pytest.approx(feats["box"], rel=1e-3)


def test_estimate_counts_items_and_pixels(qgis_new_project):
    from eoembed_qgis.job import build_job, estimate

    layer = memory_layer("Point", "EPSG:32632", ["POINT(550000 6343000)", "POINT(551000 6343000)"])
    layer.selectAll()
    job = build_job(layer, {**OPTIONS, "buffer_m": 320.0, "source": "local", "local_paths": ["x"]})
    est = estimate(layer, job, 10.0)
    assert est == {"items": 2.0, "pixels": 2 * 64 * 64}
    assert job["crs"] == "EPSG:32632" and [p["id"] for p in job["places"]] == ["site0", "site1"]
