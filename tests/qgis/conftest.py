"""Fixtures for the plugin tests (real QGIS, headless): imagery, project layers, the plugin.

These tests run in QGIS's own Python (the system's, with only pytest added: ``.venv-qgis``),
where eoembed, torch, xarray and pyarrow are NOT importable, exactly as in a user's QGIS. The
engine is reached only through the worker Python ($EOEMBED_PYTHON, default the repo's .venv);
reference numbers from the engine come from :func:`engine_run` in that Python too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from osgeo import gdal

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
TILES = SHARED / "data" / "s2_l2a_tiles"
sys.path.insert(0, str(REPO / "qgis_plugin"))
ENGINE_PYTHON = os.environ.setdefault("EOEMBED_PYTHON", str(REPO / ".venv" / "bin" / "python"))
#: modules that must never be loaded into QGIS's process by the plugin
FORBIDDEN = ("eoembed", "torch", "xarray", "pyarrow", "rasterio", "shapely", "pyogrio")
gdal.UseExceptions()


def engine_run(code: str, **args: Any) -> Any:
    """Run `code` in the engine's Python (``ARGS`` holds `args`) and return what it prints as JSON.

    The references the tests compare with come from the engine in its own process, never from
    QGIS's.
    """
    from eoembed_qgis.runner import worker_env

    script = "import json, sys\nARGS = json.loads(sys.argv[1])\n" + textwrap.dedent(code)
    proc = subprocess.run([ENGINE_PYTHON, "-c", script, json.dumps(args, default=str)], capture_output=True,
                          text=True, env=worker_env({"OMP_NUM_THREADS": "1"}), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_raster(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], str]:
    """(values (B, H, W) float64 with nodata as NaN, GDAL geotransform, 'EPSG:xxxx') via GDAL."""
    from osgeo import osr

    ds = gdal.Open(str(path))
    values = ds.ReadAsArray().astype(np.float64)
    values = values.reshape(ds.RasterCount, ds.RasterYSize, ds.RasterXSize)
    for i in range(ds.RasterCount):
        nd = ds.GetRasterBand(i + 1).GetNoDataValue()
        if nd is not None and np.isfinite(nd):
            values[i][values[i] == nd] = np.nan
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    srs.AutoIdentifyEPSG()
    return values, tuple(ds.GetGeoTransform()), f"EPSG:{srs.GetAuthorityCode(None)}"


@pytest.fixture(autouse=True)
def _engine_stays_out_of_qgis():
    """Fail any test after which an engine-side module is loaded in QGIS's process."""
    yield
    loaded = sorted(m for m in FORBIDDEN if m in sys.modules)
    assert not loaded, f"{', '.join(loaded)} imported into QGIS's Python"

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
    QgsVectorLayer,
)

#: two real tiles in different UTM zones (agriculture 32632, mixed 32718)
TILE_NAMES = ("637U_59R_1_3", "433D_629L_3_1")


def _demo_tile(path: Path, crs: str, left: float, top: float, seed: int) -> Path:
    """A 12-band int16 S2-like stack (224×224 at 10 m) with smooth structure, for when ../shared is absent."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224] / 224.0
    bands = []
    for b in range(12):
        field = 1500 + 800 * np.sin(6 * xx + b) * np.cos(4 * yy - b) + rng.normal(0, 50, (224, 224))
        bands.append(field)
    data = np.clip(np.stack(bands), 1, 10000).astype(np.int16)
    write_tif(path, data, crs, (left, 10.0, 0.0, top, 0.0, -10.0))
    return path


def write_tif(path: Path, data: np.ndarray, crs: str, geotransform: tuple[float, ...],
              nodata: float | None = None, descriptions: list[str] | None = None,
              metadata: dict[str, str] | None = None) -> Path:
    """A GeoTIFF of ``(B, H, W)`` `data` written with GDAL."""
    from osgeo import osr

    types = {np.dtype("int16"): gdal.GDT_Int16, np.dtype("uint16"): gdal.GDT_UInt16,
             np.dtype("float32"): gdal.GDT_Float32, np.dtype("uint8"): gdal.GDT_Byte}
    b, h, w = data.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, b, types[data.dtype])
    ds.SetGeoTransform(geotransform)
    srs = osr.SpatialReference()
    srs.SetFromUserInput(crs)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(b):
        band = ds.GetRasterBand(i + 1)
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if descriptions:
            band.SetDescription(descriptions[i])
        band.WriteArray(data[i])
    for k, v in (metadata or {}).items():
        ds.SetMetadataItem(k, v)
    ds = None
    return path


@pytest.fixture(scope="session")
def tile_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real S2 L2A tiles from ../shared when present, else generated demo stacks.

    EOEMBED_TEST_DEMO=1 forces the demo stacks (to test the fallback where ../shared exists).
    """
    real = [TILES / f"{n}.tif" for n in TILE_NAMES]
    if all(p.is_file() for p in real) and not os.environ.get("EOEMBED_TEST_DEMO"):
        return real
    d = tmp_path_factory.mktemp("demo_tiles")
    return [_demo_tile(d / "demo_32632.tif", "EPSG:32632", 549890.0, 6344080.0, 0),
            _demo_tile(d / "demo_32718.tif", "EPSG:32718", 717730.0, 5700090.0, 1)]


@pytest.fixture
def project_rasters(tile_paths: list[Path], qgis_new_project: QgsProject) -> list[QgsRasterLayer]:
    """The tiles as raster layers of a fresh project."""
    layers = []
    for p in tile_paths:
        lyr = QgsRasterLayer(str(p), p.stem, "gdal")
        assert lyr.isValid(), p
        QgsProject.instance().addMapLayer(lyr)
        layers.append(lyr)
    return layers


def memory_layer(kind: str, crs: str, wkts: list[str], name: str = "sites",
                 names: list[str] | None = None) -> QgsVectorLayer:
    """A memory layer of `kind` ('Point', 'Polygon', 'LineString') with a 'name' field."""
    layer = QgsVectorLayer(f"{kind}?crs={crs}&field=name:string", name, "memory")
    feats = []
    for i, wkt in enumerate(wkts):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        f["name"] = (names or [f"site{i}" for i in range(len(wkts))])[i]
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    layer.updateExtents()
    return layer


def wait_for(task: Any, timeout: float = 60.0) -> float:
    """Process events until the EmbedTask's finished() ran; returns the seconds it took.

    QGIS deletes a task after finished(), so tests read its Python attributes (outcome, error,
    layers), never its C++ methods, afterwards.
    """
    t0 = time.monotonic()
    while task.outcome is None:
        QgsApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"task still running after {timeout} s")
    took = time.monotonic() - t0
    QgsApplication.processEvents()
    return took


@pytest.fixture
def clean_settings() -> None:
    """Forget the plugin's settings before and after a test."""
    QgsSettings().remove("eoembed")
    yield
    QgsSettings().remove("eoembed")


@pytest.fixture
def plugin(qgis_iface, clean_settings):
    """The plugin, initialised against pytest-qgis's iface."""
    from eoembed_qgis.plugin import EoembedPlugin

    qgis_iface.messageBar().clear_messages()
    p = EoembedPlugin(qgis_iface)
    p.initGui()
    yield p
    p.unload()


def process_alive(pid: int) -> bool:
    """True when `pid` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# QGIS 3.22's Python bindings can corrupt the heap while the interpreter tears down after the
# last test ("corrupted size vs. prev_size", SIGABRT), turning a green run red. Once pytest has
# reported, leave the process directly with pytest's own exit status.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
