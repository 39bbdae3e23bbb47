"""GeoParquet and GeoTIFF round trips, and atomic writes that leave nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import shapely.geometry
from affine import Affine
from eoembed.embedding import Embedding, grid_dataarray
from eoembed.errors import ExportError
from eoembed.export import (
    atomic_path,
    read_geoparquet,
    read_geotiff,
    write_geoparquet,
    write_geotiff,
)
from eoembed.grid import GridSpec
from pyproj import CRS


def _rows():
    ids = ["field-1", "7", "ü-3"]
    geoms = [shapely.geometry.Point(500_010.5, 5_000_020.25),
             shapely.geometry.box(500_000, 5_000_000, 500_100, 5_000_050),
             shapely.geometry.Polygon([(0, 0), (3, 0), (0, 4), (0, 0)])]
    vectors = np.arange(3 * 5, dtype=np.float32).reshape(3, 5) / 7
    return ids, geoms, vectors


def test_geoparquet_roundtrip_keeps_ids_geometry_vectors_crs_and_meta(tmp_path):
    ids, geoms, vectors = _rows()
    path = write_geoparquet(tmp_path / "out.parquet", ids, geoms, vectors, "EPSG:32633", model="rcf",
                            columns={"area": [1.0, 2.0, 3.0]}, meta={"window": "2022-01-01/2023-01-01"})
    back = read_geoparquet(path)
    assert back["ids"] == ids and back["models"] == ["rcf"] * 3
    assert [g.wkb for g in back["geometries"]] == [g.wkb for g in geoms]
    np.testing.assert_array_equal(back["vectors"], vectors)
    assert CRS.from_user_input(back["crs"]) == CRS.from_epsg(32633)
    assert back["columns"] == {"area": [1.0, 2.0, 3.0]}
    assert back["meta"] == {"window": "2022-01-01/2023-01-01"}


def test_geoparquet_geo_metadata_follows_the_spec(tmp_path):
    ids, geoms, vectors = _rows()
    path = write_geoparquet(tmp_path / "out.parquet", ids, geoms, vectors, "EPSG:32633")
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    col = geo["columns"]["geometry"]
    assert geo["version"] == "1.0.0" and geo["primary_column"] == "geometry"
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Point", "Polygon"]
    assert CRS.from_json_dict(col["crs"]).to_epsg() == 32633
    assert col["bbox"] == [0.0, 0.0, 500_100.0, 5_000_050.0]
    assert table.schema.field("embedding").type.list_size == 5
    assert shapely.from_wkb(table.column("geometry")[1].as_py()).equals(geoms[1])


def test_geoparquet_refuses_rows_that_do_not_line_up(tmp_path):
    ids, geoms, vectors = _rows()
    with pytest.raises(ExportError, match="do not line up"):
        write_geoparquet(tmp_path / "x.parquet", ids, geoms[:2], vectors, "EPSG:4326")
    assert not (tmp_path / "x.parquet").exists()


def _grid_embedding() -> Embedding:
    grid = GridSpec("EPSG:32722", Affine(40.0, 0.0, 790_236.04, 0.0, -40.0, 7_198_039.25), 20, 18)
    values = np.random.default_rng(0).normal(size=(6, 18, 20)).astype(np.float32)
    return Embedding(grid_dataarray(values, grid), {"model": "rcf", "window": "2021-01-01/2022-01-01"})


def test_geotiff_roundtrip_keeps_transform_crs_band_names_and_meta(tmp_path):
    emb = _grid_embedding()
    path = write_geotiff(emb, tmp_path / "grid.tif")
    with rasterio.open(path) as src:
        assert src.transform == emb.transform
        assert src.crs == rasterio.crs.CRS.from_epsg(32722)
        assert (src.count, src.height, src.width) == (6, 18, 20)
        assert src.descriptions == tuple(f"emb_{i:04d}" for i in range(6))
        assert json.loads(src.tags()["eoembed_meta"]) == emb.meta
        np.testing.assert_array_equal(src.read(), emb.to_numpy())
        # pixel centres by coordinates: the centre of pixel (row 2, col 3)
        assert src.xy(2, 3) == pytest.approx((790_236.04 + 3.5 * 40, 7_198_039.25 - 2.5 * 40))
    back = read_geotiff(path)
    np.testing.assert_array_equal(back.to_numpy(), emb.to_numpy())
    np.testing.assert_allclose(back.data.x.values, emb.data.x.values)
    np.testing.assert_allclose(back.data.y.values, emb.data.y.values)
    assert back.transform == emb.transform and back.meta == emb.meta
    assert CRS.from_user_input(back.crs).to_epsg() == 32722


def test_pooled_embeddings_are_not_geotiffs(tmp_path):
    with pytest.raises(ExportError, match="only grid embeddings"):
        write_geotiff(Embedding(np.zeros(4, np.float32)), tmp_path / "p.tif")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reader", [read_geoparquet, read_geotiff])
def test_reading_junk_is_an_export_error(tmp_path, reader):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a raster nor a table")
    with pytest.raises(ExportError, match="junk.bin is not a readable"):
        reader(junk)


def test_atomic_path_leaves_no_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary .part left either


def test_atomic_path_keeps_the_old_file_on_failure_and_replaces_it_on_success(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.name.endswith(".part")
        tmp.write_bytes(b"new but broken")
        raise ValueError("stop")
    assert target.read_bytes() == b"old"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failing_geotiff_write_leaves_nothing(tmp_path, monkeypatch):
    emb = _grid_embedding()

    def boom(self, *a, **k):
        raise OSError("write failed")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "update_tags", boom)
    with pytest.raises(OSError, match="write failed"):
        write_geotiff(emb, tmp_path / "grid.tif")
    assert list(tmp_path.iterdir()) == []
