"""A new user's path: the ZIP installed into a fresh profile, *Set up the engine* for real, a job.

``scripts/package_plugin`` builds the ZIP (plugin + engine wheel built from engine/); it is
unpacked into a fresh profile's plugin folder and a fresh QGIS process (QGIS's own Python, no
eoembed) imports the plugin from there, runs the set-up task (a venv from the system Python in
the profile folder, the ZIP's wheel, dependencies from a local folder of wheels so the test is
offline), and embeds two selected features with the engine it made.

The folder of wheels is ``.venv-qgis/wheelhouse`` (made by ``scripts/setup.sh --qgis``) or
$EOEMBED_WHEELHOUSE. This test takes about two minutes: most of it is pip unpacking PyTorch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ENGINE_PYTHON, REPO, TILES

WHEELHOUSE = Path(os.environ.get("EOEMBED_WHEELHOUSE", REPO / ".venv-qgis" / "wheelhouse"))

SCRIPT = r'''
import json, sys, time
from pathlib import Path
from qgis.PyQt.QtCore import QCoreApplication, QSettings
profile, plugins, wheelhouse, tile = (Path(a) for a in sys.argv[1:5])
QCoreApplication.setOrganizationName("QGIS")
QCoreApplication.setApplicationName("QGIS3")
QSettings.setDefaultFormat(QSettings.IniFormat)
QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(profile))
from qgis.core import QgsApplication, QgsProject, QgsVectorLayer, QgsFeature, QgsGeometry, QgsRasterLayer
app = QgsApplication([], False, str(profile))
app.initQgis()
sys.path.insert(0, str(plugins))
import eoembed_qgis
from eoembed_qgis import engine_env, settings
from eoembed_qgis.engine_setup import start_setup
out = {"plugin": eoembed_qgis.__file__, "wheel": str(engine_env.bundled_wheel()),
       "python_before": settings.engine_python()}
base = engine_env.find_base_python()
t0 = time.monotonic()
task = start_setup(base, engine_env.bundled_wheel(), find_links=str(wheelhouse))
while task.outcome is None:
    app.processEvents(); time.sleep(0.05)
out.update(setup=task.outcome, setup_s=time.monotonic() - t0, base=base,
           error=str(task.error) if task.error else None, python=settings.engine_python(),
           log_tail=task.lines[-5:])
if task.outcome == "done":
    ok, report = settings.diagnostics()
    out.update(diag_ok=ok, report=report)
    raster = QgsRasterLayer(str(tile), "tile", "gdal")
    QgsProject.instance().addMapLayer(raster)
    layer = QgsVectorLayer(f"Point?crs={raster.crs().authid()}&field=name:string", "sites", "memory")
    e = raster.extent()
    feats = []
    for i, fx in enumerate((0.3, 0.6, 0.8)):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(f"POINT({e.xMinimum() + fx * e.width()} {e.center().y()})"))
        f["name"] = f"s{i}"
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(layer)
    layer.selectByIds([f.id() for f in layer.getFeatures() if f["name"] != "s2"])
    from eoembed_qgis.job import build_job
    from eoembed_qgis.task import EmbedTask
    job = build_job(layer, {"model": "rcf", "model_config": {"features": 8}, "source": "project",
                            "buffer_m": 160.0, "id_field": "name", "out_dir": str(profile / "out")})
    job.pop("left_out")
    etask = EmbedTask(job, None, settings.engine_python(), settings.worker_extra_env())
    QgsApplication.taskManager().addTask(etask)
    while etask.outcome is None:
        app.processEvents(); time.sleep(0.05)
    out.update(embed=etask.outcome, embed_error=str(etask.error) if etask.error else None,
               pooled=[[f["id"]] + [f[f"e{i}"] for i in range(8)] for f in etask.layers[0].getFeatures()]
               if etask.layers else [])
print("RESULT " + json.dumps(out, default=str))
sys.stdout.flush()
import os
os._exit(0)
'''


@pytest.mark.skipif(not WHEELHOUSE.is_dir(), reason="no local folder of wheels (scripts/setup.sh --qgis makes it)")
def test_zip_install_then_engine_setup_then_embed(tmp_path: Path) -> None:
    tile = TILES / "637U_59R_1_3.tif"
    if not tile.is_file():
        pytest.skip("../shared/data is absent")
    build = subprocess.run(["bash", str(REPO / "scripts" / "package_plugin"), str(tmp_path / "dist")],
                           capture_output=True, text=True, env={**os.environ, "EOEMBED_BUILD_PYTHON": ENGINE_PYTHON},
                           timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    zip_path = Path(build.stdout.strip().splitlines()[-1])
    assert zip_path.name == "eoembed_qgis-0.1.0.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert "eoembed_qgis/metadata.txt" in names and "eoembed_qgis/wheels/eoembed-0.1.0-py3-none-any.whl" in names
        assert not any("__pycache__" in n for n in names)
        profile = tmp_path / "profiles" / "default"
        plugins = profile / "python" / "plugins"
        zf.extractall(plugins)
    env = {k: v for k, v in os.environ.items() if k not in ("EOEMBED_PYTHON", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(profile), str(plugins), str(WHEELHOUSE), str(tile)],
                          capture_output=True, text=True, env=env, timeout=900)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    print(f"first set-up took {out['setup_s']:.0f} s")
    # the plugin came from the unpacked ZIP, and before set-up there was no engine at all
    assert out["plugin"].startswith(str(plugins)) and out["wheel"].startswith(str(plugins))
    assert out["python_before"] == ""
    assert out["setup"] == "done", f"{out['error']}\n{out['log_tail']}"
    managed = profile / "eoembed" / "engine" / "bin" / "python"
    assert out["python"] == str(managed) and Path(out["base"]).name.startswith("python")
    # the worker really imports the engine from the managed venv (the ZIP's wheel, not a checkout)
    assert out["diag_ok"], out["report"]
    eo_line = next(ln for ln in out["report"].splitlines() if ln.strip().startswith("eoembed "))
    assert str(profile / "eoembed" / "engine") in eo_line
    direct = subprocess.run([str(managed), "-c", "import importlib.metadata as m; "
                             "print(m.version('eoembed'), m.distribution('eoembed').read_text('INSTALLER'))"],
                            capture_output=True, text=True)
    assert direct.stdout.split() == ["0.1.0", "pip"], direct.stderr
    # the two selected features were embedded end to end with that engine
    assert out["embed"] == "done", out["embed_error"]
    got = {row[0]: row[1:] for row in out["pooled"]}
    assert sorted(got) == ["s0", "s1"]
    assert all(len(v) == 8 and any(x != 0 for x in v) for v in got.values()) and got["s0"] != got["s1"]
