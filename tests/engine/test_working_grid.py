"""The one working-grid rule: the same ground gives the same grid whatever CRS the place is
written in; grids are in ground metres; imagery lattices are used when they qualify.

Properties are checked over a seeded sweep of places (latitudes 0–70° in both hemispheres,
every longitude, points within metres of UTM zone borders) written in eight CRSs, and over
twelve national grids inside their areas of use.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import shapely
from eoembed.specs import BBox, Geometry, PointBuffer
from eoembed.working_grid import Lattice, choose_lattice, is_ground_crs, working_grid
from pyproj import CRS, Geod, Transformer

GEOD = Geod(ellps="WGS84")
GLOBAL_CRSS = ["EPSG:4326", "EPSG:3857", "EPSG:3395", "EPSG:6933", "ESRI:54009", "EPSG:8857"]


def _zone(lon: float) -> int:
    """Standard UTM zone, by hand (the sweep avoids the Norway/Svalbard exceptions)."""
    return int(math.floor((lon + 180.0) / 6.0)) % 60 + 1


def _utm(lon: float, lat: float, shift: int = 0) -> str:
    zone = (_zone(lon) - 1 + shift) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _places() -> list[tuple[float, float, float]]:
    """(lon, lat, buffer_m): random places, and places metres from zone borders."""
    rng = np.random.default_rng(20261201)
    out = []
    for _ in range(16):
        lat = float(rng.uniform(0.5, 70.0)) * (1 if rng.random() < 0.5 else -1)
        out.append((float(rng.uniform(-179.0, 179.0)), lat, float(rng.uniform(50, 2500))))
    for _ in range(10):  # within ±300 m of a zone border
        edge = -180.0 + 6.0 * int(rng.integers(1, 60))
        lat = float(rng.uniform(0.5, 70.0)) * (1 if rng.random() < 0.5 else -1)
        if 56 <= abs(lat) <= 64 or abs(lat) >= 72:
            lat = 40.0 * math.copysign(1, lat)
        dlon = float(rng.uniform(-300, 300)) / (111_320 * math.cos(math.radians(lat)))
        out.append((edge + dlon, lat, float(rng.uniform(50, 1000))))
    return out


PLACES = _places()


def _crss(lon: float, lat: float) -> list[str]:
    return GLOBAL_CRSS + [_utm(lon, lat), _utm(lon, lat, 1)]


@cache
def _tr(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def _in(crs: str, lon: float, lat: float) -> tuple[float, float]:
    return _tr("EPSG:4326", crs).transform(lon, lat)


@pytest.mark.parametrize("lon, lat, buffer_m", PLACES)
def test_a_point_gives_one_grid_in_every_crs(lon, lat, buffer_m):
    grids = [working_grid(PointBuffer(*_in(c, lon, lat), buffer_m, crs=c), 10.0) for c in _crss(lon, lat)]
    first = grids[0]
    assert all(g == first for g in grids), {g.crs: g.transform for g in grids}
    # by hand: the UTM zone of the point, round(2·buffer/10) pixels, edges on 10 m multiples,
    # centred on the point within half a pixel
    assert first.crs == _utm(lon, lat)
    n = round(2 * buffer_m / 10)
    assert (first.width, first.height) == (n, n)
    t = first.transform
    assert t.c % 10 == pytest.approx(0, abs=1e-6) or t.c % 10 == pytest.approx(10, abs=1e-6)
    x, y = _in(first.crs, lon, lat)
    assert abs(t.c + 5 * n - x) <= 5 + 1e-6 and abs(t.f - 5 * n - y) <= 5 + 1e-6


@pytest.mark.parametrize("lon, lat, buffer_m", PLACES[::3])
def test_a_polygon_gives_one_grid_in_every_crs(lon, lat, buffer_m):
    utm = _utm(lon, lat)
    x, y = _in(utm, lon, lat)
    square = shapely.segmentize(shapely.box(x - buffer_m, y - buffer_m, x + buffer_m, y + 0.7 * buffer_m),
                                buffer_m / 8)
    grids = []
    for c in _crss(lon, lat):
        tr = _tr(utm, c)
        geom = shapely.transform(square, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        grids.append(working_grid(Geometry(geom, crs=c), 10.0))
    assert all(g == grids[0] for g in grids), {g.crs: g.transform for g in grids}
    assert grids[0].crs == utm
    # the grid holds the square: edges snapped outwards to 10 m multiples
    left, bottom, right, top = grids[0].bounds
    assert left == pytest.approx(math.floor((x - buffer_m) / 10) * 10, abs=1e-6)
    assert top == pytest.approx(math.ceil((y + 0.7 * buffer_m) / 10) * 10, abs=1e-6)


@pytest.mark.parametrize("lon, lat", [(9.85, 57.2), (-83.95, 54.8), (151.2, -33.9), (-58.4, -34.6)])
def test_a_lonlat_box_and_its_mercator_twin_are_one_grid(lon, lat):
    # a lon/lat box is also an axis-aligned box in Mercator: the same ground
    d = 0.01
    lonlat = BBox(lon - d, lat - d, lon + d, lat + d)
    (x0, y0), (x1, y1) = _in("EPSG:3857", lon - d, lat - d), _in("EPSG:3857", lon + d, lat + d)
    assert working_grid(lonlat, 10.0) == working_grid(BBox(x0, y0, x1, y1, crs="EPSG:3857"), 10.0)


def test_buffer_m_is_ground_metres_in_web_mercator():
    # the case: 320 m around a point at 57°N written in EPSG:3857 covers 640 m of ground
    lon, lat = 9.85, 57.2
    g = working_grid(PointBuffer(*_in("EPSG:3857", lon, lat), 320, crs="EPSG:3857"), 10.0)
    assert g.crs == "EPSG:32632" and (g.width, g.height) == (64, 64) and g.res == (10.0, 10.0)
    left, bottom, right, top = g.bounds
    to_ll = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    (lo0, la0), (lo1, la1) = to_ll.transform(left, top), to_ll.transform(right, top)
    _, _, across = GEOD.inv(lo0, la0, lo1, la1)
    (lo2, la2) = to_ll.transform(left, bottom)
    _, _, down = GEOD.inv(lo0, la0, lo2, la2)
    # UTM's scale near its central meridian is 0.9996–1.0001: 640 m within 0.1 %
    assert across == pytest.approx(640, rel=1e-3) and down == pytest.approx(640, rel=1e-3)


@pytest.mark.parametrize(
    "crs, lon, lat, ground",
    [("EPSG:3857", 0.5, 0.2, False),  # Web Mercator is never a working CRS, even at the equator
     ("EPSG:3857", 9.85, 57.2, False), ("EPSG:4326", 9.85, 57.2, False), ("EPSG:32632", 9.85, 57.2, True),
     ("EPSG:32633", 9.85, 57.2, True),  # the neighbouring zone: scale 1.0008
     ("EPSG:32635", 9.85, 57.2, False),  # three zones away: scale ≈ 1.01
     ("EPSG:27700", -0.12, 51.5, True), ("EPSG:2154", 2.35, 48.86, True), ("EPSG:3035", 10.0, 52.0, True),
     ("EPSG:3035", 30.0, 35.0, False),  # equal-area: its meridians shrink 0.6 % that far from its centre
     ("ESRI:54009", 9.85, 57.2, False), ("EPSG:2056", 7.44, 46.95, True)],
)
def test_ground_crs_by_scale_factor(crs, lon, lat, ground):
    assert is_ground_crs(crs, lon, lat) is ground


def test_lattices_qualify_by_ground_units_pixel_size_and_zone():
    lon, lat = 9.85, 57.2
    place = PointBuffer(lon, lat, 320)
    fp = shapely.box(9, 56, 11, 58)
    mercator = Lattice("EPSG:3857", 10.0, (3.0, 4.0), fp, "merc")
    own20 = Lattice("EPSG:32632", 20.0, (1.5, 2.5), fp, "own20")
    other10 = Lattice("EPSG:32633", 10.0, (7.25, 3.5), fp, "other10")
    own10 = Lattice("EPSG:32632", 10.0, (549_892.697, 6_344_077.614), fp, "own10")
    elsewhere = Lattice("EPSG:32632", 10.0, (1.0, 1.0), shapely.box(20, 0, 21, 1), "elsewhere")
    assert choose_lattice(place, 10, [mercator]) is None
    assert choose_lattice(place, 10, [mercator, own20]).source == "own20"
    assert choose_lattice(place, 10, [own20, other10]).source == "other10"  # pixel size first
    assert choose_lattice(place, 10, [other10, own10, own20, mercator, elsewhere]).source == "own10"
    assert choose_lattice(place, 10, [own10, other10]) == choose_lattice(place, 10, [other10, own10])
    assert choose_lattice(place, 10, [elsewhere]) is None
    g = working_grid(place, 10, [other10, own10])
    assert g.crs == "EPSG:32632" and "own10" in g.basis
    for value, origin in ((g.transform.c, own10.origin[0]), (g.transform.f, own10.origin[1])):
        assert (value - origin) / 10 == pytest.approx(round((value - origin) / 10), abs=1e-6)
    # only the neighbouring zone's imagery: the place is carried into its CRS and lattice
    g = working_grid(place, 10, [other10])
    assert g.crs == "EPSG:32633" and (g.width, g.height) == (64, 64)
    assert ((g.transform.c - 7.25) / 10) % 1 == pytest.approx(0, abs=1e-6)
    # the same lattice for the same place written in every CRS
    grids = {working_grid(PointBuffer(*_in(c, lon, lat), 320, crs=c), 10, [other10, own10]) for c in
             GLOBAL_CRSS + ["EPSG:32632", "EPSG:32633", "EPSG:3035", "EPSG:25832"]}
    assert len(grids) == 1


def test_norway_and_svalbard_follow_the_sentinel2_tiles():
    assert working_grid(PointBuffer(5.3, 60.4, 100), 10).crs == "EPSG:32632"  # Bergen: zone 32V
    assert working_grid(PointBuffer(15.6, 78.2, 100), 10).crs == "EPSG:32633"  # Longyearbyen: 33X


NATIONAL = ["EPSG:27700", "EPSG:2154", "EPSG:3035", "EPSG:2056", "EPSG:3978", "EPSG:3577", "EPSG:5070",
            "EPSG:5880", "EPSG:2193", "EPSG:28992", "EPSG:3067", "EPSG:6677"]


def _national_places(code: str) -> list[tuple[float, float]]:
    """Three points inside the grid's area of use and one metres from the zone border nearest its middle."""
    area = CRS.from_user_input(code).area_of_use
    rng = np.random.default_rng(int(code.split(":")[1]))
    w, e = area.west + 0.25 * (area.east - area.west), area.east - 0.25 * (area.east - area.west)
    s, n = max(area.south + 0.25 * (area.north - area.south), -70), min(area.north - 0.25 * (area.north - area.south), 70)
    out = [(float(rng.uniform(w, e)), float(rng.uniform(s, n))) for _ in range(3)]
    lat = (s + n) / 2
    edge = round(((w + e) / 2 + 180) / 6) * 6 - 180
    out.append((edge + float(rng.uniform(-200, 200)) / (111_320 * math.cos(math.radians(lat))), lat))
    return out


@pytest.mark.parametrize("code", NATIONAL)
def test_national_grids_give_the_same_grid_as_lonlat_mercator_and_utm(code):
    for lon, lat in _national_places(code):
        crss = [code, "EPSG:4326", "EPSG:3857", _utm(lon, lat)]
        grids = {working_grid(PointBuffer(*_in(c, lon, lat), 400, crs=c), 10.0) for c in crss}
        assert len(grids) == 1, (lon, lat, grids)
        (g,) = grids
        assert g.crs == _utm(lon, lat) and (g.width, g.height) == (80, 80)


def test_tiles_on_one_lattice_give_one_grid_whichever_is_listed():
    place = PointBuffer(9.85, 57.2, 320)
    fp = shapely.box(9, 56, 11, 58)
    a = Lattice("EPSG:32632", 10.0, (549_892.6970314482, 6_344_077.6142594535), fp, "tile-a")
    b = Lattice("EPSG:32632", 10.0, (549_892.6970314482 - 109_800, 6_344_077.6142594535 + 98_760), fp, "tile-b")
    grids = [working_grid(place, 10, ls) for ls in ([a], [b], [a, b], [b, a])]
    assert all(g == grids[0] and g.transform == grids[0].transform for g in grids)
    assert all(g.basis == grids[2].basis for g in grids[2:])  # the smaller name, whatever the order
    col = (grids[0].transform.c - a.origin[0]) / 10
    assert abs(col - round(col)) < 1e-9
