"""The range reader of remote COGs against GDAL: the same pixels and validity for every layout
it decodes (DEFLATE with and without predictor, BigTIFF, big-endian, multi-band, nodata, sparse
tiles, windows over the edge), GDAL's turn for the layouts it does not, and what it costs in
requests — all over real HTTP from the test server in its own process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from eoembed.grid import GridSpec
from eoembed.providers.cog_reader import CogReader, http_range_getter
from eoembed.providers.raster_io import read_to_grid
from eoembed.providers.transient import RemoteFailure, classify
from rasterio.enums import Resampling
from stac_fixture import StacServer

X0, Y0, RES = 600_000.0, 5_000_040.0, 10.0
CRS = "EPSG:32633"

LAYOUTS = {
    "deflate_i2": dict(dtype="int16", compress="deflate", nodata=0),
    "predictor_u2": dict(dtype="uint16", compress="deflate", predictor=2, nodata=0),
    "predictor_u1": dict(dtype="uint8", compress="deflate", predictor=2, nodata=None),
    "plain_f4_nan": dict(dtype="float32", compress=None, nodata=float("nan")),
    "bigtiff_i4": dict(dtype="int32", compress="deflate", BIGTIFF="YES", nodata=-9999),
    "bigendian_u2": dict(dtype="uint16", compress="deflate", ENDIANNESS="BIG", nodata=0, driver="GTiff", tiled=True),
    "three_bands": dict(dtype="uint16", compress="deflate", count=3, interleave="pixel", nodata=0),
    "sparse": dict(dtype="uint16", compress="deflate", nodata=0, sparse=True),
}
REFUSED = {
    "lzw": dict(dtype="uint16", compress="lzw", nodata=0),
    "striped": dict(dtype="uint16", compress="deflate", nodata=0, driver="GTiff", tiled=False),
}


def _write(path, size=(150, 170), count=1, dtype="uint16", nodata=0, sparse=False, driver="COG", **opts):
    rng = np.random.default_rng(len(path.name))
    h, w = size
    if np.dtype(dtype).kind == "f":
        arr = rng.normal(1000, 300, (count, h, w)).astype(dtype)
        arr[:, 5:9, 7:30] = np.nan
    else:
        hi = min(np.iinfo(dtype).max, 12000)
        arr = rng.integers(1, hi, (count, h, w)).astype(dtype)
        if nodata is not None:
            arr[:, 5:9, 7:30] = nodata  # a nodata patch
        arr[:, 40:44, 50:60] = 0
    if sparse:
        arr[:, :64, :128] = nodata  # whole blocks of nodata: not written at all
        opts["SPARSE_OK"] = "TRUE"
    profile = dict(driver=driver, width=w, height=h, count=count, dtype=dtype, crs=CRS,
                   transform=Affine(RES, 0, X0, 0, -RES, Y0), nodata=nodata, **opts)
    if driver == "COG":
        profile["blocksize"] = 64
    else:
        profile.update({"blockxsize": 64, "blockysize": 64} if opts.get("tiled") else {})
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogs")
    (root / "catalog.json").write_text(json.dumps({"collections": [], "items": []}))
    (root / "data").mkdir()
    for name, opts in {**LAYOUTS, **REFUSED}.items():
        _write(root / "data" / f"{name}.tif", **opts)
    (root / "data" / "not_a_tiff.tif").write_bytes(b"<html>gone</html>" * 100)
    server = StacServer(root, name="cogs")
    yield server, root
    server.stop()


@pytest.fixture
def reader(served):
    """A fresh range reader (empty caches) over the served COGs, and the server's base URL."""
    server, _ = served
    get, close = http_range_getter(5.0)
    yield CogReader(get), server.base
    close()


def _grid(col: int, row: int, w: int = 40, h: int = 30) -> GridSpec:
    return GridSpec(CRS, Affine(RES, 0, X0 + col * RES, 0, -RES, Y0 - row * RES), w, h)


WINDOWS = [(10, 20), (60, 60), (0, 0), (140, 130), (-15, -10), (160, 5), (500, 500), (45, 38),
           (64, 64, 64, 20), (70, 66, 20, 10), (10, 20)]  # whole tile rows, inside one tile, a repeat


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_same_pixels_and_validity_as_gdal(served, reader, name) -> None:
    rd, base = reader
    href = f"{base}/data/{name}.tif"
    with rasterio.open(served[1] / "data" / f"{name}.tif") as src:
        for col, row, *size in WINDOWS:
            grid = _grid(col, row, *size)
            got = rd.read(href, href, grid, 0.0)
            assert got is not None, name
            want = read_to_grid(src, list(range(1, src.count + 1)), grid, Resampling.bilinear, 0.0)
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{name} at {col},{row}")
            np.testing.assert_array_equal(got[1], want[1], err_msg=f"{name} at {col},{row}")
            assert got[0].dtype == np.float32 and got[1].dtype == bool


def test_tiles_are_fetched_once_and_shared_and_the_header_once(reader) -> None:
    rd, base = reader
    href = f"{base}/data/deflate_i2.tif"
    rd.read(href, href, _grid(10, 10, 100, 40), 0.0)  # 2 tile rows × 2 tile columns
    first = rd.requests
    assert first <= 1 + 2  # the header, then each row of adjacent tiles in one request
    assert rd.read(href, href, _grid(20, 15), 0.0) is not None  # inside what was read
    assert rd.read_cached(href, _grid(30, 12), 0.0) is not None
    assert rd.requests == first  # no request: every tile was already here
    assert rd.read_cached(href, _grid(130, 100), 0.0) is None  # tiles not read yet


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_layouts_it_does_not_decode_are_left_to_gdal(reader, name) -> None:
    rd, base = reader
    href = f"{base}/data/{name}.tif"
    assert rd.read(href, href, _grid(0, 0), 0.0) is None


def test_a_grid_off_the_lattice_or_in_another_crs_is_left_to_gdal(reader) -> None:
    rd, base = reader
    href = f"{base}/data/deflate_i2.tif"
    half = GridSpec(CRS, Affine(RES, 0, X0 + 5, 0, -RES, Y0), 20, 20)  # half a pixel off
    coarse = GridSpec(CRS, Affine(20, 0, X0, 0, -20, Y0), 20, 20)
    other = GridSpec("EPSG:32632", Affine(RES, 0, X0, 0, -RES, Y0), 20, 20)
    assert rd.read(href, href, half, 0.0) is None
    assert rd.read(href, href, coarse, 0.0) is None
    assert rd.read(href, href, other, 0.0) is None


def test_failures_are_classified_and_never_kept(served, reader) -> None:
    server, _ = served
    rd, base = reader
    with pytest.raises(RemoteFailure) as info:
        rd.read(f"{base}/data/missing.tif", f"{base}/data/missing.tif", _grid(0, 0), 0.0)
    f = classify(info.value)
    assert (f.status, f.transient) == (404, False)
    bad = f"{base}/data/not_a_tiff.tif"
    with pytest.raises(RemoteFailure) as info:
        rd.read(bad, bad, _grid(0, 0), 0.0)
    assert (classify(info.value).cause, classify(info.value).transient) == ("not-raster", False)
    href = f"{base}/data/predictor_u2.tif"
    server.faults(match="/data/predictor_u2", status=503, count=1)
    with pytest.raises(RemoteFailure) as info:
        rd.read(href, href, _grid(0, 0), 0.0)
    assert (classify(info.value).status, classify(info.value).transient) == (503, True)
    assert rd.read(href, href, _grid(0, 0), 0.0) is not None  # the failure was not remembered
