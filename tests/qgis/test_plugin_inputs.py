"""Inputs that cannot silently mix, ids that stay unique, outputs right at any size, no freezes.

Real tiles from ../shared (demo stacks when absent), real worker runs with the rcf model.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import memory_layer, read_raster, wait_for, write_tif
from qgis.core import QgsProject, QgsRasterLayer
from test_plugin_run import OPTIONS, _run, _tile_point


def _raster(path: Path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_imagery_list_leaves_out_outputs_quicklooks_and_unknown_bands(qgis_new_project, project_rasters, tmp_path):
    from eoembed_qgis.dialog import EmbedDialog
    from eoembed_qgis.imagery import classify
    from eoembed_qgis.job import source_dict
    from qgis.PyQt.QtCore import Qt

    gt = (550000.0, 10.0, 0.0, 6343000.0, 0.0, -10.0)
    ones = np.ones((3, 8, 8))
    quicklook = write_tif(tmp_path / "S2A_20200613_quicklook.tif", ones.astype(np.uint8), "EPSG:32632", gt)
    unnamed = write_tif(tmp_path / "scene_20200613.tif", ones.astype(np.int16), "EPSG:32632", gt)
    output = write_tif(tmp_path / "grid_pca.tif", ones.astype(np.uint8), "EPSG:32632", gt,
                       descriptions=["PC1", "PC2", "PC3"], metadata={"eoembed_meta": json.dumps({"model": "rcf"})})
    odd = write_tif(tmp_path / "ndvi.tif", np.ones((5, 8, 8), np.float32), "EPSG:32632", gt)
    layers = {n: _raster(p, n) for n, p in (("quicklook", quicklook), ("unnamed", unnamed), ("output", output),
                                             ("odd", odd))}
    assert "quicklook" in classify(quicklook).reason and not classify(quicklook).usable
    assert classify(unnamed).needs_confirmation and "true colour" in classify(unnamed).reason
    assert "eoembed output" in classify(output).reason
    assert "5 bands without names" in classify(odd).reason
    assert all(classify(r.source()).usable for r in project_rasters)

    layer = memory_layer("Point", "EPSG:4326", ["POINT(10 50)"])
    dlg = EmbedDialog(layer, cards={"rcf": {"id": "rcf"}})
    items = {dlg.raster_list.item(i).data(Qt.UserRole): dlg.raster_list.item(i)
             for i in range(dlg.raster_list.count())}
    assert layers["output"].id() not in items  # the plugin's own outputs are not even listed
    assert items[layers["quicklook"].id()].checkState() == Qt.Unchecked
    assert not items[layers["quicklook"].id()].flags() & Qt.ItemIsEnabled
    assert "quicklook" in items[layers["quicklook"].id()].text()
    assert items[layers["unnamed"].id()].checkState() == Qt.Unchecked  # S2 true colour only if confirmed
    assert {i for i, it in items.items() if it.checkState() == Qt.Checked} == {r.id() for r in project_rasters}
    # what reaches the job: the real tiles; the 3-band raster only once the user ticked it
    left_out: list[str] = []
    paths = source_dict({**dlg.options(), "raster_layers": list(items)}, left_out)["paths"]
    assert sorted(paths) == sorted(r.source() for r in project_rasters)
    assert len(left_out) == 3 and any("ndvi.tif" in r for r in left_out)
    items[layers["unnamed"].id()].setCheckState(Qt.Checked)
    assert str(unnamed) in source_dict(dlg.options())["paths"]
    # a folder of scenes with quicklooks beside them: only the scenes are read
    folder = {"source": "local", "local_paths": [str(tmp_path)]}
    left_out = []
    assert source_dict(folder, left_out)["paths"] == []
    assert len(left_out) == 4


def test_duplicate_ids_get_a_suffix_and_every_output_is_unique(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    pts = [_tile_point(r, fx, 0.5, "EPSG:4326") for fx in (0.3, 0.5, 0.7)]
    layer = memory_layer("Point", "EPSG:4326", [f"POINT({p.x()} {p.y()})" for p in pts], names=["a", "a", "a"])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path, output="grid")
    assert sorted(g["id"] for g in task.result["grids"]) == ["a", "a_2", "a_3"]
    assert len({g["path"] for g in task.result["grids"]}) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    # three grids: one group of their own, only the PCA views visible
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("eoembed — rcf").children()[0]
    assert group.name().endswith("3 grids")
    visible = sorted(n.layer().name() for n in group.findLayers() if n.isVisible())
    assert visible == ["a — PCA-RGB", "a_2 — PCA-RGB", "a_3 — PCA-RGB"]
    assert len(group.findLayers()) == 6


def test_pooled_layer_keeps_the_features_attributes(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    pts = [_tile_point(r, fx, 0.5, "EPSG:4326") for fx in (0.3, 0.7)]
    layer = memory_layer("Point", "EPSG:4326", [f"POINT({p.x()} {p.y()})" for p in pts], names=["north", "south"])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path, id_field="")
    (out,) = task.layers
    feats = {f["id"]: f for f in out.getFeatures()}
    src = {str(f.id()): f["name"] for f in layer.getFeatures()}
    assert {k: f["name"] for k, f in feats.items()} == src
    assert "e0" in out.fields().names()
    assert layer.selectedFeatureCount() == 2  # the user's selection is left as it was


def test_extent_grid_has_nodata_outside_the_imagery(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    crs = r.crs().authid()
    e = r.extent()
    inside = _tile_point(r, 0.9, 0.5, crs)
    outside = (e.xMaximum() + 1500.0, inside.y())  # 1.5 km east of the tile: no imagery there
    layer = memory_layer("Point", crs, [f"POINT({inside.x()} {inside.y()})", f"POINT({outside[0]} {outside[1]})"])
    QgsProject.instance().addMapLayer(layer)
    for other in project_rasters[1:]:
        QgsProject.instance().removeMapLayer(other.id())
    task = _run(plugin, layer, tmp_path, output="grid_extent")
    grid = task.result["grids"][0]
    values, gt, _ = read_raster(grid["path"])
    xs = gt[0] + (np.arange(values.shape[2]) + 0.5) * gt[1]
    east = xs > e.xMaximum()
    assert east.any() and (~east).any()
    assert np.isnan(values[:, :, east]).all()  # nodata, not fill-value embeddings
    assert np.isfinite(values[:, :, ~east]).all()
    pca, _, _ = read_raster(grid["pca_path"])
    assert (np.nan_to_num(pca[:, :, east]) == 0).all()


def test_offline_missing_weights_fail_in_seconds_naming_the_file(plugin, project_rasters, tmp_path, monkeypatch):
    from eoembed_qgis import settings

    monkeypatch.setattr(settings, "worker_extra_env", lambda: {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    r = project_rasters[0]
    pts = [_tile_point(r, fx, 0.5, "EPSG:4326") for fx in (0.2, 0.4, 0.6, 0.8, 0.9)]
    layer = memory_layer("Point", "EPSG:4326", [f"POINT({p.x()} {p.y()})" for p in pts])
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    t0 = time.monotonic()
    task = plugin.start_job(layer, {**OPTIONS, "model": "remoteclip-vit-b-32", "model_config": {},
                                    "out_dir": str(tmp_path)}, confirm=False)
    wait_for(task, 120)
    took = time.monotonic() - t0
    assert task.outcome == "failed"
    msg = str(task.error)
    assert "RemoteCLIP-ViT-B-32.pt" in msg and "offline" in msg and "Local weights" in msg
    assert took < 60, took  # once per job, not a hub back-off per feature


def test_nothing_starts_the_engine_on_enable_or_when_the_dialog_opens(qgis_iface, clean_settings,
                                                                      qgis_new_project, monkeypatch):
    from eoembed_qgis import dialog, model_cache, runner
    from eoembed_qgis.plugin import EoembedPlugin
    from qgis.PyQt.QtWidgets import QDialog

    started: list[list[str]] = []
    real = subprocess.Popen

    def spy(args, *a, **kw):
        started.append(list(args))
        return real(args, *a, **kw)

    monkeypatch.setattr(runner.subprocess, "Popen", spy)
    monkeypatch.setattr(model_cache, "refresh_in_background", lambda *a, **kw: started.append(["background"]))
    monkeypatch.setattr(dialog.EmbedDialog, "exec", lambda self: QDialog.Rejected)
    model_cache.cache_path().unlink(missing_ok=True)  # a first start: nothing cached yet
    p = EoembedPlugin(qgis_iface)
    p.initGui()
    layer = memory_layer("Point", "EPSG:4326", ["POINT(10 50)"])
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    layer.selectAll()
    p.action.trigger()
    p.unload()
    assert started == [["background"]]  # only the queued background refresh, no process on this thread


def test_model_list_folds_aliases_and_shows_weights_state(qgis_new_project, clean_settings, tmp_path, monkeypatch):
    from eoembed_qgis import settings
    from eoembed_qgis.dialog import EmbedDialog, model_cards

    monkeypatch.setattr(settings, "worker_extra_env", lambda: {"HF_HOME": str(tmp_path / "hf")})
    cards = model_cards(refresh=True)
    assert "galileo" not in cards and "galileo-nano" in cards  # aliases are not entries of their own
    assert "galileo" in cards["galileo-nano"]["aliases"]
    assert cards["rcf"]["weights_state"]["state"] == "ready"
    assert cards["remoteclip-vit-b-32"]["weights_state"]["state"] == "download"
    products = [m for m, c in cards.items() if c.get("precomputed")]
    assert "alphaearth" in products  # issue #14's products: ready, with no weights to fetch
    assert all(cards[m]["weights_state"]["state"] == "ready" for m in products)
    layer = memory_layer("Point", "EPSG:4326", ["POINT(10 50)"])
    dlg = EmbedDialog(layer, cards=cards)
    texts = [dlg.model_combo.itemText(i) for i in range(dlg.model_combo.count())]
    assert "rcf — ready" in texts and "remoteclip-vit-b-32 — needs download" in texts
    assert "alphaearth — ready" in texts
    assert len(texts) == len(cards)
    settings.put("weights_paths", f"remoteclip-vit-b-32 = {tmp_path}")
    dlg = EmbedDialog(layer, cards=cards)
    texts = [dlg.model_combo.itemText(i) for i in range(dlg.model_combo.count())]
    assert "remoteclip-vit-b-32 — ready (local weights)" in texts
    assert settings.weights_for("RemoteCLIP-ViT-B-32") == str(tmp_path)


def test_local_weights_set_per_model_run_offline(plugin, project_rasters, tmp_path, monkeypatch):
    from conftest import SHARED, engine_run
    from eoembed_qgis import settings

    weights = (SHARED / "weights" / "galileo_nano").resolve()
    if not weights.is_dir():
        pytest.skip("../shared/weights is absent")
    settings.put("weights_paths", f"galileo-nano = {weights}")
    monkeypatch.setattr(settings, "worker_extra_env", lambda: {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    r = project_rasters[0]
    p = _tile_point(r, 0.4, 0.5, r.crs().authid())
    layer = memory_layer("Point", r.crs().authid(), [f"POINT({p.x()} {p.y()})"], names=["g"])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path, model="galileo-nano", model_config={})
    (out,) = task.layers
    (feat,) = list(out.getFeatures())
    got = np.array([feat[f"e{i}"] for i in range(task.result["dim"])])
    ref = engine_run("""
        import eoembed
        e = eoembed.get_embedding("galileo-nano", eoembed.PointBuffer(ARGS["x"], ARGS["y"], 160.0, crs=ARGS["crs"]),
                                  source=ARGS["tile"], weights=ARGS["w"])
        print(json.dumps(e.to_numpy().tolist()))
    """, x=p.x(), y=p.y(), crs=r.crs().authid(), tile=r.source(), w=str(weights))
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-4, atol=1e-5)
