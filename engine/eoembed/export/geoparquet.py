"""Pooled embeddings as GeoParquet 1.0: geometry (WKB), id, model and a fixed-size vector column.

Written with pyarrow alone; readable by GeoPandas, DuckDB and QGIS (GDAL ≥ 3.8 Parquet driver).
The run's metadata travels in the file's key-value metadata under ``eoembed``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from ..errors import ExportError
from ..providers.redact import redact, scrub
from .atomic import atomic_path


def write_geoparquet(
    path: str | Path,
    ids: Sequence[Any],
    geometries: Sequence[shapely.Geometry],
    vectors: np.ndarray,
    crs: str,
    *,
    model: str | Sequence[str] = "",
    columns: dict[str, Sequence[Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write one row per place atomically; `vectors` is ``(N, D)`` float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(ids)
    if vectors.ndim != 2 or vectors.shape[0] != n or len(geometries) != n:
        raise ExportError(f"{n} ids, {len(geometries)} geometries and vectors {vectors.shape} do not line up")
    d = vectors.shape[1] if vectors.ndim == 2 else 0
    wkb = shapely.to_wkb(np.asarray(geometries, dtype=object))
    models = [model] * n if isinstance(model, str) else list(model)
    table_cols: dict[str, pa.Array] = {
        "id": pa.array([str(i) for i in ids], pa.string()),
        "model": pa.array(models, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), d),
    }
    for name, vals in (columns or {}).items():
        table_cols[name] = pa.array([redact(v) if isinstance(v, str) else v for v in vals])
    table_cols["geometry"] = pa.array(list(wkb), pa.binary())
    table = pa.table(table_cols)
    types = sorted({g.geom_type for g in geometries if g is not None})
    bbox = list(shapely.total_bounds(np.asarray(geometries, dtype=object))) if n else []
    kv = file_metadata(types, bbox, crs, meta)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **kv})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def file_metadata(types: Sequence[str], bbox: Sequence[float], crs: str,
                  meta: dict[str, Any] | None) -> dict[bytes, bytes]:
    """The key-value metadata of an eoembed GeoParquet file: GeoParquet 1.0 ``geo`` and ``eoembed``."""
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": list(types),
                "crs": CRS.from_user_input(crs).to_json_dict(),
                **({"bbox": list(bbox)} if len(bbox) else {}),
            }
        },
    }
    return {b"geo": json.dumps(geo).encode(), b"eoembed": json.dumps(scrub(meta or {}), default=str).encode()}


def file_crs(metadata: dict[bytes, bytes] | None) -> str:
    """The CRS of an eoembed GeoParquet file from its schema metadata (EPSG:4326 when absent)."""
    col = json.loads((metadata or {}).get(b"geo", b"{}")).get("columns", {}).get("geometry", {})
    return CRS.from_json_dict(col["crs"]).to_string() if col.get("crs") else "EPSG:4326"


def read_geoparquet(path: str | Path) -> dict[str, Any]:
    """Read a file from :func:`write_geoparquet`: ids, geometries, vectors ``(N, D)``, crs, meta."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ExportError(f"{path} is not a readable GeoParquet file ({exc})") from exc
    md = table.schema.metadata or {}
    crs = file_crs(md)
    emb = table.column("embedding").combine_chunks()
    d = emb.type.list_size
    vectors = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, d)
    extra = {c: table.column(c).to_pylist() for c in table.column_names if c not in ("id", "model", "embedding", "geometry")}
    return {
        "ids": table.column("id").to_pylist(),
        "models": table.column("model").to_pylist(),
        "geometries": list(shapely.from_wkb(table.column("geometry").to_pylist())),
        "vectors": vectors,
        "crs": crs,
        "columns": extra,
        "meta": json.loads(md.get(b"eoembed", b"{}")),
    }
