"""Time series for temporal models: bins, frame dates and the empty-bin policy.

Synthetic stacks whose answers are known by construction, and the real 146-date Sentinel-2
series in ``../shared/data/s2_timeseries`` (dates parsed from its product names), both through
:func:`frame_series` directly and through the local provider.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from eoembed.errors import ProviderError, SpecError
from eoembed.grid import GridSpec
from eoembed.providers.base import make_observation
from eoembed.providers.composite import composite, frame_series
from eoembed.specs import BBox, FrameSpec, SensorSpec, TemporalSpec

H5_NAME = "Abies_alba_1_1005_WEFL_NLF.h5"
H5_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
YEAR_2021 = TemporalSpec.year(2021)


# ------------------------------------------------------------------------------ synthetic
def _daily(year: int = 2021, every: int = 1, h: int = 2, w: int = 3):
    """One scene every `every` days; scene value = day of year + 1000·band + 10·pixel index."""
    start = date(year, 1, 1)
    dates = [start + timedelta(days=d) for d in range(0, 365, every)]
    doy = np.array([d.timetuple().tm_yday for d in dates], np.float32)
    pix = np.arange(h * w, dtype=np.float32).reshape(h, w)
    stack = doy[:, None, None, None] + 1000 * np.arange(2, dtype=np.float32)[None, :, None, None] + 10 * pix
    return stack.astype(np.float32), np.ones((len(dates), h, w), bool), dates


@pytest.mark.parametrize("count", [1, 4, 12, 52, 365])
def test_equal_bins_tile_the_window_and_hold_the_known_median(count):
    stack, valid, dates = _daily()
    fr = frame_series(stack, valid, dates, YEAR_2021, FrameSpec.bins(count), "median", 0)
    starts = [date.fromisoformat(m["start"]) for m in fr.meta]
    ends = [date.fromisoformat(m["end"]) for m in fr.meta]
    # contiguous, half-open, covering the year exactly, lengths differing by at most one day
    assert starts[0] == date(2021, 1, 1) and ends[-1] == date(2022, 1, 1) and starts[1:] == ends[:-1]
    lengths = [(e - s).days for s, e in zip(starts, ends)]
    assert max(lengths) - min(lengths) <= 1 and sum(lengths) == 365
    # every scene in exactly one bin
    assert sum(len(m["scenes"]) for m in fr.meta) == 365
    for k, (s, e) in enumerate(zip(starts, ends)):
        first, last = s.timetuple().tm_yday, e.timetuple().tm_yday - 1 if e.year == 2021 else 365
        # daily values first..last: the median is their middle, + band and pixel offsets
        mid = (first + last) / 2
        np.testing.assert_allclose(fr.values[k, 1], mid + 1000 + 10 * np.arange(6).reshape(2, 3))
        # a scene every day of [s, e): the median day is s + (n - 1) // 2 (lower middle for even n)
        assert fr.dates[k] == s + timedelta(days=((e - s).days - 1) // 2)
    assert fr.valid.all()


def test_mosaic_per_bin_is_the_newest_valid_scene_of_that_bin():
    stack, valid, dates = _daily(every=3)
    # the newest scene of every month is cloudy at pixel (0, 0)
    for m in range(1, 13):
        last = max(i for i, d in enumerate(dates) if d.month == m)
        valid[last, 0, 0] = False
    fr = frame_series(stack, valid, dates, YEAR_2021, FrameSpec.by_month(), "mosaic", -1)
    assert len(fr.dates) == 12
    for m in range(12):
        in_month = [i for i, d in enumerate(dates) if d.month == m + 1]
        newest, second = in_month[-1], in_month[-2]
        assert fr.values[m, 0, 0, 1] == stack[newest, 0, 0, 1]  # pixel (0, 1): the newest scene
        assert fr.values[m, 0, 0, 0] == stack[second, 0, 0, 0]  # pixel (0, 0): the one before it
        assert fr.meta[m]["scenes"] == [dates[i].isoformat() for i in in_month]


def test_single_bin_equals_the_whole_window_composite():
    rng = np.random.default_rng(1)
    stack = rng.normal(1000, 200, size=(20, 3, 4, 4)).astype(np.float32)
    valid = rng.random((20, 4, 4)) > 0.4
    dates = [date(2021, 3, 1) + timedelta(days=4 * i) for i in range(20)]
    window = TemporalSpec("2021-03-01", "2021-06-01")
    fr = frame_series(stack, valid, dates, window, FrameSpec.bins(1, "fill"), "median", -9)
    whole, ok = composite(stack, valid, dates, "median", -9)
    np.testing.assert_array_equal(fr.values[0], whole)
    np.testing.assert_array_equal(fr.valid[0], ok)
    # 20 scenes (each with some valid pixel): the median of days 36 and 40 after 1 March
    assert fr.dates == [date(2021, 4, 8)]


def test_scenes_outside_the_window_are_ignored_and_edges_are_half_open():
    stack = np.array([1, 2, 3, 4], np.float32).reshape(4, 1, 1, 1)
    valid = np.ones((4, 1, 1), bool)
    dates = [date(2020, 12, 31), date(2021, 1, 1), date(2021, 1, 31), date(2021, 2, 1)]
    fr = frame_series(stack, valid, dates, TemporalSpec("2021-01-01", "2021-02-01"), FrameSpec.bins(1), "median", 0)
    assert fr.values.ravel().tolist() == [2.5] and fr.meta[0]["scenes"] == ["2021-01-01", "2021-01-31"]


def _sparse():
    """Scenes only in March, June and July 2021 (value = month), one pixel fully cloudy in June."""
    dates = [date(2021, 3, 10), date(2021, 6, 5), date(2021, 7, 20)]
    stack = np.array([3, 6, 7], np.float32).reshape(3, 1, 1, 1)
    valid = np.ones((3, 1, 1), bool)
    return stack, valid, dates


@pytest.mark.parametrize("policy, values, valid, statuses", [
    ("skip", [3, 6, 7], [1, 1, 1], ["ok", "skipped", "skipped", "ok", "ok", "skipped"]),
    ("fill", [-1, -1, 3, -1, -1, 6, 7, -1], [0, 0, 1, 0, 0, 1, 1, 0], None),
    # empty months take the nearest month that has imagery; ties go to the earlier one
    ("nearest", [3, 3, 3, 3, 6, 6, 7, 7], [0, 0, 1, 0, 0, 1, 1, 0], None),
])
def test_empty_bin_policies_at_the_edges_and_inside(policy, values, valid, statuses):
    stack, ok, dates = _sparse()
    window = TemporalSpec("2021-01-01", "2021-09-01")  # Jan … Aug: empty at both ends and inside
    if policy == "skip":
        window = TemporalSpec("2021-03-01", "2021-09-01")
    fr = frame_series(stack, ok, dates, window, FrameSpec.by_month(policy), "median", -1)
    assert fr.values.ravel().tolist() == values
    assert fr.valid.ravel().astype(int).tolist() == valid
    if statuses:
        assert [m["status"] for m in fr.meta] == statuses
    if policy == "nearest":
        assert fr.meta[0]["status"] == "copied from frame 2" and fr.meta[3]["status"] == "copied from frame 2"
        assert fr.meta[4]["status"] == "copied from frame 5" and fr.meta[7]["status"] == "copied from frame 6"
    kept = [m for m in fr.meta if m["status"] != "skipped"]
    assert [date.fromisoformat(m["start"]).month for m in kept] == [d.month for d in fr.dates]


def test_a_bin_whose_scenes_are_all_cloudy_counts_as_empty():
    stack, ok, dates = _sparse()
    ok[1] = False  # the June scene is cloudy everywhere
    fr = frame_series(stack, ok, dates, TemporalSpec("2021-06-01", "2021-08-01"), FrameSpec.by_month("fill"),
                      "median", 0)
    assert fr.meta[0]["status"] == "filled" and fr.meta[0]["scenes"] == ["2021-06-05"]
    with pytest.raises(ProviderError, match="1 of 2 frames have no imagery.*2021-06-01 to 2021-07-01"):
        frame_series(stack, ok, dates, TemporalSpec("2021-06-01", "2021-08-01"), FrameSpec.by_month("error"),
                     "median", 0)


def test_bin_count_limits():
    with pytest.raises(SpecError, match="cannot split 31 days into 32 frames"):
        FrameSpec.bins(32).windows(TemporalSpec("2021-01-01", "2021-02-01"))
    with pytest.raises(SpecError, match="count=0"):
        FrameSpec.bins(0)
    assert len(FrameSpec.by_month().windows(TemporalSpec("2020-01-15", "2021-01-15"))) == 13


def test_observation_frame_dates_give_day_of_year_and_month():
    grid = GridSpec("EPSG:32632", Affine(10, 0, 500000, 0, -10, 5000000), 2, 2)
    dates = [date(2020, 1, 16), date(2020, 2, 15), date(2020, 12, 31)]  # 2020 is a leap year
    obs = make_observation(np.zeros((3, 1, 2, 2), np.float32), np.ones((3, 2, 2), bool), grid, ["B04"], dates)
    assert obs.day_of_year.tolist() == [16, 46, 366] and obs.months.tolist() == [0, 1, 11]
    assert [str(t)[:10] for t in obs.data.coords["time"].values] == ["2020-01-16", "2020-02-15", "2020-12-31"]


# ------------------------------------------------------------------------------ the real series
@pytest.fixture(scope="module")
def series(shared_dir):
    """The real TreeSatAI-TS series: data (146, 10, 6, 6), clear-pixel validity, dates."""
    h5py = pytest.importorskip("h5py")
    path = shared_dir / "data" / "s2_timeseries" / H5_NAME
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    with h5py.File(path, "r") as f:
        data = f["sen-2-data"][:].astype(np.float32)
        masks = f["sen-2-masks"][:]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["sen-2-products"][:]]
    # product names: S2A_MSIL2A_20200102T102421_N0213_R065_T32UNC_20200102T115419 — sensing date first
    dates = [date(int(m[1]), int(m[2]), int(m[3]))
             for m in (re.search(r"_MSIL2A_(\d{4})(\d{2})(\d{2})T", n) for n in names)]
    # the two non-empty mask layers are cloud/snow probabilities (%): clear = both zero
    valid = (masks[:, 0] == 0) & (masks[:, 1] == 0)
    return data, valid, dates, names


def test_real_series_dates_come_from_the_product_names(series):
    data, valid, dates, names = series
    assert data.shape == (146, 10, 6, 6) and len(dates) == 146
    assert dates[0] == date(2020, 1, 2) and dates[-1] == date(2020, 12, 30)
    assert dates == sorted(dates) and all(d.year == 2020 for d in dates)
    assert Counter(d.month for d in dates) == {m: 13 if m in (5, 10) else 12 for m in range(1, 13)}


def test_real_series_monthly_medians(series):
    data, valid, dates, _ = series
    fr = frame_series(data, valid, dates, TemporalSpec.year(2020), FrameSpec.by_month("fill"), "median", 0)
    assert len(fr.dates) == 12
    for m in range(12):  # each frame: the median date of that month's scenes with a clear pixel
        days = [d.toordinal() for i, d in enumerate(dates) if d.month == m + 1 and valid[i].any()]
        assert fr.dates[m] == date.fromordinal(int(np.floor(np.median(days))))
    for m in range(12):
        idx = [i for i, d in enumerate(dates) if d.month == m + 1]
        assert fr.meta[m]["scenes"] == [dates[i].isoformat() for i in idx]
        for y in range(6):
            for x in range(6):
                ok = [i for i in idx if valid[i, y, x]]
                if ok:
                    np.testing.assert_allclose(fr.values[m, :, y, x], np.median(data[ok, :, y, x], axis=0))
                    assert fr.valid[m, y, x]
                else:
                    assert not fr.valid[m, y, x] and (fr.values[m, :, y, x] == 0).all()
    # summer is greener than winter: NIR (B08) median over the tile, July vs January
    assert np.median(fr.values[6, 6]) > np.median(fr.values[0, 6])


def test_real_series_with_a_missing_month_follows_each_policy(series):
    data, valid, dates, _ = series
    keep = [i for i, d in enumerate(dates) if d.month != 7]  # July's products are missing
    args = (data[keep], valid[keep], [dates[i] for i in keep], TemporalSpec("2020-05-01", "2020-10-01"))
    skip = frame_series(*args, FrameSpec.by_month("skip"), "median", 0)
    assert [d.month for d in skip.dates] == [5, 6, 8, 9]
    fill = frame_series(*args, FrameSpec.by_month("fill"), "median", -1)
    assert fill.meta[2]["status"] == "filled" and not fill.valid[2].any() and (fill.values[2] == -1).all()
    nearest = frame_series(*args, FrameSpec.by_month("nearest"), "median", -1)
    np.testing.assert_array_equal(nearest.values[2], nearest.values[1])  # July ← June (tie → earlier)
    assert nearest.meta[2]["status"] == "copied from frame 1"
    with pytest.raises(ProviderError, match="2020-07-01 to 2020-08-01"):
        frame_series(*args, FrameSpec.by_month("error"), "median", -1)


def test_real_series_through_the_local_provider(series, tmp_path):
    """146 dated GeoTIFFs (cloudy pixels written as nodata 0) → the same monthly frames."""
    rasterio = pytest.importorskip("rasterio")
    from eoembed.providers.local import LocalProvider

    data, valid, dates, names = series
    transform = Affine(10, 0, 600_000, 0, -10, 5_300_000)  # T32UNC lies in UTM 32N
    for i, (d, n) in enumerate(zip(dates, names)):
        arr = np.where(valid[i][None], np.rint(data[i]), 0).astype("uint16")
        with rasterio.open(tmp_path / f"{n}.tif", "w", driver="GTiff", width=6, height=6, count=10, dtype="uint16",
                           crs="EPSG:32632", transform=transform, nodata=0) as dst:
            dst.write(arr)
            dst.update_tags(datetime=d.isoformat())
    p = LocalProvider(tmp_path)
    assert len(p.scenes) == 146
    place = BBox(600_000, 5_299_940, 600_060, 5_300_000, crs="EPSG:32632")
    sensor = SensorSpec(bands=H5_BANDS, cloudy_pct=100)
    window = TemporalSpec("2020-03-01", "2020-07-01")
    obs = p.fetch(p.request(place, window, sensor, FrameSpec.by_month("fill")))
    direct = frame_series(np.rint(data), valid, dates, window, FrameSpec.by_month("fill"), "median", 0)
    np.testing.assert_allclose(obs.values(), direct.values)
    np.testing.assert_array_equal(obs.valid, direct.valid)
    assert obs.dates == direct.dates and obs.months.tolist() == [2, 3, 4, 5]
    assert obs.bands == H5_BANDS and Path(obs.meta["scenes"][0]).name.startswith("S2")
