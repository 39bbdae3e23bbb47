"""Pixel grids: snapping, working CRS, anchors and polygon masks, checked by coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import shapely.geometry
from affine import Affine
from eoembed.errors import SpecError
from eoembed.grid import MAX_SIDE_PX, GridSpec, roi_grid, roi_mask
from eoembed.specs import BBox, Geometry, PointBuffer
from pyproj import Transformer


@pytest.mark.parametrize(
    "buffer_m, scale, n", [(320, 10, 64), (320, 20, 32), (325, 10, 65), (1000, 60, 33), (5, 10, 1), (1, 10, 1)]
)
def test_point_buffer_grid_has_round_two_buffer_over_scale_pixels(buffer_m, scale, n):
    p = PointBuffer(12.49, 41.89, buffer_m)
    g = roi_grid(p, scale)
    assert (g.width, g.height) == (n, n)
    assert g.res == (scale, scale)
    # edges on the scale_m lattice of the UTM zone, centre within half a pixel of the point
    assert g.transform.c % scale == pytest.approx(0, abs=1e-6)
    assert g.transform.f % scale == pytest.approx(0, abs=1e-6)
    cx, cy = Transformer.from_crs(4326, 32633, always_xy=True).transform(12.49, 41.89)
    x0, y0, x1, y1 = g.bounds
    assert abs((x0 + x1) / 2 - cx) <= scale / 2 + 1e-6
    assert abs((y0 + y1) / 2 - cy) <= scale / 2 + 1e-6


@pytest.mark.parametrize(
    "lon, lat, epsg",
    [(12.49, 41.89, 32633), (-58.38, -34.60, 32721), (2.35, 48.86, 32631), (179.9, 0.5, 32660),
     (-180.0, 0.5, 32601), (0.0, -0.001, 32731)],
)
def test_lonlat_places_work_in_their_utm_zone(lon, lat, epsg):
    assert roi_grid(PointBuffer(lon, lat, 100), 10).crs == f"EPSG:{epsg}"
    box = BBox(lon - 0.001 if lon > -180 else lon, lat - 0.001, lon + 0.001, lat + 0.001)
    assert box.working_crs.to_epsg() == epsg


def test_projected_places_keep_their_own_crs():
    p = PointBuffer(500_000, 5_000_000, 100, crs="EPSG:32632")
    g = roi_grid(p, 10)
    assert g.crs == "EPSG:32632"
    assert g.transform == Affine(10, 0, 499_900, 0, -10, 5_000_100)


def test_bbox_grid_covers_the_box_with_snapped_edges():
    b = BBox(500_003, 5_000_004, 500_051, 5_000_026, crs="EPSG:32633")
    g = roi_grid(b, 10)
    # by hand: x edges floor(500003/10)*10 = 500000 .. ceil(500051/10)*10 = 500060 → 6 px;
    # y edges 5000000 .. 5000030 → 3 px
    assert g.transform == Affine(10, 0, 500_000, 0, -10, 5_000_030)
    assert (g.width, g.height) == (6, 3)
    assert g.bounds == (500_000, 5_000_000, 500_060, 5_000_030)


def test_bbox_on_the_lattice_gets_no_extra_pixel():
    g = roi_grid(BBox(500_000, 5_000_000, 500_100, 5_000_050, crs="EPSG:32633"), 10)
    assert (g.width, g.height) == (10, 5)


@pytest.mark.parametrize("anchor", [(3.5, 7.25), (790_236.04, 7_198_039.25), (-1.0, 12345.678)])
def test_anchor_puts_pixel_corners_on_the_anchor_lattice(anchor):
    p = PointBuffer(500_123.4, 5_000_456.7, 200, crs="EPSG:32633")
    g = roi_grid(p, 10, anchor=anchor)
    for value, origin in ((g.transform.c, anchor[0]), (g.transform.f, anchor[1])):
        steps = (value - origin) / 10
        assert abs(steps - round(steps)) < 1e-6
    assert (g.width, g.height) == (40, 40)
    assert abs(g.transform.c + 200 - 500_123.4) <= 5 + 1e-6  # still centred within half a pixel


def test_crs_override_builds_the_grid_in_that_crs():
    p = PointBuffer(12.49, 41.89, 320)
    g = roi_grid(p, 10, crs="EPSG:32632")
    assert g.crs == "EPSG:32632"
    cx, cy = Transformer.from_crs(4326, 32632, always_xy=True).transform(12.49, 41.89)
    assert abs(g.transform.c + 320 - cx) <= 5 + 1e-6
    assert abs(g.transform.f - 320 - cy) <= 5 + 1e-6


def test_too_many_pixels_is_a_spec_error():
    p = PointBuffer(12.49, 41.89, 25_000)
    with pytest.raises(SpecError, match=f"more than {MAX_SIDE_PX} a side"):
        roi_grid(p, 1)


def test_grid_pixel_centres_and_coarsen():
    g = GridSpec("EPSG:32633", Affine(10, 0, 1000, 0, -10, 2000), 4, 2)
    np.testing.assert_array_equal(g.xs(), [1005, 1015, 1025, 1035])
    np.testing.assert_array_equal(g.ys(), [1995, 1985])
    c = g.coarsen(1, 2)
    assert c.transform == Affine(20, 0, 1000, 0, -20, 2000)
    assert c.bounds == g.bounds


def test_roi_mask_matches_pixel_centre_containment():
    # an irregular polygon whose edges pass through no pixel centre (centres are at k + 0.5)
    poly = shapely.geometry.Polygon([(500_000.2, 5_000_000.3), (500_009.7, 5_000_001.1),
                                     (500_008.1, 5_000_009.6), (500_003.3, 5_000_006.2),
                                     (500_000.6, 5_000_008.8)])
    spec = Geometry(poly, crs="EPSG:32633")
    grid = GridSpec("EPSG:32633", Affine(1, 0, 500_000, 0, -1, 5_000_010), 10, 10)
    mask = roi_mask(spec, grid)
    xs, ys = np.meshgrid(grid.xs(), grid.ys())
    want = shapely.contains_xy(poly, xs, ys)
    assert mask.shape == (10, 10)
    np.testing.assert_array_equal(mask, want)
    assert 20 < want.sum() < 90  # a real partial mask


def test_roi_mask_of_a_rectangle_by_hand():
    poly = shapely.geometry.box(500_002, 5_000_003, 500_006, 5_000_007)  # cols 2..5, rows 3..6
    grid = GridSpec("EPSG:32633", Affine(1, 0, 500_000, 0, -1, 5_000_010), 10, 10)
    mask = roi_mask(Geometry(poly, crs="EPSG:32633"), grid)
    want = np.zeros((10, 10), bool)
    want[3:7, 2:6] = True
    np.testing.assert_array_equal(mask, want)


def test_roi_mask_of_a_sliver_falls_back_to_touched_pixels():
    poly = shapely.geometry.box(500_002.1, 5_000_000, 500_002.3, 5_000_010)  # misses every centre
    grid = GridSpec("EPSG:32633", Affine(1, 0, 500_000, 0, -1, 5_000_010), 10, 10)
    mask = roi_mask(Geometry(poly, crs="EPSG:32633"), grid)
    want = np.zeros((10, 10), bool)
    want[:, 2] = True
    np.testing.assert_array_equal(mask, want)


def test_roi_mask_reprojects_a_lonlat_polygon_onto_the_grid():
    lon0, lat0 = 12.49, 41.89
    poly = shapely.geometry.box(lon0, lat0, lon0 + 0.002, lat0 + 0.002)
    spec = Geometry(poly)
    grid = roi_grid(spec, 10)
    mask = roi_mask(spec, grid)
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    xs, ys = np.meshgrid(grid.xs(), grid.ys())
    lon, lat = to_ll.transform(xs, ys)
    want = shapely.contains_xy(poly, lon, lat)
    # the reprojected outline is densified, so at most pixels right on its edge may differ
    assert (mask != want).sum() <= 2
    assert want.sum() > 200


def test_boxes_and_points_mask_everything():
    p = PointBuffer(12.49, 41.89, 50)
    g = roi_grid(p, 10)
    assert roi_mask(p, g).all() and roi_mask(p, g).shape == (10, 10)
