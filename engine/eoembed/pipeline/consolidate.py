"""The final merge: part files into ``pooled.parquet``/``pooled.npz``, grids into ``grids.nc``."""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import Transformer

from ..embedding import Embedding
from ..errors import ExportError
from ..export.atomic import atomic_path
from ..export.geoparquet import file_crs, file_metadata
from ..export.geotiff import read_geotiff
from ..export.layout import GRID_STACK, PARTS_DIR, POOLED_NPZ, POOLED_PARQUET, grid_path, model_dir
from ..export.npy_stream import NpyStream
from ..export.stack import write_grid_stack
from ..providers.redact import scrub
from ..specs import OutputSpec
from .plan import Wanted

#: Largest NetCDF grid stack file; more grids go to numbered shards.
STACK_MAX_BYTES = 512 * 2**20


#: rows merged per block (the most held in memory at once by the final merge)
MERGE_BLOCK = 4096


def consolidate_pooled(out: Path, model: str, output: OutputSpec, wanted: Wanted,
                       meta: dict[str, Any], crs: str) -> list[Path]:
    """Merge a model's part files into ``pooled.parquet`` and ``pooled.npz``, rows in input order.

    Only rows whose fingerprint is the one `wanted` computes for their place count; duplicates
    (an item computed twice around a crash) keep one row. Geometries end up in `crs` (parts of
    earlier runs may differ). The merge streams: a first pass reads the index, fingerprint, id
    and geometry columns part by part and notes where each place's row lies (a few bytes per
    place); a second pass writes the rows in input order, a block at a time, into a Parquet
    writer and ``.npy`` streams, so memory does not grow with the number of places.
    """
    folder = model_dir(out, model, output.key())
    parts = sorted((folder / PARTS_DIR).glob("*.parquet"))
    where = _locate_rows(parts, wanted, crs)
    if where is None:
        return []
    part_of, row_of, types, bbox, id_len, dim = where
    order = np.flatnonzero(part_of >= 0)
    schema = pa.schema([
        ("id", pa.string()), ("model", pa.string()), ("embedding", pa.list_(pa.float32(), dim)),
        ("index", pa.int64()), ("fingerprint", pa.string()), ("coverage", pa.float64()), ("source", pa.string()),
        ("geometry", pa.binary()),
    ], metadata=file_metadata(types, bbox, crs, meta))
    pq_path, npz_path = folder / POOLED_PARQUET, folder / POOLED_NPZ
    with atomic_path(pq_path) as pq_tmp, atomic_path(npz_path) as npz_tmp, \
            tempfile.TemporaryDirectory(dir=folder, prefix=".merge-") as scratch:
        arrays = {
            "ids": NpyStream(Path(scratch) / "ids.npy", f"<U{max(1, id_len)}", len(order)),
            "vectors": NpyStream(Path(scratch) / "vectors.npy", np.float32, len(order), (dim,)),
            "index": NpyStream(Path(scratch) / "index.npy", np.int64, len(order)),
            "fingerprints": NpyStream(Path(scratch) / "fingerprints.npy", "<U64", len(order)),
        }
        writer = pq.ParquetWriter(pq_tmp, schema, compression="zstd")
        cache: dict[int, tuple[pa.Table, str]] = {}
        for k in range(0, len(order), MERGE_BLOCK):
            block = _merge_block(parts, order[k : k + MERGE_BLOCK], part_of, row_of, cache, crs,
                                 schema.remove_metadata())
            writer.write_table(block.replace_schema_metadata(schema.metadata))
            vectors = np.asarray(block["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False),
                                 np.float32).reshape(-1, dim)
            for name, values in (("ids", block["id"].to_pylist()), ("vectors", vectors),
                                 ("index", block["index"].to_numpy()),
                                 ("fingerprints", block["fingerprint"].to_pylist())):
                arrays[name].write(values)
        writer.close()
        for arr in arrays.values():
            arr.close()
        np.save(Path(scratch) / "model.npy", np.array(model))
        np.save(Path(scratch) / "meta.npy", np.array(json.dumps(scrub(meta), default=str)))
        with zipfile.ZipFile(npz_tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in ("ids", "vectors", "model", "meta", "index", "fingerprints"):
                zf.write(Path(scratch) / f"{name}.npy", arcname=f"{name}.npy")
    return [pq_path, npz_path]


def _locate_rows(parts: Sequence[Path], wanted: Wanted, crs: str) -> tuple[Any, ...] | None:
    """First pass: ``(part_of, row_of, geometry types, bbox, longest id, dim)`` of the rows to keep
    (``part_of[i] = -1`` where place i has none), or None when no part holds a wanted row."""
    part_of = np.full(len(wanted), -1, np.int32)
    row_of = np.zeros(len(wanted), np.int32)
    types: set[str] = set()
    bbox = np.array([np.inf, np.inf, -np.inf, -np.inf])
    id_len, dim = 0, None
    for pno, part in enumerate(parts):
        try:
            t = pq.read_table(part, columns=["id", "embedding", "index", "fingerprint", "geometry"])
            part_crs = file_crs(pq.read_schema(part).metadata)
        except (OSError, pa.ArrowInvalid, KeyError):
            continue  # unreadable or foreign: skipped, as before
        take = []
        for k, (i, fp) in enumerate(zip(t["index"].to_pylist(), t["fingerprint"].to_pylist())):
            if wanted.matches(i, fp) and part_of[i] < 0:
                part_of[i], row_of[i] = pno, k
                take.append(k)
        if not take:
            continue
        dim = t.schema.field("embedding").type.list_size
        sub = t.take(take)
        id_len = max(id_len, max(len(s) for s in sub["id"].to_pylist()))
        geoms = _in_crs(shapely.from_wkb(sub["geometry"].to_pylist()), part_crs, crs)
        types.update(g.geom_type for g in geoms if g is not None)
        b = shapely.total_bounds(geoms)
        bbox = np.concatenate([np.minimum(bbox[:2], b[:2]), np.maximum(bbox[2:], b[2:])])
    if dim is None:
        return None
    return part_of, row_of, sorted(types), list(bbox) if np.isfinite(bbox).all() else [], id_len, dim


def _merge_block(parts: Sequence[Path], block: np.ndarray, part_of: np.ndarray, row_of: np.ndarray,
                 cache: dict[int, tuple[pa.Table, str]], crs: str, schema: pa.Schema) -> pa.Table:
    """Second pass, one block: the rows of places `block` (ascending) from their parts, in order,
    geometries in `crs`. `cache` keeps the last parts read (parts mostly follow input order)."""
    pieces = []
    for pno in np.unique(part_of[block]):
        if pno not in cache:
            if len(cache) >= 2:
                cache.pop(next(iter(cache)))
            cache[pno] = (pq.read_table(parts[pno]), file_crs(pq.read_schema(parts[pno]).metadata))
        table, part_crs = cache[pno]
        sub = table.take(row_of[block[part_of[block] == pno]])
        if part_crs != crs:
            geoms = _in_crs(shapely.from_wkb(sub["geometry"].to_pylist()), part_crs, crs)
            sub = sub.set_column(sub.schema.get_field_index("geometry"), "geometry",
                                 pa.array(list(shapely.to_wkb(geoms)), pa.binary()))
        pieces.append(sub.select(schema.names).cast(schema))
    return pa.concat_tables(pieces).sort_by("index")


def _in_crs(geoms: np.ndarray, src: str, dst: str) -> np.ndarray:
    if src == dst:
        return geoms
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return np.asarray([shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
                       for g in geoms], dtype=object)


def consolidate_grids(out: Path, model: str, wanted: Sequence[tuple[int, str]], meta: dict[str, Any],
                      max_bytes: int = STACK_MAX_BYTES) -> list[Path]:
    """Stack a model's grid GeoTIFFs (in input order) into ``grids.nc``, or numbered shards
    ``grids-00000.nc``… when they exceed `max_bytes`, so memory stays bounded."""
    folder = model_dir(out, model, "grid")
    for old in folder.glob("grids*.nc"):
        old.unlink()
    shards: list[list[tuple[str, Embedding]]] = [[]]
    size = 0
    written: list[Path] = []

    def flush(items: list[tuple[str, Embedding]], k: int) -> None:
        written.append(write_grid_stack(folder / f"grids-{k:05d}.nc", items, meta=meta))

    k = 0
    for _, item_id in sorted(wanted):
        path = grid_path(out, model, item_id)
        try:
            emb = read_geotiff(path)
        except ExportError:
            continue
        nbytes = emb.to_numpy().nbytes
        if shards[-1] and size + nbytes > max_bytes:
            flush(shards[-1], k)
            k += 1
            shards.append([])
            size = 0
        shards[-1].append((item_id, emb))
        size += nbytes
    if shards[-1]:
        flush(shards[-1], k)
    if len(written) == 1:
        final = folder / GRID_STACK
        written[0].replace(final)
        written = [final]
    return written
