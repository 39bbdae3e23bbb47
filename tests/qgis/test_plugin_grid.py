"""Grid outputs on real imagery: raster layers that overlay the tiles exactly, PCA-RGB styled.

Expected grids are computed by the engine (LocalProvider.grid_for, in the engine's own Python)
and compared by coordinates.
"""

from __future__ import annotations

import math

import pytest
from conftest import engine_run, memory_layer
from qgis.core import QgsProject
from test_plugin_run import _run, _tile_point

FEATURES = 8


def test_grid_run_overlays_the_imagery_exactly(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    pts = [_tile_point(r, fx, fy, "EPSG:4326") for fx, fy in ((0.3, 0.4), (0.6, 0.7))]
    layer = memory_layer("Point", "EPSG:4326", [f"POINT({p.x()} {p.y()})" for p in pts], names=["p0", "p1"])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path, output="grid")

    grids = engine_run("""
        import eoembed, shapely
        from eoembed.features import place_from_geometry
        from eoembed.providers import open_provider
        provider = open_provider("local", paths=[ARGS["tile"]])
        out = []
        for x, y in ARGS["pts"]:
            place = place_from_geometry("p", shapely.Point(x, y), "EPSG:4326", 160.0)
            g = provider.grid_for(place.spatial, eoembed.SensorSpec(scale_m=10.0))
            out.append([g.transform.a, g.transform.c, g.transform.e, g.transform.f, g.width, g.height])
        print(json.dumps(out))
    """, tile=r.source(), pts=[[p.x(), p.y()] for p in pts])
    cell = 4  # rcf grid_cell: one embedding pixel per 4×4 image pixels
    rasters = {lyr.name(): lyr for lyr in task.layers}
    assert len(rasters) == 4  # an embedding layer and a PCA-RGB layer per feature
    for name, (a, c, e, f, gw, gh) in zip(("p0", "p1"), grids):
        want = type("T", (), {"a": a * cell, "c": c, "e": e * cell, "f": f})
        w, h = math.ceil(gw / cell), math.ceil(gh / cell)
        emb, pca = rasters[f"{name} — embedding"], rasters[f"{name} — PCA-RGB"]
        for lyr in (emb, pca):
            assert lyr.crs().authid() == r.crs().authid()  # the tile's UTM zone, not the layer's CRS
            assert (lyr.width(), lyr.height()) == (w, h)
            e = lyr.extent()
            assert (e.xMinimum(), e.yMaximum()) == pytest.approx((want.c, want.f), abs=1e-6)
            assert (e.xMaximum(), e.yMinimum()) == pytest.approx((want.c + w * want.a, want.f + h * want.e), abs=1e-6)
            assert lyr.rasterUnitsPerPixelX() == pytest.approx(40.0)
        # the grid sits on the tile's own pixel lattice
        te = r.extent()
        assert ((want.c - te.xMinimum()) / 10.0) == pytest.approx(round((want.c - te.xMinimum()) / 10.0), abs=1e-6)
        assert ((te.yMaximum() - want.f) / 10.0) == pytest.approx(round((te.yMaximum() - want.f) / 10.0), abs=1e-6)
        assert emb.bandCount() == FEATURES and pca.bandCount() == 3
        assert pca.renderer().type() == "multibandcolor"
        assert (pca.renderer().redBand(), pca.renderer().greenBand(), pca.renderer().blueBand()) == (1, 2, 3)
    tree = QgsProject.instance().layerTreeRoot()
    group = tree.findGroup("eoembed — rcf")
    assert {n.layer().id() for n in group.findLayers()} >= {lyr.id() for lyr in task.layers}
    assert all(tree.findLayer(lyr.id()).isVisible() == lyr.name().endswith("PCA-RGB") for lyr in task.layers)


def test_grid_over_selection_extent_is_one_raster_covering_all_features(plugin, project_rasters, tmp_path):
    r = project_rasters[0]
    crs = r.crs().authid()
    pts = [_tile_point(r, fx, fy, crs) for fx, fy in ((0.3, 0.3), (0.6, 0.65))]
    layer = memory_layer("Point", crs, [f"POINT({p.x()} {p.y()})" for p in pts])
    QgsProject.instance().addMapLayer(layer)
    task = _run(plugin, layer, tmp_path, output="grid_extent")
    emb = next(lyr for lyr in task.layers if lyr.name().endswith("embedding"))
    e = emb.extent()
    for p in pts:  # every buffered square lies inside the one raster
        assert e.xMinimum() <= p.x() - 160 and p.x() + 160 <= e.xMaximum()
        assert e.yMinimum() <= p.y() - 160 and p.y() + 160 <= e.yMaximum()
    assert emb.crs().authid() == crs
