"""Export formats round-trip: GeoParquet, NPZ, GeoTIFF grids on their inputs, NetCDF stacks, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import eoembed
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from eoembed.embedders.rcf import RCFEmbedder
from eoembed.embedding import Embedding, grid_dataarray
from eoembed.errors import ExportError
from eoembed.export import (
    Manifest,
    load_export,
    read_grid_stack,
    read_manifest,
    read_npz,
    safe_name,
    write_grid_stack,
    write_npz,
)
from eoembed.grid import GridSpec
from eoembed.specs import PointBuffer
from export_helpers import places, write_tiles


@pytest.fixture(scope="module")
def imagery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiles(tmp_path_factory.mktemp("img") / "tiles")[0].parent


@pytest.mark.parametrize(
    "text",
    ["../../etc/passwd", "a/b", "a_b", "field 1", ".hidden", "Zürich", "", "x" * 300, "ok-id_1.2"],
)
def test_safe_names_stay_in_their_folder_and_do_not_collide(text: str) -> None:
    name = safe_name(text)
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name not in ("", "..")
    assert len(name) <= 90 and all(c.isalnum() or c in "._-" for c in name)
    assert (name == text) == (text == "ok-id_1.2" or text == "a_b")
    assert safe_name("a/b") != safe_name("a_b") and safe_name("a b") != safe_name("a_b")


def test_geoparquet_from_export_has_geo_metadata_and_real_geometries(imagery: Path, tmp_path: Path) -> None:
    pl = places(7)
    eoembed.export_batch(pl, None, [("rcf", {"features": 8})], tmp_path / "o", source=str(imagery))
    path = tmp_path / "o" / "rcf" / "pooled.parquet"
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["crs"]["id"]["code"] == 32633
    meta = json.loads(table.schema.metadata[b"eoembed"])
    assert meta["model"] == "rcf" and meta["card"]["dim"] == 8 and meta["window"] == "1970-01-01/2100-01-01"
    assert table.column("embedding").type.list_size == 8
    back = load_export(path)
    for pid, g in zip(back["ids"], back["geometries"]):  # the squares of the places, in their CRS
        assert g.equals_exact(pl[pid].shape(), 1e-6)
    npz = load_export(path.with_suffix(".npz"))
    assert npz["ids"] == back["ids"] and np.array_equal(npz["vectors"], back["vectors"])
    assert list(npz["index"]) == list(range(7))
    pytest.importorskip("geopandas")
    import geopandas

    gdf = geopandas.read_parquet(path)
    assert gdf.crs.to_epsg() == 32633 and len(gdf) == 7


def test_places_in_several_crs_are_written_in_lon_lat(imagery: Path, tmp_path: Path) -> None:
    from pyproj import Transformer

    pl = places(3)
    p = pl["p001"]
    lon, lat = Transformer.from_crs(p.crs, "EPSG:4326", always_xy=True).transform(p.x, p.y)
    pl["lonlat"] = PointBuffer(lon, lat, p.buffer_m)
    eoembed.export_batch(pl, None, [("rcf", {"features": 8})], tmp_path / "o", source=str(imagery))
    back = load_export(tmp_path / "o" / "rcf" / "pooled.parquet")
    assert back["crs"] == "EPSG:4326" and back["ids"] == list(pl)
    for pid, g in zip(back["ids"], back["geometries"]):
        cx, cy = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(g.centroid.x, g.centroid.y)
        assert abs(cx - pl[pid].center("EPSG:32633")[0]) < 0.5 and abs(cy - pl[pid].center("EPSG:32633")[1]) < 0.5
    # the same point given in two CRSs embeds to (nearly) the same vector: same pixels underneath
    np.testing.assert_allclose(back["vectors"][3], back["vectors"][1], rtol=1e-4, atol=1e-5)


def test_npz_round_trip_and_errors(tmp_path: Path) -> None:
    vecs = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    write_npz(tmp_path / "v.npz", ["a", "b/c", "d"], vecs, model="m", meta={"k": [1, 2]},
              arrays={"index": np.arange(3)})
    back = read_npz(tmp_path / "v.npz")
    assert back["ids"] == ["a", "b/c", "d"] and back["model"] == "m" and back["meta"] == {"k": [1, 2]}
    assert np.array_equal(back["vectors"], vecs) and list(back["index"]) == [0, 1, 2]
    with pytest.raises(ExportError):
        write_npz(tmp_path / "bad.npz", ["a"], vecs)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ExportError):
        read_npz(tmp_path / "junk.npz")


def test_grid_geotiffs_overlay_their_input_pixels(imagery: Path, tmp_path: Path) -> None:
    """With 1×1 filters and 1-pixel cells, every GeoTIFF pixel is a function of the one input
    pixel under its centre: recompute it by hand from the tile, located by coordinates only."""
    pl = places(4)
    model = RCFEmbedder("rcf", features=6, kernel_size=1, grid_cell=1, bands=("B02", "B03", "B04", "B08"))
    eoembed.export_batch(pl, None, [model], tmp_path / "o", outputs="grid", source=str(imagery))
    model.load()
    filt = model._filters[:, :, 0, 0].numpy()  # (3, 4)
    mean, std = model._mean.flatten().numpy(), model._std.flatten().numpy()
    band_idx = [1, 2, 3, 7]  # B02, B03, B04, B08 in the 12-band tiles
    tiles = [rasterio.open(p) for p in sorted(imagery.glob("*.tif"))]
    try:
        for pid in pl:
            with rasterio.open(tmp_path / "o" / "rcf" / "grids" / f"{safe_name(pid)}.tif") as g:
                assert g.crs.to_epsg() == 32633 and g.res == (10.0, 10.0) and g.count == 6
                assert g.nodata is not None and np.isnan(g.nodata)
                assert g.descriptions[0] == "emb_0000"
                got = g.read()
                rows, cols = np.mgrid[0 : g.height, 0 : g.width]
                xs, ys = rasterio.transform.xy(g.transform, rows.ravel(), cols.ravel())
            xs, ys = np.asarray(xs), np.asarray(ys)
            tile = next(t for t in tiles if t.bounds.left < xs.mean() < t.bounds.right)
            r, c = rasterio.transform.rowcol(tile.transform, xs, ys)
            pix = tile.read()[band_idx][:, r, c].astype(np.float64)  # (4, n)
            z = (pix - mean[:, None]) / std[:, None]
            resp = filt @ z
            want = np.concatenate([np.maximum(resp - 1, 0), np.maximum(-resp - 1, 0)]).reshape(got.shape)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    finally:
        for t in tiles:
            t.close()


def _grid(values: np.ndarray, x0: float, y0: float, res: float, crs: str) -> Embedding:
    d, h, w = values.shape
    return Embedding(grid_dataarray(values, GridSpec(crs, Affine(res, 0, x0, 0, -res, y0), w, h)), {"n": h * w})


def test_netcdf_stack_round_trips_grids_of_different_sizes_and_crs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    items = [
        ("a/1", _grid(rng.normal(size=(3, 4, 5)).astype(np.float32), 500_000, 4_600_000, 40, "EPSG:32633")),
        ("b", _grid(rng.normal(size=(3, 2, 2)).astype(np.float32), 300_000, 5_000_000, 20, "EPSG:32718")),
    ]
    path = write_grid_stack(tmp_path / "s.nc", items, meta={"model": "m"})
    back = read_grid_stack(path)
    assert list(back) == ["a/1", "b"]
    for k, e in items:
        b = back[k]
        assert b.crs == e.crs and b.transform == e.transform and b.meta == e.meta
        np.testing.assert_array_equal(b.to_numpy(), e.to_numpy())
        np.testing.assert_array_equal(b.data.x.values, e.data.x.values)
        np.testing.assert_array_equal(b.data.y.values, e.data.y.values)
    import xarray as xr

    with xr.open_dataset(path, engine="scipy") as ds:  # a plain NetCDF file any reader opens
        assert ds["embedding"].shape == (2, 3, 4, 5) and np.isnan(ds["embedding"].values[1, :, 2:, :]).all()
        assert json.loads(ds.attrs["eoembed"]) == {"model": "m"}
    with pytest.raises(ExportError):
        write_grid_stack(tmp_path / "e.nc", [])


def test_export_folder_grids_stack_and_shards_match_geotiffs(imagery: Path, tmp_path: Path) -> None:
    from eoembed.pipeline import consolidate_grids

    pl = dict(places(5))
    pl["big"] = PointBuffer(pl["p000"].x, pl["p000"].y, 80.0, crs=pl["p000"].crs)  # a larger grid
    eoembed.export_batch(pl, None, [("rcf", {"features": 8})], tmp_path / "o", outputs="both", source=str(imagery))
    res = load_export(tmp_path / "o")
    m = res["models"]["rcf"]
    assert list(m["grids"]) == list(pl) and len(m["pooled"]["ids"]) == 6
    assert res["run"]["status"] == "finished" and len(res["manifest"]) == 12
    for pid, g in m["grids"].items():
        tif = load_export(tmp_path / "o" / "rcf" / "grids" / f"{safe_name(pid)}.tif")
        np.testing.assert_array_equal(g.to_numpy(), tif.to_numpy())
        assert g.transform == tif.transform and g.meta["id"] == pid
    assert m["grids"]["big"].data.sizes["x"] == 2 * m["grids"]["p000"].data.sizes["x"]
    # a small byte budget splits the stack into shards that load back to the same grids
    wanted = [(i, pid) for i, pid in enumerate(pl)]
    paths = consolidate_grids(tmp_path / "o", "rcf", wanted, {}, max_bytes=300)
    assert len(paths) > 1 and not (tmp_path / "o" / "rcf" / "grids.nc").exists()
    again = load_export(tmp_path / "o")["models"]["rcf"]["grids"]
    assert list(again) == list(pl)
    for pid in pl:
        np.testing.assert_array_equal(again[pid].to_numpy(), m["grids"][pid].to_numpy())


def test_manifest_survives_a_cut_last_line(tmp_path: Path) -> None:
    man = Manifest(tmp_path / "manifest.jsonl")
    man.append([{"fp": "a", "status": "failed"}, {"fp": "b", "status": "ok"}])
    with open(man.path, "ab") as fh:
        fh.write(b'{"fp": "c", "sta')  # SIGKILL in the middle of a write
    man.append([{"fp": "a", "status": "ok"}])
    latest = man.latest()
    assert set(latest) == {"a", "b"} and latest["a"]["status"] == "ok"
    assert len(man.path.read_text().splitlines()) == 4
    assert {r["fp"] for r in read_manifest(tmp_path)} == {"a", "b"}
    with pytest.raises(ExportError):
        read_manifest(tmp_path / "nowhere")


def test_load_export_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        load_export(tmp_path / "missing.parquet")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ExportError, match="unknown export format"):
        load_export(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no eoembed export"):
        load_export(tmp_path / "empty")
