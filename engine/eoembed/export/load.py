"""Read any export back: one file (GeoParquet, NPZ, GeoTIFF, NetCDF stack, manifest) or a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..embedding import Embedding
from ..errors import ExportError
from .geoparquet import read_geoparquet
from .geotiff import read_geotiff
from .layout import GRID_STACK, GRIDS_DIR, POOLED_NPZ, POOLED_PARQUET, RUN_NAME
from .manifest import MANIFEST_NAME, read_manifest
from .npz import read_npz
from .stack import read_grid_stack


def load_export(path: str | Path) -> Any:
    """Read what :func:`eoembed.export_batch` (or a single writer) wrote.

    * ``.parquet`` / ``.npz`` → dict with ``ids``, ``vectors (N, D)``, ``meta`` (and geometries, crs)
    * ``.tif`` → a grid :class:`Embedding`; ``.nc`` → ``{id: grid Embedding}``
    * ``manifest.jsonl`` → the latest record per item and model
    * an export folder → ``{"run": …, "manifest": […], "models": {model: {"pooled": …, "grids": {…}}}}``
      where grids come from the NetCDF stack when there is one, else from the GeoTIFFs.
    """
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{p} does not exist; give a file or folder written by eoembed")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            return read_geoparquet(p)
        if suffix == ".npz":
            return read_npz(p)
        if suffix in (".tif", ".tiff"):
            return read_geotiff(p)
        if suffix == ".nc":
            return read_grid_stack(p)
        if suffix == ".jsonl":
            return read_manifest(p)
        raise ExportError(f"{p.name}: unknown export format; eoembed writes .parquet, .npz, .tif, .nc and .jsonl")
    models = {}
    for folder in sorted({f.parent for f in p.rglob(POOLED_PARQUET)} | {f.parent for f in p.rglob(GRIDS_DIR)}
                         | {f.parent for f in p.rglob("grids*.nc")}):
        models[folder.relative_to(p).as_posix()] = _load_model_dir(folder)
    if not models:
        raise ExportError(f"{p} holds no eoembed export (no {POOLED_PARQUET}, {GRIDS_DIR}/ or {GRID_STACK})")
    out: dict[str, Any] = {"models": models}
    if (p / RUN_NAME).exists():
        out["run"] = json.loads((p / RUN_NAME).read_text())
    if (p / MANIFEST_NAME).exists():
        out["manifest"] = read_manifest(p / MANIFEST_NAME)
    return out


def _load_model_dir(folder: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"pooled": None, "grids": {}}
    if (folder / POOLED_PARQUET).exists():
        res["pooled"] = read_geoparquet(folder / POOLED_PARQUET)
    elif (folder / POOLED_NPZ).exists():
        res["pooled"] = read_npz(folder / POOLED_NPZ)
    stacks = sorted(folder.glob("grids*.nc"))
    grids: dict[str, Embedding] = {}
    if stacks:
        for s in stacks:
            grids.update(read_grid_stack(s))
    elif (folder / GRIDS_DIR).is_dir():
        for tif in sorted((folder / GRIDS_DIR).glob("*.tif")):
            emb = read_geotiff(tif)
            grids[str(emb.meta.get("id", tif.stem))] = emb
    res["grids"] = grids
    return res
