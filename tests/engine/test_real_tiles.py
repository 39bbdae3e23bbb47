"""Georeferencing on the real Sentinel-2 L2A tiles of ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from eoembed.api import ALL_TIME, get_embedding
from eoembed.export import read_geotiff, write_geotiff
from eoembed.providers.local import LocalProvider
from eoembed.sensors import S2_STACK_LAYOUTS
from eoembed.specs import OutputSpec, PointBuffer, SensorSpec
from pyproj import Transformer
from rasterio.windows import Window

RCF_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
TILES = ["282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0", "637U_59R_1_3"]
LAYOUT = S2_STACK_LAYOUTS[12]  # the tiles' band order (README of ../shared)


def _point_in(src, col: float, row: float) -> tuple[float, float]:
    """(lon, lat) of the tile position (col, row) in pixels from its top-left corner."""
    x, y = src.transform * (col, row)
    return Transformer.from_crs(src.crs.to_wkt(), 4326, always_xy=True).transform(x, y)


def _tile(real_tiles, name: str):
    path = [t for t in real_tiles if t.stem == name]
    if not path:
        pytest.skip(f"{name}.tif is not in ../shared/data/s2_l2a_tiles")
    return path[0]


@pytest.fixture(scope="module")
def coast_tile(real_tiles):
    return _tile(real_tiles, "282D_485L_3_3")


@pytest.mark.parametrize("name", TILES)
def test_observation_pixels_are_the_tiles_pixels(real_tiles, name):
    tile = _tile(real_tiles, name)
    with rasterio.open(tile) as src:
        lon, lat = _point_in(src, 101.3, 87.8)
        p = LocalProvider(tile)
        obs = p.fetch(p.request(PointBuffer(lon, lat, 320), ALL_TIME, SensorSpec(bands=RCF_BANDS)))
        g = obs.grid
        assert (g.width, g.height) == (64, 64)
        assert rasterio.crs.CRS.from_user_input(g.crs) == src.crs
        col, row = ~src.transform * (g.transform.c, g.transform.f)
        assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
        col, row = round(col), round(row)
        assert abs(col + 32 - 101.3) <= 0.5 + 1e-9 and abs(row + 32 - 87.8) <= 0.5 + 1e-9
        xs = [(src.transform * (col + i + 0.5, row + 0.5))[0] for i in range(64)]
        ys = [(src.transform * (col + 0.5, row + j + 0.5))[1] for j in range(64)]
        np.testing.assert_allclose(obs.data.x.values, xs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(obs.data.y.values, ys, rtol=0, atol=1e-6)
        idx = [LAYOUT.index(b) + 1 for b in RCF_BANDS]
        want = src.read(idx, window=Window(col, row, 64, 64)).astype(np.float32)
        np.testing.assert_array_equal(obs.values()[0], want)
        assert obs.valid.all()
        p.close()


def test_rcf_grid_on_a_real_tile_lands_on_its_pixel_edges(coast_tile, tmp_path):
    with rasterio.open(coast_tile) as src:
        lon, lat = _point_in(src, 112.0, 112.0)
        t, crs = src.transform, src.crs
    place = PointBuffer(lon, lat, 320)
    emb = get_embedding("rcf", place, source=coast_tile, output=OutputSpec.grid(), model_config={"features": 16})
    obs_col, obs_row = ~t * (emb.transform.c, emb.transform.f)
    col, row = round(obs_col), round(obs_row)
    assert (obs_col, obs_row) == pytest.approx((col, row), abs=1e-6)
    # the grid is the tile's transform moved to the place's first pixel and scaled by grid_cell (4)
    want = t * Affine.translation(col, row) * Affine.scale(4)
    assert emb.transform.almost_equals(want, precision=1e-6)
    assert emb.data.shape == (16, 16, 16)
    out = write_geotiff(emb, tmp_path / "grid.tif")
    with rasterio.open(out) as dst:
        assert dst.crs == crs
        left, bottom, right, top = dst.bounds
        for x in (left, right):
            c = (x - t.c) / t.a
            assert c == pytest.approx(round(c), abs=1e-6)
        for y in (top, bottom):
            r = (y - t.f) / t.e
            assert r == pytest.approx(round(r), abs=1e-6)
        assert (right - left, top - bottom) == pytest.approx((640.0, 640.0))
    back = read_geotiff(out)
    np.testing.assert_array_equal(back.to_numpy(), emb.to_numpy())
