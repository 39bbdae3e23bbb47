"""Precomputed products (AlphaEarth, Tessera, Copernicus-Embed) read from a loopback HTTP server
(its own process) that serves files the tests write in the published layouts.

The truth is a field of known int8 vectors, constant on 8×8-pixel blocks, so values can be
checked by coordinates: after de-quantisation, across tiles, zones and layouts.
"""

from __future__ import annotations

import csv
import json
import math
import time

import numpy as np
import pytest
import rasterio
import shapely
import shapely.wkt
from affine import Affine
from eoembed import api
from eoembed.embedders.registry import clear_cache
from eoembed.errors import CapabilityError, ProviderError, WeightsError
from eoembed.products.alphaearth import dequantize
from eoembed.products.tile_index import clear_indexes
from eoembed.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
from pyproj import Transformer
from rasterio.warp import Resampling, reproject, transform_bounds
from test_provider_stac import Server

N = 256  # truth tile side in pixels (2.56 km at 10 m)
BLOCK = 8
LAT = 45.5
Y2022, Y2021, Y2020 = TemporalSpec.year(2022), TemporalSpec.year(2021), TemporalSpec.year(2020)


def _truth(rng: np.random.Generator) -> np.ndarray:
    blocks = rng.integers(-127, 128, size=(64, N // BLOCK, N // BLOCK)).astype(np.int8)
    t = np.repeat(np.repeat(blocks, BLOCK, axis=1), BLOCK, axis=2)
    t[:, :BLOCK, :BLOCK] = -128  # a nodata block at the top-left corner
    return t


def _write(path, data, crs, transform, nodata=-128):
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", dtype=data.dtype, count=c, width=w, height=h, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=32, blockysize=32) as dst:
        dst.write(data)
    return path


def _footprint(crs, transform, h, w):
    left, top = transform * (0, 0)
    right, bottom = transform * (w, h)
    return shapely.box(*transform_bounds(crs, "EPSG:4326", min(left, right), min(top, bottom),
                                         max(left, right), max(top, bottom), densify_pts=21))


def _vrt(path, tiff_name, crs, transform, h, w):
    bands = "".join(
        f'<VRTRasterBand dataType="Int8" band="{b}"><NoDataValue>-128</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{tiff_name}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
        f"</SimpleSource></VRTRasterBand>" for b in range(1, 65))
    gt = ", ".join(repr(v) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    wkt = rasterio.crs.CRS.from_user_input(crs).to_wkt()
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{wkt}</SRS>'
                    f"<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("products")
    data = root / "data"
    (root / "catalog.json").write_text(json.dumps({"collections": [], "items": []}))
    rng = np.random.default_rng(14)
    truth = _truth(rng)
    to32 = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    xb, yb = to32.transform(12.0, LAT)
    x0 = math.floor((xb - N * 10 / 2) / 80) * 80  # the zone border runs through the middle of the tile
    y0 = math.floor((yb + N * 10 / 2) / 80) * 80
    t32 = Affine(10, 0, x0, 0, -10, y0)
    rows: dict[str, list[dict]] = {"bucket": [], "sc": []}

    def add(kind, year, rel, crs, transform, h, w):
        zone = rel.split("/")[1]
        prefix = "gs://alphaearth_foundations/satellite_embedding/v1/annual/" if kind == "bucket" else \
            "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/"
        rows[kind].append({"WKT": _footprint(crs, transform, h, w).wkt, "path": prefix + rel, "year": year,
                           "utm_zone": zone})

    # 2022: the truth as one tile (bucket) and as a bottom-up COG with its .vrt (Source Cooperative)
    rel = "2022/32N/truth-0000000000-0000000000.tiff"
    _write(data / "bucket" / rel, truth, "EPSG:32632", t32)
    add("bucket", 2022, rel, "EPSG:32632", t32, N, N)
    up = Affine(10, 0, x0, 0, 10, y0 - N * 10)  # bottom-up: first row is the southern edge
    tif = data / "sc" / rel
    _write(tif, truth[:, ::-1, :].copy(), "EPSG:32632", up)
    _vrt(tif.with_suffix(".vrt"), tif.name, "EPSG:32632", up, N, N)
    add("sc", 2022, rel, "EPSG:32632", t32, N, N)
    # 2018: the truth on a lattice half a pixel off the 10 m multiples
    rel = "2018/32N/shifted-0000000000-0000000000.tiff"
    ts = Affine(10, 0, x0 + 5, 0, -10, y0 - 5)
    _write(data / "bucket" / rel, truth, "EPSG:32632", ts)
    add("bucket", 2018, rel, "EPSG:32632", ts, N, N)
    # 2021: the same truth split into 4 tiles of 128 px
    h = N // 2
    for r in (0, 1):
        for c in (0, 1):
            rel = f"2021/32N/split-{r * h:010d}-{c * h:010d}.tiff"
            tt = t32 * Affine.translation(c * h, r * h)
            _write(data / "bucket" / rel, truth[:, r * h:(r + 1) * h, c * h:(c + 1) * h].copy(), "EPSG:32632", tt)
            add("bucket", 2021, rel, "EPSG:32632", tt, h, h)
    # 2020: the truth cut at 12°E; the east part only in zone 33N (warped there, nearest)
    cols = np.arange(N) + 0.5
    lon_c, _ = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform(
        *(t32 * np.meshgrid(cols, cols)))
    west = truth.copy()
    west[:, lon_c >= 12.0] = -128
    rel = "2020/32N/west-0000000000-0000000000.tiff"
    _write(data / "bucket" / rel, west, "EPSG:32632", t32)
    add("bucket", 2020, rel, "EPSG:32632", t32, N, N)
    l33, b33, r33, t33 = transform_bounds("EPSG:32632", "EPSG:32633", x0, y0 - N * 10, x0 + N * 10, y0)
    e33 = Affine(10, 0, math.floor(l33 / 10) * 10, 0, -10, math.ceil(t33 / 10) * 10)
    w33, h33 = math.ceil((r33 - e33.c) / 10), math.ceil((e33.f - b33) / 10)
    east = np.full((64, h33, w33), np.nan, np.float32)
    reproject(np.where(truth == -128, np.nan, truth.astype(np.float32)), east, src_transform=t32,
              src_crs="EPSG:32632", dst_transform=e33, dst_crs="EPSG:32633", src_nodata=np.nan,
              dst_nodata=np.nan, resampling=Resampling.nearest)
    lon33, _ = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(
        *(e33 * np.meshgrid(np.arange(w33) + 0.5, np.arange(h33) + 0.5)))
    east[:, lon33 < 11.9995] = np.nan
    east = np.where(np.isnan(east), -128, east).astype(np.int8)
    rel = "2020/33N/east-0000000000-0000000000.tiff"
    _write(data / "bucket" / rel, east, "EPSG:32633", e33)
    add("bucket", 2020, rel, "EPSG:32633", e33, h33, w33)
    for kind, items in rows.items():
        with open(data / kind / "aef_index.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=["WKT", "path", "year", "utm_zone"])
            wr.writeheader()
            wr.writerows(items)
    server = Server(root, name="products")
    yield {"root": root, "truth": truth, "t32": t32, "x0": x0, "y0": y0, "server": server,
           "bucket": server.base + "/data/bucket", "sc": server.base + "/data/sc", "data": data}
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("EOEMBED_PRODUCTS_CACHE", str(tmp_path / "cache"))
    clear_indexes()
    clear_cache()
    yield
    clear_cache()


def _box(w, col0, row0, ncols, nrows):
    t = w["t32"]
    (x0, y0), (x1, y1) = t * (col0, row0), t * (col0 + ncols, row0 + nrows)
    return BBox(x0, y1, x1, y0, crs="EPSG:32632")


def _ae(w, layout="bucket", **kw):
    return {"route": "cog", "layout": layout, "url": w["sc" if layout == "source-coop" else layout], "backoff": 0.01,
            **kw}


def _truth_on(w, grid_emb):
    """The de-quantised truth at the pixel centres of a grid embedding (NaN for nodata)."""
    g = grid_emb.grid
    inv = ~w["t32"]
    cols, rows = inv * np.meshgrid(g.xs(), g.ys())
    r, c = np.floor(rows).astype(int), np.floor(cols).astype(int)
    raw = w["truth"][:, r, c]
    return np.where(raw == -128, np.nan, dequantize(raw)), rows, cols


def test_cards_say_precomputed_with_years_licence_and_attribution():
    ae = api.describe_model("gse")
    assert (ae.id, ae.dim, ae.precomputed, ae.scale_m) == ("alphaearth", 64, True, 10.0)
    assert ae.config["years"] == [2017, 2025] and ae.license == "CC-BY-4.0"
    assert "Google DeepMind" in ae.attribution and ae.weights.startswith("none")
    ts = api.describe_model("tessera")
    assert (ts.dim, ts.precomputed, ts.config["years"]) == (128, True, [2017, 2025])
    ce = api.describe_model("copernicus-embed")
    assert (ce.dim, ce.precomputed, ce.config["years"]) == (768, True, [2021, 2021])
    assert "0.25°" in ce.config["resolution"] and ce.to_dict()["attribution"]
    assert {"alphaearth", "tessera", "copernicus-embed"} <= set(api.list_models())


def test_dequantisation_constants():
    v = np.array([-127, -1, 0, 1, 64, 127], np.int8)
    expect = np.sign(v) * (np.abs(v.astype(float)) / 127.5) ** 2
    assert np.allclose(dequantize(v), expect)
    assert dequantize(np.array([127], np.int8))[0] == pytest.approx((127 / 127.5) ** 2)


def test_grid_values_nodata_lattice_and_range_reads(world):
    w = world
    mark = w["server"].mark()
    t0 = time.perf_counter()
    e = api.get_embedding("alphaearth", _box(w, 2, 3, 20, 16), Y2022, output=OutputSpec.grid(),
                          model_config=_ae(w))
    wall = time.perf_counter() - t0
    g = e.grid
    assert g.crs == "EPSG:32632" and (g.width, g.height) == (20, 16)
    assert g.transform == w["t32"] * Affine.translation(2, 3)  # the product's own lattice
    want, _, _ = _truth_on(w, e)
    got = e.to_numpy()
    nod = np.isnan(want).all(axis=0)
    assert nod.sum() == (BLOCK - 3) * (BLOCK - 2)  # the nodata block stays nodata, never zeros
    assert np.isnan(got[:, nod]).all()
    np.testing.assert_array_equal(got[:, ~nod], want[:, ~nod])
    served = [r for r in w["server"].since(mark) if r["path"].endswith(".tiff")]
    size = (w["data"] / "bucket/2022/32N/truth-0000000000-0000000000.tiff").stat().st_size
    got_bytes = sum(r["bytes"] for r in served)
    assert all(r["range"] for r in served if r["method"] == "GET")
    assert got_bytes < size / 10, (got_bytes, size)
    assert e.meta["source"]["tiles"] and e.meta["source"]["year"] == 2022
    assert e.meta["product"]["attribution"].startswith("The AlphaEarth")
    print(f"640 m-class place: {got_bytes} bytes of {size}, {wall:.3f} s")


def test_a_lon_lat_place_lands_on_the_tiles_own_lattice(world):
    w = world
    ts = w["t32"] * Affine.translation(0.5, 0.5)  # the 2018 tile: origin (x0 + 5, y0 - 5)
    lon, lat = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform(*(ts * (100, 100)))
    e = api.get_embedding("alphaearth", PointBuffer(lon, lat, 160), TemporalSpec.year(2018),
                          output=OutputSpec.grid(), model_config=_ae(w))
    g = e.grid
    assert g.crs == "EPSG:32632" and (g.width, g.height) == (32, 32)
    col, row = ~ts * (g.transform.c, g.transform.f)
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
    c0, r0 = int(round(col)), int(round(row))
    want = dequantize(w["truth"][:, r0:r0 + 32, c0:c0 + 32])
    np.testing.assert_array_equal(e.to_numpy(), want)


def test_pooled_mean_and_max_mask_nodata_and_polygon(world):
    w = world
    place = _box(w, 0, 0, 16, 16)
    cfg = _ae(w)
    grid = api.get_embedding("alphaearth", place, Y2022, output=OutputSpec.grid(), model_config=cfg).to_numpy()
    ok = ~np.isnan(grid).any(axis=0)
    mean = api.get_embedding("alphaearth", place, Y2022, model_config=cfg).to_numpy()
    mx = api.get_embedding("alphaearth", place, Y2022, output=OutputSpec.pooled("max"), model_config=cfg).to_numpy()
    np.testing.assert_allclose(mean, grid[:, ok].mean(axis=1), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(mx, grid[:, ok].max(axis=1), rtol=1e-6, atol=1e-6)
    assert ok.sum() == 16 * 16 - 64
    # a triangle: only pixel centres inside it count
    t = w["t32"]
    (ax, ay), (bx, by), (cx, cy) = t * (8, 8), t * (16, 8), t * (8, 16)
    tri = shapely.Polygon([(ax, ay), (bx, by), (cx, cy)])
    from eoembed.specs import Geometry

    poly = api.get_embedding("alphaearth", Geometry(tri.wkt, crs="EPSG:32632"), Y2022, model_config=cfg).to_numpy()
    inside = [(r, c) for r in range(8, 16) for c in range(8, 16) if tri.contains(shapely.Point(t * (c + .5, r + .5)))]
    expect = np.mean([grid[:, r, c] for r, c in inside], axis=0)
    np.testing.assert_allclose(poly, expect, rtol=1e-5, atol=2e-6)


def test_a_product_grid_is_ready_for_similarity_and_clustering(world):
    from eoembed.analysis import cosine_similarity_map, kmeans, reference_at

    w = world
    e = api.get_embedding("alphaearth", _box(w, 0, 0, 32, 32), Y2022, output=OutputSpec.grid(), model_config=_ae(w))
    x, y = w["t32"] * (20.5, 20.5)
    sim = cosine_similarity_map(e, reference_at(e, x, y)).to_numpy()[0]
    assert sim[20, 20] == pytest.approx(1.0, abs=1e-5) and np.isnan(sim[0, 0])  # nodata stays out
    assert np.allclose(sim[16:24, 16:24], 1.0, atol=1e-5)  # the same 8×8 block of the truth
    labels = kmeans(e, 3).to_numpy()[0]
    assert np.isnan(labels[0, 0]) and np.isfinite(labels[8:, 8:]).all()


def test_four_tiles_mosaic_equals_the_single_tile(world):
    w = world
    place = _box(w, N // 2 - 10, N // 2 - 7, 20, 14)  # the corner where 4 tiles meet
    one = api.get_embedding("alphaearth", place, Y2022, output=OutputSpec.grid(), model_config=_ae(w))
    four = api.get_embedding("alphaearth", place, Y2021, output=OutputSpec.grid(), model_config=_ae(w))
    assert four.grid == one.grid
    np.testing.assert_array_equal(four.to_numpy(), one.to_numpy())
    assert len(four.meta["source"]["tiles"]) == 4


def test_place_across_two_zones_mosaics_without_a_seam(world):
    w = world
    col = int(round((~w["t32"] * Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(
        12.0, LAT))[0]))
    place = _box(w, col - 30, N // 2 - 20, 56, 40)  # centre west of 12°E: working zone 32N
    e = api.get_embedding("alphaearth", place, Y2020, output=OutputSpec.grid(), model_config=_ae(w))
    assert e.grid.crs == "EPSG:32632" and e.grid.transform.c == w["t32"].c + (col - 30) * 10
    got = e.to_numpy()
    assert not np.isnan(got).any()  # no seam row or column, no hole
    want, rows, cols = _truth_on(w, e)
    inner = (np.abs(rows % BLOCK - BLOCK / 2) < BLOCK / 2 - 1.5) & (np.abs(cols % BLOCK - BLOCK / 2) < BLOCK / 2 - 1.5)
    np.testing.assert_array_equal(got[:, inner], want[:, inner])
    assert {t.split("/")[-2] for t in e.meta["source"]["tiles"]} == {"32N", "33N"}


def test_source_cooperative_bottom_up_vrt_gives_the_same_vectors(world):
    w = world
    place = _box(w, 30, 40, 24, 24)
    a = api.get_embedding("alphaearth", place, Y2022, output=OutputSpec.grid(), model_config=_ae(w))
    mark = w["server"].mark()
    b = api.get_embedding("gse", place, Y2022, output=OutputSpec.grid(), model_config=_ae(w, "source-coop"))
    assert b.grid == a.grid
    np.testing.assert_array_equal(b.to_numpy(), a.to_numpy())
    paths = [r["path"] for r in w["server"].since(mark)]
    assert any(p.endswith(".vrt") for p in paths) and b.meta["source"]["layout"] == "source-coop"


def test_index_is_downloaded_once_and_never_listed(world, tmp_path):
    w = world
    mark = w["server"].mark()
    for i in range(3):
        api.get_embedding("alphaearth", _box(w, 40 + 20 * i, 40, 10, 10), Y2022, model_config=_ae(w))
    clear_indexes()  # a new process: the parsed index is gone, the disk copy stays
    api.get_embedding("alphaearth", _box(w, 100, 100, 10, 10), Y2022, model_config=_ae(w))
    reqs = w["server"].since(mark)
    assert sum(r["path"].endswith("aef_index.csv") for r in reqs) == 1
    assert not any(r["path"].endswith("/") for r in reqs)
    assert list((tmp_path / "cache").rglob("aef_index.csv"))


def test_missing_year_tile_and_transient_failures(world):
    w = world
    with pytest.raises(CapabilityError, match="give one year"):
        api.get_embedding("alphaearth", _box(w, 0, 0, 4, 4), TemporalSpec("2021-06-01", "2022-06-01"),
                          model_config=_ae(w))
    with pytest.raises(CapabilityError, match="give one year"):
        api.get_embedding("alphaearth", _box(w, 0, 0, 4, 4), model_config=_ae(w))  # no window at all
    with pytest.raises(CapabilityError, match="2017–2025"):
        api.get_embedding("alphaearth", _box(w, 0, 0, 4, 4), TemporalSpec.year(2016), model_config=_ae(w))
    with pytest.raises(ProviderError, match=r"no tile for the place at .*in 2019"):
        api.get_embedding("alphaearth", _box(w, 0, 0, 4, 4), TemporalSpec.year(2019), model_config=_ae(w))
    with pytest.raises(ProviderError, match="nodata"):
        api.get_embedding("alphaearth", _box(w, 0, 0, 4, 4), Y2022, model_config=_ae(w))
    w["server"].fault("/data/bucket/aef_index.csv", status=503, count=2)
    e = api.get_embedding("alphaearth", _box(w, 20, 20, 4, 4), Y2022, model_config=_ae(w))
    assert e.dim == 64


def test_products_and_on_the_fly_models_in_one_export(world, tmp_path, make_tiff):
    w = world
    # imagery for rcf on the same lattice
    img = make_tiff("T32_20220601.tif", np.random.default_rng(1).integers(1, 3000, (10, 64, 64)).astype(np.float32),
                    crs="EPSG:32632", transform=w["t32"] * Affine.translation(16, 16))
    places = {"a": _box(w, 20, 20, 16, 16), "b": _box(w, 40, 30, 12, 12)}
    summary = api.export_batch(places, Y2022, ["rcf", "alphaearth"], tmp_path / "out", outputs="pooled",
                               source=str(img), model_config={"alphaearth": _ae(w)}, workers=2)
    assert summary.failed == 0 and summary.ok == 4, summary.failures
    single = api.get_embedding("alphaearth", places["b"], Y2022, model_config=_ae(w)).to_numpy()
    import pyarrow.parquet as pq

    files = sorted((tmp_path / "out").rglob("*.parquet"))
    table = [t for t in (pq.read_table(f).to_pylist() for f in files) if t and len(t[0].get("embedding", [])) == 64]
    rows = {r["id"]: r for t in table for r in t}
    np.testing.assert_allclose(np.asarray(rows["b"]["embedding"], np.float32), single, rtol=1e-6, atol=1e-6)


def test_product_only_export_on_dask_needs_no_imagery(world, tmp_path):
    distributed = pytest.importorskip("distributed")
    w = world
    places = {"a": _box(w, 20, 20, 16, 16), "b": _box(w, 40, 30, 12, 12)}
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            summary = api.export_batch(places, Y2022, "alphaearth", tmp_path / "out", outputs="both",
                                       executor="dask", scheduler=client, model_config={"alphaearth": _ae(w)})
    finally:
        cluster.close()
    assert summary.failed == 0 and summary.ok == 4, summary.failures
    tifs = sorted((tmp_path / "out").rglob("*.tif"))
    assert tifs
    with rasterio.open(tifs[0]) as src:
        assert src.crs.to_epsg() == 32632 and src.count == 64 and src.res == (10.0, 10.0)


def test_cli_embeds_with_a_product_and_its_options(world, tmp_path, capsys):
    from eoembed.cli import main

    w = world
    t = w["t32"]
    (x, y) = t * (50.5, 60.5)
    gj = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32632"}},
          "features": [{"type": "Feature", "properties": {"name": "p1"},
                        "geometry": {"type": "Point", "coordinates": [x, y]}}]}
    src = tmp_path / "places.geojson"
    src.write_text(json.dumps(gj))
    rc = main(["embed", "-i", str(src), "-m", "gse", "--year", "2022", "--buffer", "40", "-o", str(tmp_path / "o"),
               "--model-option", "route=cog", "--model-option", "layout=bucket", "--model-option",
               f"url={w['bucket']}", "-q"])
    assert rc == 0
    assert list((tmp_path / "o").glob("*.parquet"))
    assert main(["models"]) == 0
    assert "precomputed" in capsys.readouterr().out


def test_qgis_worker_embeds_a_product_without_imagery(world, tmp_path):
    """The plugin's worker script (engine side of the QGIS plugin) runs a product job whose
    imagery source is empty: the product reads its own data."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    w = world
    t = w["t32"]
    places = [{"id": f"p{i}", "wkt": shapely.Point(*(t * (c, c))).wkt} for i, c in enumerate((40, 80))]
    job = {"name": "aef", "out_dir": str(tmp_path / "out"), "places": places, "crs": "EPSG:32632",
           "buffer_m": 50.0, "model": "alphaearth", "output": "pooled", "source": {"kind": "local", "paths": []},
           "temporal": {"start": "2022-01-01", "end": "2023-01-01"}, "model_config": _ae(w)}
    (tmp_path / "job.json").write_text(json.dumps(job))
    worker = Path(__file__).parents[2] / "qgis_plugin" / "eoembed_qgis" / "worker.py"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "engine"),
           "EOEMBED_PRODUCTS_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, str(worker), str(tmp_path / "job.json")], capture_output=True, text=True,
                         env=env, timeout=300)
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    result = [e for e in events if e["event"] == "result"]
    assert run.returncode == 0 and result, run.stdout[-2000:] + run.stderr[-2000:]
    assert result[0]["dim"] == 64 and Path(result[0]["pooled"]).is_file()


# ------------------------------------------------------------------------------------- Tessera
@pytest.fixture(scope="module")
def tessera_store(world):
    import zarr

    w = world
    root = w["data"] / "tessera.zarr"
    rng = np.random.default_rng(7)
    h = wd = 128
    q = np.repeat(np.repeat(rng.integers(-127, 128, (2, 128, h // 8, wd // 8)), 8, 2), 8, 3).astype(np.int8)
    s = rng.uniform(0.001, 0.01, (2, h, wd)).astype(np.float32)
    s[1, :32, :32] = np.nan  # water
    s[1, :32, 32:64] = np.inf  # land not processed yet
    t = w["t32"] * Affine.translation(64, 64)
    grp = zarr.open_group(str(root), mode="w", zarr_format=3)
    grp.attrs.update({"zarr_conventions": [{"name": "geoemb:"}]})
    z = grp.create_group("utm32")
    z.attrs.update({"proj:code": "EPSG:32632", "spatial:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                    "spatial:dimensions": ["y", "x"]})
    emb = z.create_array("embeddings", shape=q.shape, dtype="int8", chunks=(1, 128, 32, 32), shards=(1, 128, 64, 64))
    emb[:] = q
    sc = z.create_array("scales", shape=s.shape, dtype="float32", chunks=(1, 32, 32), shards=(1, 64, 64),
                        fill_value=float("nan"))
    sc[:] = s
    z.create_array("time", shape=(2,), dtype="int32")[:] = [2021, 2022]
    z.create_array("x", shape=(wd,), dtype="float64")[:] = t.c + 10 * (np.arange(wd) + 0.5)
    z.create_array("y", shape=(h,), dtype="float64")[:] = t.f - 10 * (np.arange(h) + 0.5)
    # the published layout: a group per zone and hemisphere ("32N"), axes found by their names
    # (here the band axis last), years as dates, CRS under "crs", the lattice only in x/y
    pub = zarr.open_group(str(w["data"] / "published.zarr"), mode="w", zarr_format=3)
    g = pub.create_group("32N")
    g.attrs.update({"crs": "EPSG:32632"})
    e2 = g.create_array("embeddings", shape=(2, h, wd, 128), dtype="int8", chunks=(1, 32, 32, 128),
                        dimension_names=("time", "y", "x", "band"))
    e2[:] = np.moveaxis(q, 1, -1)
    s2 = g.create_array("scales", shape=s.shape, dtype="float32", chunks=(1, 32, 32), fill_value=float("nan"),
                        dimension_names=("time", "y", "x"))
    s2[:] = s
    g.create_array("time", shape=(2,), dtype="int32", attributes={"units": "days since 1970-01-01"})[:] = [
        (np.datetime64(f"{y}-01-01") - np.datetime64("1970-01-01")).astype(int) for y in (2021, 2022)]
    g.create_array("x", shape=(wd,), dtype="float64")[:] = t.c + 10 * (np.arange(wd) + 0.5)
    g.create_array("y", shape=(h,), dtype="float64")[:] = t.f - 10 * (np.arange(h) + 0.5)
    return {"q": q, "s": s, "t": t, "url": w["server"].base + "/data/tessera.zarr", "root": root,
            "published": w["server"].base + "/data/published.zarr"}


def test_tessera_zarr_values_by_coordinates_and_chunk_reads(world, tessera_store):
    w, ts = world, tessera_store
    t = ts["t"]
    (x0, y0), (x1, y1) = t * (40, 50), t * (60, 66)
    place = BBox(x0, y1, x1, y0, crs="EPSG:32632")
    mark = w["server"].mark()
    e = api.get_embedding("tessera", place, Y2022, output=OutputSpec.grid(), model_config={"store": ts["url"]})
    assert e.grid.transform == t * Affine.translation(40, 50) and e.dim == 128
    want = ts["q"][1, :, 50:66, 40:60].astype(np.float32) * ts["s"][1, 50:66, 40:60]
    np.testing.assert_allclose(e.to_numpy(), want, rtol=1e-6, atol=1e-6)
    reqs = w["server"].since(mark)
    shard = sum(f.stat().st_size for f in (ts["root"] / "utm32" / "embeddings").rglob("*") if f.is_file())
    assert sum(r["bytes"] for r in reqs) < shard / 4
    pooled = api.get_embedding("tessera", place, Y2021, model_config={"store": ts["url"]}).to_numpy()
    np.testing.assert_allclose(pooled, (ts["q"][0, :, 50:66, 40:60] * ts["s"][0, 50:66, 40:60]).reshape(128, -1)
                               .mean(1), rtol=1e-5, atol=2e-6)
    same = api.get_embedding("tessera", place, Y2022, output=OutputSpec.grid(),
                             model_config={"store": ts["published"]})
    assert same.grid == e.grid and same.meta["source"]["groups"] == ["32N"]
    np.testing.assert_allclose(same.to_numpy(), e.to_numpy(), rtol=1e-6, atol=1e-6)


def test_tessera_gaps_are_one_sentence_naming_place_and_year(world, tessera_store):
    ts = tessera_store
    t = ts["t"]

    def box(c0, r0, n=8):
        (x0, y0), (x1, y1) = t * (c0, r0), t * (c0 + n, r0 + n)
        return BBox(x0, y1, x1, y0, crs="EPSG:32632")

    with pytest.raises(ProviderError, match=r"no embeddings for the place at .*°E, .*°N in 2022: it is not embedded"
                                            r" there \(water, or too few clear observations that year\)"):
        api.get_embedding("tessera", box(4, 4), Y2022, model_config={"store": ts["url"]})
    with pytest.raises(ProviderError, match="in 2022: that land is not processed yet"):
        api.get_embedding("tessera", box(40, 4), Y2022, model_config={"store": ts["url"]})
    assert "cambridge.zarr" in api.describe_model("tessera").weights  # the published copy by default


def test_tessera_legacy_tiles(world, tessera_store, tmp_path):
    w, ts = world, tessera_store
    to_ll = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    t = ts["t"]
    lon, lat = to_ll.transform(*(t * (70, 70)))
    name = f"grid_{math.floor(lon * 10) / 10 + 0.05:.2f}_{math.floor(lat * 10) / 10 + 0.05:.2f}"
    base = w["data"] / "tessera-tiles"
    (base / "2022" / name).mkdir(parents=True)
    np.save(base / "2022" / name / f"{name}.npy", np.moveaxis(ts["q"][1], 0, -1).copy())
    np.save(base / "2022" / name / f"{name}_scales.npy", ts["s"][1])
    (base / "landmasks").mkdir()
    _write(base / "landmasks" / f"{name}.tiff", np.ones((1, 128, 128), np.uint8), "EPSG:32632", t, nodata=None)
    (x0, y0), (x1, y1) = t * (66, 68), t * (74, 72)
    place = BBox(x0, y1, x1, y0, crs="EPSG:32632")
    e = api.get_embedding("tessera", place, Y2022, output=OutputSpec.grid(),
                          model_config={"tiles": w["server"].base + "/data/tessera-tiles"})
    want = ts["q"][1, :, 68:72, 66:74].astype(np.float32) * ts["s"][1, 68:72, 66:74]
    np.testing.assert_allclose(e.to_numpy(), want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- Copernicus-Embed
def _cop_map(path):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(768, 32, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=0)
    v[:, 0, 0] = 0.0  # an empty cell
    t = Affine(0.25, 0, -180.125 + 0.25 * 760, 0, -0.25, 90.125 - 0.25 * 176)  # lon 9.875…, lat 46.125…
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", dtype="float32", count=768, width=32, height=32, crs="EPSG:4326",
                       transform=t, tiled=True, blockxsize=16, blockysize=16, interleave="pixel") as dst:
        dst.write(v)
    return v, t


def test_copernicus_embed_area_weighted_on_the_quarter_degree_grid(world, tmp_path):
    w = world
    v, t = _cop_map(w["data"] / "cop" / "embed_map_310k.tif")
    place = BBox(10.3, 45.3, 10.6, 45.5)  # touches cells (row, col) (2..3, 1..2)
    url = w["server"].base + "/data/cop/embed_map_310k.tif"
    mark = w["server"].mark()
    g = api.get_embedding("copernicus-embed", place, output=OutputSpec.grid(), weights=url)
    assert g.grid.crs == "EPSG:4326" and g.grid.res == (0.25, 0.25)
    assert (g.grid.width, g.grid.height) == (2, 2) and g.grid.transform.c == pytest.approx(10.125)
    c0, r0 = [int(round(a)) for a in ~t * (g.grid.transform.c, g.grid.transform.f)]
    np.testing.assert_allclose(g.to_numpy(), v[:, r0:r0 + 2, c0:c0 + 2], rtol=1e-6, atol=1e-6)
    size = (w["data"] / "cop" / "embed_map_310k.tif").stat().st_size
    assert sum(r["bytes"] for r in w["server"].since(mark)) < size / 2
    p = api.get_embedding("copernicus-embed", place, TemporalSpec.year(2021), weights=url).to_numpy()
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    wts, vecs = [], []
    for r in range(2):
        for c in range(2):
            x0, y0 = g.grid.transform * (c, r)
            cell = shapely.box(x0, y0 - 0.25, x0 + 0.25, y0).intersection(shapely.box(10.3, 45.3, 10.6, 45.5))
            wts.append(abs(geod.geometry_area_perimeter(cell)[0]))
            vecs.append(v[:, r0 + r, c0 + c])
    np.testing.assert_allclose(p, np.average(vecs, axis=0, weights=wts), rtol=1e-4)
    with pytest.raises(CapabilityError, match="2021 only"):
        api.get_embedding("copernicus-embed", place, Y2022, weights=url)


def test_copernicus_embed_resolves_like_a_checkpoint_and_checks_its_hash(world, tmp_path, monkeypatch):
    mirror = tmp_path / "weights"
    _cop_map(mirror / "torchgeo" / "copernicus_embed" / "embed_map_310k.tif")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(mirror))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="SHA-256"):
        api.get_embedding("copernicus-embed", BBox(10.3, 45.3, 10.6, 45.5))
    local = api.get_embedding("copernicus-embed", BBox(10.3, 45.3, 10.6, 45.5),
                              weights=str(mirror / "torchgeo" / "copernicus_embed" / "embed_map_310k.tif"))
    assert local.dim == 768


# ------------------------------------------------------------------- AlphaEarth via Earth Engine
EE_TOKEN = "ya29.product-test-token-0123456789"


@pytest.fixture(scope="module")
def ee_server(world):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("ee")
    w = world
    root = w["root"] / "ee"
    root.mkdir()
    tif = w["data"] / "bucket" / "2022/32N/truth-0000000000-0000000000.tiff"
    with rasterio.open(tif) as src:
        bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21))
    catalog = {"collections": {"GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL": {"kind": "tiles", "images": [
        {"id": "truth_2022", "time": "2022-01-01T00:00:00Z", "file": str(tif), "bbox": bbox}]}}}
    (root / "catalog.json").write_text(json.dumps(catalog))
    ready = root / "port"
    script = Path(__file__).parent / "servers" / "ee_server.py"
    proc = subprocess.Popen([sys.executable, str(script), "--catalog", str(root / "catalog.json"), "--log",
                             str(root / "log.jsonl"), "--ready", str(ready), "--token", EE_TOKEN])
    t0 = time.time()
    while not ready.exists():
        assert proc.poll() is None and time.time() - t0 < 20, "the Earth Engine test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{int(ready.read_text())}"
    proc.terminate()
    proc.wait(timeout=10)


def test_earth_engine_route_gives_the_same_vectors_as_the_cogs(world, ee_server, monkeypatch, tmp_path):
    import ee
    from google.oauth2.credentials import Credentials

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setattr(ee.deprecation, "_DEPRECATED_ASSETS_URL", ee_server + "/no-catalog.json")
    w = world
    place = _box(w, 0, 0, 24, 20)  # holds the nodata block
    opts = {"project": "eoembed-tests", "credentials": Credentials(EE_TOKEN), "url": ee_server, "retries": 0,
            "max_pixels_per_request": 200}
    via_ee = api.get_embedding("alphaearth", place, Y2022, output=OutputSpec.grid(), source="gee",
                               source_options=opts)
    via_cog = api.get_embedding("alphaearth", place, Y2022, output=OutputSpec.grid(), model_config=_ae(w))
    assert via_ee.meta["source"]["source"] == "gee" and via_cog.meta["source"]["source"] == "cog"
    assert via_ee.grid == via_cog.grid
    np.testing.assert_allclose(via_ee.to_numpy(), via_cog.to_numpy(), rtol=0, atol=1e-6, equal_nan=True)
    assert np.isnan(via_ee.to_numpy()).any()
    pooled = api.get_embedding("gse", place, Y2022, source="gee", source_options=opts).to_numpy()
    np.testing.assert_allclose(pooled, api.get_embedding("alphaearth", place, Y2022, model_config=_ae(w)).to_numpy(),
                               atol=1e-6)
    ee.Reset()


def test_geoparquet_index_tile_retries_and_no_secret_in_errors(world, tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    w = world
    with open(w["data"] / "bucket" / "aef_index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    table = pa.table({"path": [r["path"] for r in rows], "year": [int(r["year"]) for r in rows],
                      "utm_zone": [r["utm_zone"] for r in rows],
                      "geometry": [shapely.wkt.loads(r["WKT"]).wkb for r in rows]})
    pq.write_table(table, w["data"] / "bucket" / "aef_index.parquet")
    cfg = _ae(w, index=w["bucket"] + "/aef_index.parquet")
    place = _box(w, 60, 60, 8, 8)
    want = api.get_embedding("alphaearth", place, Y2022, model_config=_ae(w)).to_numpy()
    mark = w["server"].mark()
    w["server"].fault("/data/bucket/2022/32N/truth", status=503, count=2)  # the tile answers 503 twice
    got = api.get_embedding("alphaearth", place, Y2022, model_config=cfg)
    np.testing.assert_array_equal(got.to_numpy(), want)
    assert sum(r["status"] == 503 for r in w["server"].since(mark)) == 2
    w["server"].fault("", clear=True)
    secret = "?sig=TOPSECRET123"
    with pytest.raises(ProviderError) as err:
        api.get_embedding("alphaearth", place, Y2022,
                          model_config=_ae(w, index=w["bucket"] + "/missing.csv" + secret))
    assert "TOPSECRET" not in str(err.value) and "HTTP 404" in str(err.value)
    w["server"].fault("/data/bucket/2022/32N/truth", status=500, count=50)
    with pytest.raises(ProviderError, match="after 2 attempts"):
        api.get_embedding("alphaearth", place, Y2022, model_config={**cfg, "retries": 1})
    w["server"].fault("", clear=True)
    caplog.set_level("INFO")
    w["server"].fault("/data/bucket/aef_index.parquet", status=503, count=1)
    signed = _ae(w, index=w["bucket"] + "/aef_index.parquet" + secret)
    assert api.get_embedding("alphaearth", place, Y2022, model_config=signed).dim == 64
    assert "HTTP 503" in caplog.text and "<redacted>" in caplog.text and "TOPSECRET" not in caplog.text
