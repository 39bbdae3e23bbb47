"""Cancel mid-run and engine failures: no orphan worker, no layer, no partial files, one message."""

from __future__ import annotations

import time

from conftest import memory_layer, process_alive, wait_for
from qgis.core import Qgis, QgsApplication, QgsProject

OPTIONS = {"model": "rcf", "output": "pooled", "time_mode": "all", "source": "project", "buffer_m": 160.0,
           "device": "cpu", "model_config": {"features": 8}}


def _layer_count() -> int:
    return len(QgsProject.instance().mapLayers())


def test_cancel_mid_run_kills_worker_and_leaves_nothing(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    e, crs = r.extent(), r.crs().authid()
    # 400 buffered points: far more work than the test waits for
    wkts = [f"POINT({e.xMinimum() + 200 + (i % 20) * 90} {e.yMinimum() + 200 + (i // 20) * 90})" for i in range(400)]
    layer = memory_layer("Point", crs, wkts)
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    before = _layer_count()
    task = plugin.start_job(layer, {**OPTIONS, "out_dir": str(tmp_path)}, confirm=False)
    t0 = time.monotonic()
    while not (task.progress() > 0 and task.worker_pid):  # the worker is embedding chunks
        QgsApplication.processEvents()
        time.sleep(0.05)
        assert time.monotonic() - t0 < 60, "the worker never reported progress"
    pid = task.worker_pid
    assert process_alive(pid)
    assert task.progress() < 100
    assert any(p.name.endswith(".part") for p in tmp_path.iterdir())  # it was writing into staging
    task.cancel()
    took = wait_for(task, 10)
    assert took < 2.0, f"cancel took {took:.2f} s"
    assert task.outcome == "canceled" and task.canceled
    assert not process_alive(pid)
    assert _layer_count() == before
    # no partial outputs, no staging folder: only the engine's hidden resume folder
    assert [p.name for p in tmp_path.iterdir()] == [".eoembed-resume"]
    assert task not in plugin.tasks


def test_an_interrupted_job_resumes_instead_of_starting_over(plugin, project_rasters, tmp_path, monkeypatch):
    monkeypatch.setenv("EOEMBED_WORKER_CHUNK", "3")  # small chunks: some finish before the cancel
    r = project_rasters[0]
    e, crs = r.extent(), r.crs().authid()
    wkts = [f"POINT({e.xMinimum() + 300 + i * 150} {e.yMinimum() + 600})" for i in range(12)]
    layer = memory_layer("Point", crs, wkts)
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    options = {**OPTIONS, "out_dir": str(tmp_path), "name": "resumable"}
    task = plugin.start_job(layer, options, confirm=False)
    t0 = time.monotonic()
    while task.outcome is None and task.progress() < 25:  # at least one chunk of 3 of 12 is done
        QgsApplication.processEvents()
        time.sleep(0.02)
        assert time.monotonic() - t0 < 120
    if task.outcome is None:
        task.cancel()
    wait_for(task, 30)
    assert task.outcome == "canceled"
    again = plugin.start_job(layer, options, confirm=False)
    wait_for(again, 120)
    assert again.outcome == "done", again.error
    assert again.result["resumed"] >= 3  # the chunks done before the cancel were not computed again
    out = next(lyr for lyr in again.layers)
    assert out.featureCount() == 12
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # resume folder gone


def test_place_outside_the_imagery_surfaces_as_one_message_and_a_log(plugin, qgis_iface, project_rasters, tmp_path):
    logged: list[tuple[str, str, int]] = []

    def grab(msg, tag, level):
        logged.append((msg, tag, level))

    QgsApplication.messageLog().messageReceived.connect(grab)
    layer = memory_layer("Point", "EPSG:4326", ["POINT(0.5 0.5)"])  # Gulf of Guinea: no tile there
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    before = _layer_count()
    task = plugin.start_job(layer, {**OPTIONS, "out_dir": str(tmp_path)}, confirm=False)
    wait_for(task, 60)
    QgsApplication.messageLog().messageReceived.disconnect(grab)
    assert task.outcome == "failed" and task.error is not None
    (msg,) = qgis_iface.messageBar().get_messages(Qgis.Critical)
    text = msg.split(":", 1)[1]
    assert "no local imagery covers the place" in text
    assert "\n" not in text and "Traceback" not in text
    assert any(tag == "eoembed" and level == Qgis.Critical and "no local imagery covers" in m
               for m, tag, level in logged)
    assert _layer_count() == before
    assert list(tmp_path.iterdir()) == []


def test_partial_failure_adds_the_rest_and_warns(plugin, qgis_iface, project_rasters, tmp_path):
    r = project_rasters[0]
    c = r.extent().center()
    crs = r.crs().authid()
    layer = memory_layer("Point", crs, [f"POINT({c.x()} {c.y()})", f"POINT({c.x() + 300000} {c.y()})"],
                         names=["in", "out"])
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    task = plugin.start_job(layer, {**OPTIONS, "out_dir": str(tmp_path), "id_field": "name"}, confirm=False)
    wait_for(task, 60)
    (out,) = task.layers
    assert [f["id"] for f in out.getFeatures()] == ["in"]
    (warn,) = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert "embedded 1 of 2 features (1 failed, e.g. out:" in warn


def test_worker_crash_becomes_a_message(plugin, qgis_iface, project_rasters, tmp_path, monkeypatch):
    from eoembed_qgis import runner

    layer = memory_layer("Point", project_rasters[0].crs().authid(), ["POINT(550000 6343000)"])
    QgsProject.instance().addMapLayer(layer)
    layer.selectAll()
    crasher = tmp_path / "crash.py"
    crasher.write_text("import os, sys\nsys.stderr.write('segfault in the engine\\n')\nos._exit(139)\n")
    monkeypatch.setattr(runner, "WORKER", crasher)
    out = tmp_path / "out"
    task = plugin.start_job(layer, {**OPTIONS, "out_dir": str(out)}, confirm=False)
    wait_for(task, 30)
    (msg,) = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert "exited with code 139" in msg and "segfault in the engine" in msg
    assert "segfault in the engine" in task.error.details


def test_missing_engine_python_says_how_to_fix(plugin, qgis_iface, qgis_new_project, tmp_path):
    from eoembed_qgis import settings

    settings.put("engine_python", str(tmp_path / "no" / "python"))
    layer = memory_layer("Point", "EPSG:4326", ["POINT(10 50)"])
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    layer.selectAll()
    plugin.run()
    (msg,) = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert "Set up the engine" in msg and "Settings ▸ Options ▸ eoembed" in msg
    ok, report = settings.diagnostics()
    assert not ok and "does not exist" in report


def test_diagnostics_report_versions_and_paths(clean_settings):
    from eoembed_qgis import settings

    ok, report = settings.diagnostics()
    assert ok, report
    assert "eoembed 0." in report and "torch" in report and "rasterio" in report


def test_worker_environment_drops_qgis_proj_and_python_paths(monkeypatch):
    from eoembed_qgis.runner import worker_env

    for k in ("PROJ_DATA", "PROJ_LIB", "GDAL_DATA", "PYTHONPATH", "PYTHONHOME"):
        monkeypatch.setenv(k, "/usr/share/" + k.lower())
    env = worker_env({"HF_HOME": "/tmp/hf", "EMPTY": ""})
    assert not {"PROJ_DATA", "PROJ_LIB", "GDAL_DATA", "PYTHONPATH", "PYTHONHOME"} & set(env)
    assert env["HF_HOME"] == "/tmp/hf" and "EMPTY" not in env and env["PYTHONUNBUFFERED"] == "1"
