"""The Processing algorithms from the command line: ``qgis_process`` gives what processing.run gives.

The plugin is linked into a fresh profile (HOME is a temporary folder), enabled with
``qgis_process plugins enable``, and run with the model given by its id.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ENGINE_PYTHON, REPO, TILES, engine_run, read_raster, write_tif
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")  # Debian's wrapper adds a bad flag
pytestmark = pytest.mark.skipif(QGIS_PROCESS is None, reason="qgis_process is not installed")


@pytest.fixture(scope="module")
def qgis_process(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    plugins = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "eoembed_qgis").symlink_to(REPO / "qgis_plugin" / "eoembed_qgis")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "QGIS_PREFIX_PATH")}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", EOEMBED_PYTHON=ENGINE_PYTHON)

    def run(*args: str) -> dict:
        proc = subprocess.run([QGIS_PROCESS, *args], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return json.loads(proc.stdout) if "--json" in args else {}

    run("plugins", "enable", "eoembed_qgis")
    return run


@pytest.fixture(scope="module")
def processing_alg(qgis_app, qgis_processing):
    """The processing module with the eoembed provider registered (in this process)."""
    import processing
    from eoembed_qgis.processing import EoembedProvider
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    provider = None
    if registry.providerById("eoembed") is None:
        provider = EoembedProvider()
        registry.addProvider(provider)
    yield processing
    if provider is not None:
        registry.removeProvider(provider)


def test_cluster_embeddings_through_qgis_process_matches_processing_run(qgis_process, processing_alg, tmp_path):
    values = np.random.default_rng(3).normal(size=(6, 12, 10)).astype(np.float32)
    values[:, :6] += 3.0
    grid = write_tif(tmp_path / "grid.tif", values, "EPSG:32632", (550000.0, 40.0, 0.0, 6343000.0, 0.0, -40.0),
                     nodata=float("nan"))
    out = qgis_process("run", "eoembed:clusterembeddings", "--json", "--", f"INPUT={grid}", "K=3", "SEED=2",
                       f"OUTPUT={tmp_path / 'cli.tif'}")
    assert out["results"]["OUTPUT"] == str(tmp_path / "cli.tif")
    processing_alg.run("eoembed:clusterembeddings", {"INPUT": str(grid), "K": 3, "SEED": 2,
                                                     "OUTPUT": str(tmp_path / "run.tif")})
    cli, gt, crs = read_raster(tmp_path / "cli.tif")
    ref, gt_ref, _ = read_raster(tmp_path / "run.tif")
    np.testing.assert_array_equal(cli, ref)
    assert gt == gt_ref and crs == "EPSG:32632" and set(np.unique(cli)) == {0.0, 1.0, 2.0}


def test_embed_features_through_qgis_process_with_a_model_id(qgis_process, tmp_path):
    tile = TILES / "637U_59R_1_3.tif"
    if not tile.is_file():
        pytest.skip("../shared/data is absent")
    _, gt, _ = read_raster(tile)
    x, y = gt[0] + 600.0, gt[3] - 700.0
    layer = QgsVectorLayer("Point?crs=EPSG:32632&field=name:string", "pts", "memory")
    f = QgsFeature(layer.fields())
    f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
    f["name"] = "p0"
    layer.dataProvider().addFeatures([f])
    src = tmp_path / "pts.gpkg"
    opts = QgsVectorFileWriter.SaveVectorOptions()
    opts.driverName, opts.fileEncoding = "GPKG", "utf-8"
    err = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(src), QgsProject.instance().transformContext(), opts)
    assert err[0] == QgsVectorFileWriter.WriterError.NoError, err
    out = tmp_path / "embedded.gpkg"
    qgis_process("run", "eoembed:embedfeatures", "--json", "--", f"INPUT={src}", "MODEL=rcf", "BUFFER=160",
                 f"IMAGERY={tile}", "DEVICE=0", f"OUTPUT={out}")
    result = QgsVectorLayer(str(out), "out", "ogr")
    (feat,) = list(result.getFeatures())
    assert feat["name"] == "p0"
    got = np.array([feat[f"e{i}"] for i in range(512)])
    ref = engine_run("""
        import eoembed
        e = eoembed.get_embedding("rcf", eoembed.PointBuffer(ARGS["x"], ARGS["y"], 160.0, crs="EPSG:32632"),
                                  source=ARGS["tile"])
        print(json.dumps(e.to_numpy().tolist()))
    """, x=x, y=y, tile=str(tile))
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-5, atol=1e-6)
