"""Spec validation: every rule, on both sides of each bound, with errors that name the field."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import date, datetime

import pytest
import shapely
import shapely.geometry
from eoembed.errors import SpecError
from eoembed.sensors import normalize_band
from eoembed.specs import (
    MAX_AREA_KM2,
    MAX_BUFFER_M,
    BBox,
    FrameSpec,
    Geometry,
    InputPrep,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    parse_crs,
)

# ----------------------------------------------------------------------------------- BBox


@pytest.mark.parametrize(
    "bounds",
    [(-180, -90, -179.9, -89.9), (179.9, 89.9, 180, 90), (12.0, 41.0, 12.1, 41.1)],
)
def test_bbox_accepts_lonlat_on_and_inside_the_range(bounds):
    b = BBox(*bounds)
    assert b.bounds == tuple(float(v) for v in bounds)
    assert b.crs == "EPSG:4326"


@pytest.mark.parametrize(
    "bounds, word",
    [
        ((-180.01, 0, -179.9, 0.1), "longitude -180.01"),
        ((179.9, 0, 180.01, 0.1), "longitude 180.01"),
        ((0, -90.01, 0.1, -89.9), "latitude -90.01"),
        ((0, 89.9, 0.1, 90.01), "latitude 90.01"),
    ],
)
def test_bbox_rejects_lonlat_outside_the_range(bounds, word):
    with pytest.raises(SpecError, match=word):
        BBox(*bounds)


@pytest.mark.parametrize(
    "bounds, field",
    [((1, 0, 1, 1), "minx"), ((2, 0, 1, 1), "minx"), ((0, 1, 1, 1), "miny"), ((0, 2, 1, 1), "miny")],
)
def test_bbox_rejects_min_not_below_max(bounds, field):
    with pytest.raises(SpecError, match=f"{field} .* must be less than"):
        BBox(*bounds)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "east", None])
def test_bbox_rejects_values_that_are_not_finite_numbers(bad):
    with pytest.raises(SpecError, match="minx"):
        BBox(bad, 0, 1, 1)


def test_bbox_in_a_projected_crs_skips_lonlat_bounds():
    b = BBox(500_000, 5_000_000, 501_000, 5_001_000, crs="EPSG:32633")
    assert b.crs == "EPSG:32633"
    assert b.working_crs.to_epsg() == 32633


@pytest.mark.parametrize("side_km, ok", [(49.0, True), (51.0, False)])
def test_bbox_area_bound_on_both_sides_names_the_bound(side_km, ok):
    # A square on the UTM central meridian: its geodesic area is side² within 0.1 %.
    s = side_km * 1000
    args = (500_000 - s / 2, 4_000_000, 500_000 + s / 2, 4_000_000 + s)
    if ok:
        b = BBox(*args, crs="EPSG:32633")
        assert b.area_km2() == pytest.approx(side_km**2, rel=2e-3)
    else:
        with pytest.raises(SpecError, match=f"{MAX_AREA_KM2:,.0f} km²"):
            BBox(*args, crs="EPSG:32633")


@pytest.mark.parametrize("crs", ["EPSG:999999", "not a crs", 3.5, ""])
def test_unreadable_crs_is_a_spec_error_naming_the_argument(crs):
    with pytest.raises(SpecError, match="crs=.* is not a coordinate reference system"):
        BBox(0, 0, 1, 1, crs=crs)


def test_parse_crs_reads_epsg_wkt_and_proj_strings_alike():
    want = parse_crs("EPSG:32633")
    assert parse_crs(want.to_wkt()) == want
    assert parse_crs(32633) == want
    assert parse_crs("+proj=utm +zone=33 +datum=WGS84 +units=m +no_defs").to_epsg() == 32633


def test_specs_are_frozen():
    b = BBox(0, 0, 0.1, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.minx = 0.5  # type: ignore[misc]


# ---------------------------------------------------------------------------- PointBuffer


@pytest.mark.parametrize("buf", [0.001, 1.0, MAX_BUFFER_M])
def test_point_buffer_accepts_buffers_in_range(buf):
    assert PointBuffer(12.49, 41.89, buf).buffer_m == buf


@pytest.mark.parametrize("buf", [0, -1.0, MAX_BUFFER_M + 0.001, math.inf, math.nan, "wide"])
def test_point_buffer_rejects_bad_buffers(buf):
    with pytest.raises(SpecError, match="buffer_m"):
        PointBuffer(12.49, 41.89, buf)


def test_point_buffer_bound_is_in_the_message():
    with pytest.raises(SpecError, match=f"at most {MAX_BUFFER_M:g} metres"):
        PointBuffer(12.49, 41.89, MAX_BUFFER_M * 2)


@pytest.mark.parametrize(
    "x, y, ok", [(180, 0, True), (-180, 0, True), (0, 90, True), (0, -90, True),
                 (180.5, 0, False), (-180.5, 0, False), (0, 90.5, False), (0, -90.5, False)]
)
def test_point_buffer_lonlat_range(x, y, ok):
    if ok:
        PointBuffer(x, y, 100)
    else:
        with pytest.raises(SpecError, match="longitude|latitude"):
            PointBuffer(x, y, 100)


@pytest.mark.parametrize("field, args", [("x", (math.nan, 0, 10)), ("y", (0, math.inf, 10))])
def test_point_buffer_rejects_non_finite_coordinates(field, args):
    with pytest.raises(SpecError, match=f"{field}="):
        PointBuffer(*args)


def test_point_buffer_square_is_exact_in_its_working_crs():
    p = PointBuffer(12.49, 41.89, 320)
    cx, cy = p.center("EPSG:32633")
    assert p.shape("EPSG:32633").bounds == pytest.approx((cx - 320, cy - 320, cx + 320, cy + 320))
    assert p.area_km2() == pytest.approx(0.64**2, rel=2e-3)


# ------------------------------------------------------------------------------- Geometry

_SQUARE = shapely.geometry.box(12.0, 41.0, 12.01, 41.01)


class _GeoInterface:
    __geo_interface__ = shapely.geometry.mapping(_SQUARE)


@pytest.mark.parametrize(
    "given",
    [
        _SQUARE,
        _SQUARE.wkt,
        json.dumps(shapely.geometry.mapping(_SQUARE)),
        dict(shapely.geometry.mapping(_SQUARE)),
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(_SQUARE)},
        _GeoInterface(),
    ],
    ids=["shapely", "wkt", "geojson-text", "geojson-dict", "feature", "geo-interface"],
)
def test_geometry_reads_every_input_form_to_the_same_polygon(given):
    g = Geometry(given)
    assert g.geom.equals(_SQUARE)
    assert g == Geometry(_SQUARE) and hash(g) == hash(Geometry(_SQUARE))
    assert g.is_polygon


def test_geometry_accepts_multipolygons_in_projected_crs():
    mp = shapely.geometry.MultiPolygon([shapely.geometry.box(0, 0, 10, 10), shapely.geometry.box(20, 0, 30, 10)])
    g = Geometry(mp, crs="EPSG:32633")
    assert g.shape().area == 200.0


@pytest.mark.parametrize(
    "given, word",
    [
        (shapely.geometry.Point(12, 41), "PointBuffer"),
        ("POINT (12 41)", "PointBuffer"),
        (shapely.geometry.LineString([(0, 0), (1, 1)]), "Polygon or MultiPolygon"),
        ("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))", "not valid.*make_valid"),
        ("POLYGON EMPTY", "empty"),
        ("POLYGON ((0 0, 1", "WKT text does not parse"),
        ('{"type": "Polygon", "coordinates": ', "GeoJSON text does not parse"),
        ({"type": "Polygon", "coordinates": "nope"}, "GeoJSON object is not a geometry"),
        (42, "cannot read a geometry from a int"),
        ("POLYGON ((170 0, 190 0, 190 1, 170 1, 170 0))", "longitude 190"),
    ],
)
def test_geometry_rejects_bad_input_with_a_sentence(given, word):
    with pytest.raises(SpecError, match=word):
        Geometry(given)


def test_geometry_area_bound():
    with pytest.raises(SpecError, match="more than the 2,500 km²"):
        Geometry(shapely.geometry.box(10, 40, 11, 41))


# ---------------------------------------------------------------------------- TemporalSpec


def test_temporal_parses_iso_dates_datetimes_and_dates_alike():
    a = TemporalSpec("2022-06-01", "2022-09-01")
    b = TemporalSpec(datetime(2022, 6, 1, 12, 30), date(2022, 9, 1))
    c = TemporalSpec.range("2022-06-01T00:00:00Z", "2022-09-01")
    assert a == b == c
    assert (a.start, a.end, a.days) == (date(2022, 6, 1), date(2022, 9, 1), 92)


@pytest.mark.parametrize("start, end", [("2022-06-01", "2022-06-01"), ("2022-06-02", "2022-06-01")])
def test_temporal_rejects_empty_or_reversed_windows(start, end):
    with pytest.raises(SpecError, match="empty or reversed"):
        TemporalSpec(start, end)


@pytest.mark.parametrize("bad", ["2022-13-01", "June 2022", "", 20220601, None])
def test_temporal_rejects_unparseable_dates(bad):
    with pytest.raises(SpecError, match="start=.*ISO date"):
        TemporalSpec(bad, "2023-01-01")


@pytest.mark.parametrize(
    "start, end, ok",
    [("1970-01-01", "1970-01-02", True), ("1969-12-31", "1970-01-02", False),
     ("2099-12-31", "2100-01-01", True), ("2100-12-30", "2101-01-01", False)],
)
def test_temporal_year_bounds(start, end, ok):
    if ok:
        TemporalSpec(start, end)
    else:
        with pytest.raises(SpecError, match="between 1970 and 2100"):
            TemporalSpec(start, end)


@pytest.mark.parametrize("year, ok", [(1970, True), (2099, True), (1969, False), (2100, False)])
def test_temporal_year_sugar_bounds(year, ok):
    if ok:
        t = TemporalSpec.year(year)
        assert (t.start, t.end) == (date(year, 1, 1), date(year + 1, 1, 1))
    else:
        with pytest.raises(SpecError, match=f"year={year}"):
            TemporalSpec.year(year)


@pytest.mark.parametrize("bad", ["2022", 2022.0, True])
def test_temporal_year_needs_a_whole_number(bad):
    with pytest.raises(SpecError, match="whole number"):
        TemporalSpec.year(bad)


def test_temporal_is_half_open():
    t = TemporalSpec("2022-06-01", "2022-07-01")
    assert t.contains(date(2022, 6, 1)) and t.contains(datetime(2022, 6, 30, 23, 59))
    assert not t.contains(date(2022, 7, 1)) and not t.contains(date(2022, 5, 31))


def test_temporal_split_covers_the_window_with_near_equal_whole_days():
    t = TemporalSpec("2022-01-01", "2022-01-11")  # 10 days
    parts = t.split(3)
    assert [(p.start.day, p.end.day) for p in parts] == [(1, 4), (4, 8), (8, 11)]
    assert [p.days for p in t.split(10)] == [1] * 10


@pytest.mark.parametrize("n, word", [(0, "must be a whole number"), (11, "at most 10"), (2.0, "whole number")])
def test_temporal_split_rejects_bad_counts(n, word):
    with pytest.raises(SpecError, match=word):
        TemporalSpec("2022-01-01", "2022-01-11").split(n)


def test_temporal_months_are_calendar_months_clipped_to_the_window():
    t = TemporalSpec("2022-01-15", "2022-03-10")
    assert [(m.start, m.end) for m in t.months()] == [
        (date(2022, 1, 15), date(2022, 2, 1)),
        (date(2022, 2, 1), date(2022, 3, 1)),
        (date(2022, 3, 1), date(2022, 3, 10)),
    ]
    assert len(TemporalSpec.year(2024).months()) == 12
    assert TemporalSpec.year(2024).months()[1].days == 29  # leap February


# ------------------------------------------------------------------------------ FrameSpec


@pytest.mark.parametrize("count", [1, 366])
def test_frames_accept_counts_in_range(count):
    assert FrameSpec.bins(count).count == count


@pytest.mark.parametrize("count", [0, 367, None, 2.0, True])
def test_frames_reject_counts_out_of_range(count):
    with pytest.raises(SpecError, match="count=.* from 1 to 366"):
        FrameSpec(count=count)


def test_frames_reject_count_and_monthly_together():
    with pytest.raises(SpecError, match="not both"):
        FrameSpec(count=4, monthly=True)


@pytest.mark.parametrize("policy, ok", [("skip", True), ("fill", True), ("nearest", True), ("error", True),
                                        ("drop", False)])
def test_frames_empty_policy(policy, ok):
    if ok:
        assert FrameSpec.bins(2, empty=policy).empty == policy
    else:
        with pytest.raises(SpecError, match="empty='drop'"):
            FrameSpec(count=2, empty=policy)


def test_frames_windows_follow_bins_or_months():
    t = TemporalSpec("2022-01-01", "2022-04-01")
    assert len(FrameSpec.bins(9).windows(t)) == 9
    assert [w.start.month for w in FrameSpec.by_month().windows(t)] == [1, 2, 3]


# ----------------------------------------------------------------------------- SensorSpec


@pytest.mark.parametrize(
    "name, want",
    [("b2", "B02"), ("B2", "B02"), ("B02", "B02"), ("blue", "B02"), ("Red", "B04"), ("nir", "B08"),
     ("b8a", "B8A"), ("nir08", "B8A"), ("swir16", "B11"), ("B12", "B12"), ("scl", "SCL"), (" B3 ", "B03")],
)
def test_band_names_normalise(name, want):
    assert normalize_band(name) == want


@pytest.mark.parametrize("name", ["B13", "B0", "purple", "", "B123"])
def test_unknown_band_names_are_spec_errors(name):
    with pytest.raises(SpecError, match="not a Sentinel-2 band"):
        normalize_band(name)


def test_sensor_normalises_bands_in_order():
    assert SensorSpec(bands=["red", "b3", "B2"]).bands == ("B04", "B03", "B02")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"collection": "landsat-9"}, "collection='landsat-9'"),
        ({"bands": "B04"}, "non-empty list"),
        ({"bands": []}, "non-empty list"),
        ({"bands": ["B2", "blue"]}, "name a band twice"),
        ({"bands": ["B04", "B99"]}, "B99"),
        ({"scale_m": 0.49}, "scale_m"),
        ({"scale_m": 1000.01}, "scale_m"),
        ({"scale_m": math.nan}, "scale_m"),
        ({"cloudy_pct": -0.1}, "cloudy_pct"),
        ({"cloudy_pct": 100.1}, "cloudy_pct"),
        ({"fill_value": math.nan}, "fill_value"),
        ({"composite": "mean"}, "composite='mean'"),
    ],
)
def test_sensor_rejects_bad_fields(kwargs, word):
    with pytest.raises(SpecError, match=word):
        SensorSpec(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"scale_m": 0.5}, {"scale_m": 1000}, {"cloudy_pct": 0}, {"cloudy_pct": 100}, {"composite": "mosaic"},
     {"fill_value": -9999}],
)
def test_sensor_accepts_bounds(kwargs):
    s = SensorSpec(**kwargs)
    for k, v in kwargs.items():
        assert getattr(s, k) == v


def test_sensor_with_bands_keeps_everything_else():
    s = SensorSpec(scale_m=20, cloudy_pct=5, fill_value=-1, composite="mosaic").with_bands(("b4",))
    assert (s.bands, s.scale_m, s.cloudy_pct, s.fill_value, s.composite) == (("B04",), 20, 5, -1, "mosaic")


# ------------------------------------------------------------------- OutputSpec, InputPrep


def test_output_spec_modes():
    assert OutputSpec.pooled("max").pooling == "max"
    assert OutputSpec.grid().mode == "grid"
    with pytest.raises(SpecError, match="mode='raster'"):
        OutputSpec("raster")
    with pytest.raises(SpecError, match="pooling='median'"):
        OutputSpec("pooled", "median")


@pytest.mark.parametrize("max_tiles, ok", [(1, True), (4096, True), (0, False), (4097, False), (True, False),
                                           (2.0, False)])
def test_input_prep_max_tiles_bounds(max_tiles, ok):
    if ok:
        assert InputPrep.tile(max_tiles).max_tiles == max_tiles
    else:
        with pytest.raises(SpecError, match="max_tiles"):
            InputPrep("tile", max_tiles)


def test_input_prep_rejects_unknown_mode():
    with pytest.raises(SpecError, match="mode='crop'"):
        InputPrep("crop")
