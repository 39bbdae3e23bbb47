"""The final merge: part files into ``pooled.parquet``/``pooled.npz``, grids into ``grids.nc``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from ..embedding import Embedding
from ..errors import ExportError
from ..export.geoparquet import read_geoparquet, write_geoparquet
from ..export.geotiff import read_geotiff
from ..export.layout import GRID_STACK, PARTS_DIR, POOLED_NPZ, POOLED_PARQUET, grid_path, model_dir
from ..export.npz import write_npz
from ..export.stack import write_grid_stack
from ..specs import OutputSpec

#: Largest NetCDF grid stack file; more grids go to numbered shards.
STACK_MAX_BYTES = 512 * 2**20


def consolidate_pooled(out: Path, model: str, output: OutputSpec, wanted: dict[str, int],
                       meta: dict[str, Any], crs: str) -> list[Path]:
    """Merge a model's part files into ``pooled.parquet`` and ``pooled.npz``, rows in input order.

    Only fingerprints in `wanted` (fp → input index) count; duplicates (an item computed twice
    around a crash) keep one row. Geometries end up in `crs` (parts of earlier runs may differ).
    """
    folder = model_dir(out, model, output.key())
    rows: dict[str, tuple[int, str, shapely.Geometry, np.ndarray, float | None, str]] = {}
    for part in sorted((folder / PARTS_DIR).glob("*.parquet")):
        try:
            t = read_geoparquet(part)
        except ExportError:
            continue
        cols = t["columns"]
        geoms = t["geometries"]
        if t["crs"] != crs and any(fp in wanted and fp not in rows for fp in cols["fingerprint"]):
            tr = Transformer.from_crs(t["crs"], crs, always_xy=True)
            geoms = [shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
                     for g in geoms]
        for k, fp in enumerate(cols["fingerprint"]):
            if fp in wanted and fp not in rows:
                rows[fp] = (wanted[fp], t["ids"][k], geoms[k], t["vectors"][k], cols["coverage"][k], cols["source"][k])
    if not rows:
        return []
    ordered = sorted(rows.items(), key=lambda kv: kv[1][0])
    ids = [r[1] for _, r in ordered]
    vectors = np.stack([r[3] for _, r in ordered])
    index = [r[0] for _, r in ordered]
    fps = [fp for fp, _ in ordered]
    pq_path = write_geoparquet(
        folder / POOLED_PARQUET, ids, [r[2] for _, r in ordered], vectors, crs,
        model=model, meta=meta,
        columns={"index": index, "fingerprint": fps, "coverage": [r[4] for _, r in ordered],
                 "source": [r[5] for _, r in ordered]},
    )
    npz_path = write_npz(folder / POOLED_NPZ, ids, vectors, model=model, meta=meta,
                         arrays={"index": np.asarray(index, np.int64), "fingerprints": np.asarray(fps)})
    return [pq_path, npz_path]


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
