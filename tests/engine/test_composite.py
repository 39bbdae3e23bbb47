"""Compositing: per-pixel median and newest-valid mosaic of known stacks, and time-series frames."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from eoembed.errors import ProviderError
from eoembed.providers.composite import composite, frame_series
from eoembed.specs import FrameSpec, TemporalSpec

DATES = [date(2022, 6, 1), date(2022, 6, 11), date(2022, 6, 21), date(2022, 7, 1)]


def _stack():
    """4 scenes, 2 bands, 2×2 px: scene i band b pixel p holds 100·i + 10·b + p, with holes."""
    n, c, h, w = 4, 2, 2, 2
    stack = np.array(
        [[[100 * i + 10 * b + p for p in range(h * w)] for b in range(c)] for i in range(n)], np.float32
    ).reshape(n, c, h, w)
    stack[:, :, 0, 0] = [[5, 50], [1, 10], [9, 90], [3, 30]]  # pixel (0,0): distinct, unordered values
    valid = np.ones((n, h, w), bool)
    valid[3, 0, 1] = False  # newest scene misses pixel (0,1)
    valid[:, 1, 1] = False  # nobody sees pixel (1,1)
    valid[[0, 1], 1, 0] = False  # only scenes 2 and 3 see pixel (1,0)
    return stack, valid


def test_median_is_the_per_pixel_median_of_valid_scenes():
    stack, valid = _stack()
    out, ok = composite(stack, valid, DATES, "median", fill_value=-1)
    # pixel (0,0): band 0 values 5,1,9,3 → median 4; band 1 50,10,90,30 → 40
    assert out[:, 0, 0].tolist() == [4.0, 40.0]
    # pixel (0,1) valid in scenes 0,1,2: values 1,101,201 (band 0) → 101; 11,111,211 → 111
    assert out[:, 0, 1].tolist() == [101.0, 111.0]
    # pixel (1,0) valid in scenes 2,3: 202 and 302 → 252
    assert out[:, 1, 0].tolist() == [252.0, 262.0]
    assert out[:, 1, 1].tolist() == [-1.0, -1.0]
    np.testing.assert_array_equal(ok, [[True, True], [True, False]])
    assert out.dtype == np.float32


def test_mosaic_takes_the_newest_valid_pixel_whatever_the_input_order():
    stack, valid = _stack()
    order = [2, 0, 3, 1]  # shuffle scenes; dates travel with them
    out, ok = composite(stack[order], valid[order], [DATES[i] for i in order], "mosaic", fill_value=0)
    assert out[:, 0, 0].tolist() == [3.0, 30.0]  # scene 3 (newest)
    assert out[:, 0, 1].tolist() == [201.0, 211.0]  # scene 3 invalid there → scene 2
    assert out[:, 1, 0].tolist() == [302.0, 312.0]
    assert out[:, 1, 1].tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(ok, [[True, True], [True, False]])


def test_median_matches_numpy_on_a_random_stack():
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(7, 3, 5, 6)).astype(np.float32)
    valid = rng.random((7, 5, 6)) > 0.3
    out, ok = composite(stack, valid, [date(2022, 1, i + 1) for i in range(7)], "median", 0.0)
    for y in range(5):
        for x in range(6):
            sel = valid[:, y, x]
            if sel.any():
                np.testing.assert_allclose(out[:, y, x], np.median(stack[sel, :, y, x], axis=0), rtol=1e-6)
            else:
                assert not ok[y, x] and (out[:, y, x] == 0).all()


def test_single_scene_and_empty_stacks():
    stack, valid = _stack()
    out, ok = composite(stack[:1], valid[:1], DATES[:1], "median", fill_value=7)
    np.testing.assert_array_equal(out[:, 0, 0], [5, 50])
    np.testing.assert_array_equal(out[:, 1, 0], [7, 7])
    out, ok = composite(stack[:0], valid[:0], [], "median", fill_value=7)
    assert out.shape == (2, 2, 2) and (out == 7).all() and not ok.any()


def test_unknown_method_is_refused():
    stack, valid = _stack()
    with pytest.raises(ValueError, match="unknown composite"):
        composite(stack, valid, DATES, "mean", 0)


# ---------------------------------------------------------------------------- frames


def _series():
    """One 1×1 px band, scenes in January (10, 20) and March (30); February is empty."""
    stack = np.array([10, 20, 30], np.float32).reshape(3, 1, 1, 1)
    valid = np.ones((3, 1, 1), bool)
    dates = [date(2022, 1, 5), date(2022, 1, 25), date(2022, 3, 3)]
    return stack, valid, dates


Q1 = TemporalSpec("2022-01-01", "2022-04-01")


def test_monthly_frames_composite_each_month_and_skip_empty_ones():
    stack, valid, dates = _series()
    fr = frame_series(stack, valid, dates, Q1, FrameSpec.by_month("skip"), "median", -1)
    assert fr.values[:, 0, 0, 0].tolist() == [15.0, 30.0]
    # median scene dates: (5 + 25) / 2 = 15 January; the one March scene
    assert fr.dates == [date(2022, 1, 15), date(2022, 3, 3)]
    assert [m["date"] for m in fr.meta] == ["2022-01-15", "2022-02-15", "2022-03-03"]
    assert [m["date_from"] for m in fr.meta] == ["median scene date", "bin midpoint", "median scene date"]
    assert [m["status"] for m in fr.meta] == ["ok", "skipped", "ok"]
    assert fr.meta[0]["scenes"] == ["2022-01-05", "2022-01-25"]


def test_fill_policy_keeps_empty_frames_as_invalid_fill():
    stack, valid, dates = _series()
    fr = frame_series(stack, valid, dates, Q1, FrameSpec.by_month("fill"), "median", -1)
    assert fr.values[:, 0, 0, 0].tolist() == [15.0, -1.0, 30.0]
    assert fr.valid[:, 0, 0].tolist() == [True, False, True]
    assert fr.meta[1]["status"] == "filled"


def test_nearest_policy_copies_the_nearest_frame_marked_invalid():
    stack, valid, dates = _series()
    fr = frame_series(stack, valid, dates, Q1, FrameSpec.by_month("nearest"), "median", -1)
    # February is equally near January and March; the earlier one wins
    assert fr.values[:, 0, 0, 0].tolist() == [15.0, 15.0, 30.0]
    assert fr.valid[:, 0, 0].tolist() == [True, False, True]
    assert fr.meta[1]["status"] == "copied from frame 0"


def test_error_policy_names_the_empty_window():
    stack, valid, dates = _series()
    with pytest.raises(ProviderError, match="1 of 3 frames have no imagery.*2022-02-01 to 2022-03-01"):
        frame_series(stack, valid, dates, Q1, FrameSpec.by_month("error"), "median", -1)


def test_no_imagery_in_any_frame_is_an_error():
    stack, valid, dates = _series()
    with pytest.raises(ProviderError, match="no imagery in any of the 2 frames"):
        frame_series(stack, valid, dates, TemporalSpec("2023-01-01", "2023-03-01"), FrameSpec.by_month(),
                     "median", 0)


def test_equal_bins_put_each_scene_in_its_bin():
    stack, valid, dates = _series()
    fr = frame_series(stack, valid, dates, Q1, FrameSpec.bins(3, "fill"), "mosaic", 0)
    # 90 days in 3 bins of 30: [Jan 1, Jan 31) holds both January scenes (mosaic → newest, 20),
    # [Jan 31, Mar 2) is empty, [Mar 2, Apr 1) holds 30
    assert [m["start"] for m in fr.meta] == ["2022-01-01", "2022-01-31", "2022-03-02"]
    assert fr.values[:, 0, 0, 0].tolist() == [20.0, 0.0, 30.0]
