"""LocalProvider on small synthetic GeoTIFFs with known values, CRS, transforms and metadata."""

from __future__ import annotations

import dataclasses
from datetime import date

import numpy as np
import pytest
import rasterio
from affine import Affine
from eoembed.errors import ProviderError, SpecError
from eoembed.grid import roi_grid
from eoembed.providers.local import LocalProvider
from eoembed.specs import FrameSpec, PointBuffer, SensorSpec, TemporalSpec
from pyproj import Transformer
from rasterio.windows import Window

UTM33 = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_200.0)  # 20×20 px file: 500000..500200
ALL = TemporalSpec("2000-01-01", "2050-01-01")
FOUR = ("B02", "B03", "B04", "B08")


def _ramp(c: int = 4, h: int = 20, w: int = 20, base: float = 0.0) -> np.ndarray:
    """Band b, row r, col c holds base + 1000·(b+1) + 10·r + c: every pixel different, none 0."""
    b, r, col = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return (base + 1000 * (b + 1) + 10 * r + col).astype(np.float32)


def _fetch(provider, spatial, temporal=ALL, **sensor):
    sensor.setdefault("bands", FOUR)
    return provider.fetch(provider.request(spatial, temporal, SensorSpec(**sensor)))


def test_aligned_stack_read_equals_a_window_read(make_tiff):
    path = make_tiff("stack.tif", _ramp().astype(np.int16), crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    p = LocalProvider(path)
    obs = _fetch(p, PointBuffer(500_100, 5_000_100, 40, crs=UTM33))
    # by hand: an 8×8 grid from x 500060, y 5000140 → rows/cols 6..13 of the file
    assert obs.grid.transform == Affine(10, 0, 500_060, 0, -10, 5_000_140)
    with rasterio.open(path) as src:
        want = src.read(window=Window(6, 6, 8, 8)).astype(np.float32)
        cx = [src.transform * (c + 0.5, 0.5) for c in range(6, 14)]
        cy = [src.transform * (0.5, r + 0.5) for r in range(6, 14)]
    np.testing.assert_array_equal(obs.values()[0], want)
    np.testing.assert_array_equal(obs.data.x.values, [x for x, _ in cx])
    np.testing.assert_array_equal(obs.data.y.values, [y for _, y in cy])
    assert obs.bands == FOUR and obs.valid.all() and obs.meta["partial"] is False


def test_band_subset_comes_in_the_requested_order(make_tiff):
    path = make_tiff("stack.tif", _ramp(), crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    obs = _fetch(LocalProvider(path), PointBuffer(500_100, 5_000_100, 20, crs=UTM33), bands=("B08", "B02"))
    v = obs.values()[0]
    assert v[0, 0, 0] == 4000 + 10 * 8 + 8 and v[1, 0, 0] == 1000 + 10 * 8 + 8


def test_lonlat_place_is_put_on_the_files_pixel_lattice(make_tiff):
    odd = Affine(10.0, 0.0, 500_003.7, 0.0, -10.0, 5_000_206.2)  # origin off the 10 m lattice
    path = make_tiff("stack.tif", _ramp(), crs=UTM33, transform=odd, descriptions=FOUR)
    lon, lat = Transformer.from_crs(UTM33, 4326, always_xy=True).transform(500_103.7, 5_000_106.2)
    obs = _fetch(LocalProvider(path), PointBuffer(lon, lat, 30))
    g = obs.grid
    assert g.crs == UTM33 and (g.width, g.height) == (6, 6)
    col, row = ~odd * (g.transform.c, g.transform.f)
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
    with rasterio.open(path) as src:
        want = src.read(window=Window(round(col), round(row), 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(obs.values()[0], want)


def test_file_in_another_utm_zone_is_reprojected_to_the_right_place(make_tiff):
    # A linear field over a 2 km square in UTM 32N (next to the 12°E zone edge), read for a grid
    # in UTM 33N: bilinear resampling of a linear field returns the field at each pixel centre.
    x0, y0 = 731_500.0, 4_988_200.0
    h = w = 200
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    xs, ys = x0 + 10 * (cols + 0.5), y0 - 10 * (rows + 0.5)

    def field(x, y):
        return 0.5 * (x - x0) + 0.25 * (y0 - y) + 100.0

    data = np.stack([field(xs, ys)] * 4).astype(np.float32)
    path = make_tiff("z32.tif", data, crs="EPSG:32632", transform=Affine(10, 0, x0, 0, -10, y0),
                     descriptions=FOUR)
    cx, cy = Transformer.from_crs("EPSG:32632", UTM33, always_xy=True).transform(x0 + 1000, y0 - 1000)
    provider, place = LocalProvider(path), PointBuffer(cx, cy, 500, crs=UTM33)
    req = provider.request(place, TemporalSpec("2000-01-01", "2030-01-01"), SensorSpec(bands=FOUR))
    # the provider's own grid is the file's lattice (the place is in zone 32 despite its CRS)
    assert req.grid.crs == "EPSG:32632" and req.grid.transform.c == x0 + 500 and req.grid.transform.f == y0 - 500
    # a request on a grid in UTM 33N is warped there
    obs = provider.fetch(dataclasses.replace(req, grid=roi_grid(place, 10, crs=UTM33)))
    assert obs.grid.crs == UTM33 and obs.valid.all()
    gx, gy = np.meshgrid(obs.data.x.values, obs.data.y.values)
    sx, sy = Transformer.from_crs(UTM33, "EPSG:32632", always_xy=True).transform(gx, gy)
    want = field(sx, sy)
    got = obs.values()[0, 2]
    # GDAL's warp approximates the transformation to 1/8 pixel: 1.25 m · 0.56 per m ≈ 0.7 units
    np.testing.assert_allclose(got, want, atol=0.7)
    naive = field(gx - cx + x0 + 1000, gy - cy + y0 - 1000)  # same offsets without reprojection
    assert np.abs(naive - got).max() > 5


def test_one_file_per_band_scene_at_mixed_resolutions(make_tiff, tmp_path):
    b04 = _ramp(1)[0]
    b11 = (np.arange(100, dtype=np.float32).reshape(10, 10) + 1) * 7
    make_tiff("scene/T33_20220601_B04.tif", b04, crs=UTM33, transform=ORIGIN)
    make_tiff("scene/T33_20220601_B11.tif", b11, crs=UTM33,
              transform=Affine(20, 0, ORIGIN.c, 0, -20, ORIGIN.f))
    p = LocalProvider(tmp_path / "scene", resampling="nearest")
    assert len(p.scenes) == 1 and p.scenes[0].id == "T33_20220601"
    assert set(p.scenes[0].bands) == {"B04", "B11"} and p.scenes[0].res == 10
    assert p.scenes[0].date == date(2022, 6, 1)
    obs = _fetch(p, PointBuffer(500_100, 5_000_100, 40, crs=UTM33), bands=("B04", "B11"))
    v = obs.values()[0]
    np.testing.assert_array_equal(v[0], b04[6:14, 6:14])
    rows, cols = np.meshgrid(np.arange(6, 14), np.arange(6, 14), indexing="ij")
    np.testing.assert_array_equal(v[1], b11[rows // 2, cols // 2])  # each 20 m pixel covers 2×2


@pytest.mark.parametrize(
    "how, want",
    [
        ("tag", date(2022, 6, 1)),
        ("sidecar", date(2022, 6, 11)),
        ("filename", date(2022, 6, 21)),
        ("none", None),
    ],
)
def test_acquisition_dates_come_from_tags_sidecars_or_names(make_tiff, how, want):
    kwargs = {"crs": UTM33, "transform": ORIGIN, "descriptions": FOUR}
    name = "scene.tif"
    if how == "tag":
        kwargs["tags"] = {"datetime": "2022-06-01T10:20:30Z"}
    elif how == "sidecar":
        kwargs["sidecar"] = {"acquisition_date": "2022-06-11"}
    elif how == "filename":
        name = "S2B_MSIL2A_20220621T101031_tile.tif"
    p = LocalProvider(make_tiff(name, _ramp(), **kwargs))
    assert p.scenes[0].date == want
    obs = _fetch(p, PointBuffer(500_100, 5_000_100, 20, crs=UTM33))
    assert ("undated_scenes" in obs.meta) == (want is None)


def _three_scenes(make_tiff, tmp_path, **extra_tags):
    """Scenes on 2022-06-01/11/21 holding 100, 300, 200 (+ramp); the newest has a nodata hole."""
    for d, level in (("20220601", 100.0), ("20220611", 300.0), ("20220621", 200.0)):
        data = _ramp(base=level)
        if d == "20220621":
            data[:, 10:, :] = -9999  # southern half missing in the newest scene
        make_tiff(f"dated/S2_{d}.tif", data, crs=UTM33, transform=ORIGIN, descriptions=FOUR,
                  nodata=-9999, tags=extra_tags.get(d))
    return tmp_path / "dated"


def test_time_window_selects_scenes_half_open(make_tiff, tmp_path):
    p = LocalProvider(_three_scenes(make_tiff, tmp_path))
    place = PointBuffer(500_100, 5_000_100, 20, crs=UTM33)
    obs = _fetch(p, place, TemporalSpec("2022-06-05", "2022-06-21"))  # 06-21 excluded
    assert obs.meta["scenes"] == ["S2_20220611"] and obs.meta["dates"] == ["2022-06-11"]
    assert obs.dates == [date(2022, 6, 11)]
    assert obs.values()[0, 0, 0, 0] == 300 + 1000 + 80 + 8
    with pytest.raises(ProviderError, match="none is dated in 2022-07-01..2022-08-01.*2022-06-01, 2022-06-11"):
        _fetch(p, place, TemporalSpec("2022-07-01", "2022-08-01"))


def test_median_and_mosaic_of_three_dated_scenes(make_tiff, tmp_path):
    p = LocalProvider(_three_scenes(make_tiff, tmp_path))
    place = PointBuffer(500_100, 5_000_100, 100, crs=UTM33)  # rows 0..19: both halves
    ramp = _ramp()
    med = _fetch(p, place, TemporalSpec("2022-06-01", "2022-07-01"), composite="median").values()[0]
    # north: median(100, 300, 200) = 200; south (newest missing): median(100, 300) = 200
    np.testing.assert_array_equal(med, ramp + 200)
    mos = _fetch(p, place, TemporalSpec("2022-06-01", "2022-07-01"), composite="mosaic").values()[0]
    # north: newest (06-21) = 200; south: next newest (06-11) = 300
    np.testing.assert_array_equal(mos[:, :10], ramp[:, :10] + 200)
    np.testing.assert_array_equal(mos[:, 10:], ramp[:, 10:] + 300)


def test_frames_give_one_composite_per_bin(make_tiff, tmp_path):
    p = LocalProvider(_three_scenes(make_tiff, tmp_path))
    place = PointBuffer(500_100, 5_000_100, 20, crs=UTM33)
    req = p.request(place, TemporalSpec("2022-06-01", "2022-06-16"), SensorSpec(bands=FOUR), FrameSpec.bins(3))
    obs = p.fetch(req)
    # bins [06-01, 06-06) [06-06, 06-11) [06-11, 06-16): the middle one is empty and skipped
    # each frame is dated by its scene, not by its bin's midpoint (06-03, 06-13)
    assert obs.dates == [date(2022, 6, 1), date(2022, 6, 11)]
    assert [f["date_from"] for f in obs.meta["frames"]] == ["median scene date", "bin midpoint", "median scene date"]
    assert obs.values()[:, 0, 0, 0].tolist() == [100 + 1088, 300 + 1088]
    assert [f["status"] for f in obs.meta["frames"]] == ["ok", "skipped", "ok"]


@pytest.mark.parametrize("cloudy_pct, scenes", [(30, ["S2_20220601"]), (60, ["S2_20220601", "S2_20220611"])])
def test_cloudy_scenes_are_skipped(make_tiff, tmp_path, cloudy_pct, scenes):
    folder = _three_scenes(make_tiff, tmp_path, **{"20220611": {"CLOUDY_PIXEL_PERCENTAGE": 55.0}})
    p = LocalProvider(folder)
    obs = _fetch(p, PointBuffer(500_100, 5_000_100, 20, crs=UTM33), TemporalSpec("2022-06-01", "2022-06-20"),
                 cloudy_pct=cloudy_pct)
    assert obs.meta["scenes"] == scenes


def test_all_scenes_too_cloudy_is_a_clear_error(make_tiff):
    # a STAC item as sidecar (GDAL tags cannot hold a key with a colon)
    path = make_tiff("c.tif", _ramp(), crs=UTM33, transform=ORIGIN, descriptions=FOUR,
                     sidecar={"type": "Feature", "properties": {"eo:cloud_cover": 80}})
    with pytest.raises(ProviderError, match="cloudier than cloudy_pct=30"):
        _fetch(LocalProvider(path), PointBuffer(500_100, 5_000_100, 20, crs=UTM33))


def test_scl_clouds_and_shadows_are_masked(make_tiff, tmp_path):
    b04 = _ramp(1)[0]
    scl = np.full((10, 10), 4, np.uint8)  # vegetation
    scl[0:5, 0:5] = 9  # cloud high probability over the 10 m rows/cols 0..9
    scl[5, 5] = 3  # cloud shadow: 10 m rows/cols 10..11
    make_tiff("s/T_20220601_B04.tif", b04, crs=UTM33, transform=ORIGIN)
    make_tiff("s/T_20220601_SCL.tif", scl, crs=UTM33, transform=Affine(20, 0, ORIGIN.c, 0, -20, ORIGIN.f))
    obs = _fetch(LocalProvider(tmp_path / "s"), PointBuffer(500_100, 5_000_100, 100, crs=UTM33),
                 bands=("B04",), fill_value=-1)
    want = np.ones((20, 20), bool)
    want[:10, :10] = False
    want[10:12, 10:12] = False
    np.testing.assert_array_equal(obs.valid[0], want)
    v = obs.values()[0, 0]
    np.testing.assert_array_equal(v[want], b04[want])
    assert (v[~want] == -1).all()
    assert obs.meta["coverage"] == pytest.approx(1 - 104 / 400)  # coverage counts clear pixels


@pytest.mark.parametrize(
    "tags, offset",
    [({"PROCESSING_BASELINE": "04.00"}, 1000.0), ({"BOA_ADD_OFFSET": "-1000"}, 1000.0),
     ({"PROCESSING_BASELINE": "03.01"}, 0.0), ({}, 0.0)],
)
def test_boa_offset_is_removed_when_metadata_says_so(make_tiff, tags, offset):
    data = _ramp(base=1000)
    path = make_tiff("boa.tif", data, crs=UTM33, transform=ORIGIN, descriptions=FOUR, tags=tags)
    obs = _fetch(LocalProvider(path), PointBuffer(500_100, 5_000_100, 100, crs=UTM33))
    np.testing.assert_array_equal(obs.values()[0], data - offset)
    assert ("boa_offset_removed" in obs.meta) == bool(offset)


def test_partial_coverage_is_filled_and_flagged(make_tiff):
    path = make_tiff("stack.tif", _ramp(), crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    # 10×10 grid from x 500150 (file ends at 500200 → 5 columns inside), y 5000250 (file starts
    # at 5000200 → the first 5 rows are outside)
    obs = _fetch(LocalProvider(path), PointBuffer(500_200, 5_000_200, 50, crs=UTM33), fill_value=-5)
    want = np.zeros((10, 10), bool)
    want[5:, :5] = True
    np.testing.assert_array_equal(obs.valid[0], want)
    v = obs.values()[0]
    assert (v[:, ~want] == -5).all()
    np.testing.assert_array_equal(v[:, 5:, :5], _ramp()[:, 0:5, 15:20])
    assert obs.meta["partial"] is True and obs.meta["coverage"] == 0.25 and obs.meta["fill_value"] == -5


def test_place_outside_every_footprint_is_a_provider_error(make_tiff):
    path = make_tiff("stack.tif", _ramp(), crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    with pytest.raises(ProviderError, match="no local imagery covers the place .*choose a place inside them"):
        _fetch(LocalProvider(path), PointBuffer(12.49, 41.89, 100))


@pytest.mark.parametrize("declared, assume", [(-9999, 0.0), (None, 0.0), (None, None)])
def test_nodata_pixels_are_invalid(make_tiff, declared, assume):
    data = _ramp()
    hole = -9999 if declared is not None else 0
    data[:, 3, 4] = hole
    path = make_tiff("nd.tif", data, crs=UTM33, transform=ORIGIN, descriptions=FOUR, nodata=declared)
    obs = _fetch(LocalProvider(path, assume_nodata=assume), PointBuffer(500_100, 5_000_100, 100, crs=UTM33))
    assert obs.valid[0, 3, 4] == (assume is None and declared is None)
    assert obs.valid.sum() == 400 - (0 if assume is None and declared is None else 1)


def test_missing_band_is_a_provider_error_naming_it(make_tiff):
    path = make_tiff("stack.tif", _ramp(), crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    with pytest.raises(ProviderError, match="no band B11 .*it has B02, B03, B04, B08"):
        _fetch(LocalProvider(path), PointBuffer(500_100, 5_000_100, 20, crs=UTM33), bands=("B04", "B11"))


def test_band_names_from_sidecar_and_band_count(make_tiff):
    side = make_tiff("a.tif", _ramp(3), crs=UTM33, transform=ORIGIN, sidecar={"bands": ["nir", "red", "green"]})
    assert LocalProvider(side).scenes[0].bands["B08"] == (side, 1)
    counted = make_tiff("b/b.tif", _ramp(3), crs=UTM33, transform=ORIGIN)
    assert LocalProvider(counted).scenes[0].bands["B04"] == (counted, 1)  # 3 bands: B04, B03, B02


def test_unusable_inputs_are_spec_errors(tmp_path, make_tiff):
    with pytest.raises(SpecError, match="does not exist"):
        LocalProvider(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="no usable imagery"):
        LocalProvider(tmp_path / "empty")
    nocrs = make_tiff("x/nocrs.tif", _ramp(), crs=None, transform=ORIGIN)
    with pytest.raises(SpecError, match="no CRS"):
        LocalProvider(nocrs)
    five = make_tiff("y/five.tif", _ramp(5), crs=UTM33, transform=ORIGIN)
    with pytest.raises(SpecError, match="5 bands without names"):
        LocalProvider(five)


def test_imagery_in_web_mercator_is_never_the_grid(make_tiff):
    # a file in EPSG:3857 at 57° N: its "10 m" pixels are 5.4 m of ground, so the grid is the
    # place's UTM zone, 10 ground metres a pixel, and the file is warped onto it
    lon, lat = 9.85, 57.2
    x, y = Transformer.from_crs(4326, "EPSG:3857", always_xy=True).transform(lon, lat)
    t = Affine(10, 0, x - 1000, 0, -10, y + 1000)
    path = make_tiff("merc.tif", _ramp(h=200, w=200), crs="EPSG:3857", transform=t, descriptions=FOUR)
    obs = _fetch(LocalProvider(path), PointBuffer(x, y, 200, crs="EPSG:3857"))
    assert obs.grid.crs == "EPSG:32632" and (obs.grid.width, obs.grid.height) == (40, 40)
    assert obs.grid.transform.c % 10 == 0 and obs.grid.transform.f % 10 == 0
    assert obs.meta["grid"] == {"crs": "EPSG:32632", "basis": "utm zone of the place"}
    # the ramp (col + 10·row of the file) at two grid pixel centres 390 m apart, by pyproj:
    # ≈ 72 file columns (390 m / cos 57.2° in Mercator units) plus the meridian convergence
    ramp = obs.values()[0, 0]
    to_merc = Transformer.from_crs("EPSG:32632", "EPSG:3857", always_xy=True)
    (c0, r0), (c1, r1) = (~t * to_merc.transform(*(obs.grid.transform * (c + 0.5, 20.5))) for c in (0, 39))
    expect = (c1 - c0) + 10 * (r1 - r0)
    assert 70 < c1 - c0 < 74 and ramp[20, -1] - ramp[20, 0] == pytest.approx(expect, abs=0.5)
