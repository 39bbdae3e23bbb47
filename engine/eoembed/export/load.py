"""Read any export back: one file (GeoParquet, NPZ, GeoTIFF, NetCDF stack, manifest) or a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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
    if not p.exists() and p.suffix.lower() in (".npz", ".json") and p.with_suffix("").is_dir():
        p = p.with_suffix("")  # ExportTarget.combined("out/run.npz") wrote the folder out/run
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
    out = ExportContents(models=models)
    if (p / RUN_NAME).exists():
        out["run"] = json.loads((p / RUN_NAME).read_text())
    if (p / MANIFEST_NAME).exists():
        out["manifest"] = read_manifest(p / MANIFEST_NAME)
        failed: dict[str, ModelContents] = {}  # models that failed everywhere: records, no folder
        for rec in out["manifest"]:
            name = str(rec.get("model"))
            res = models[name] if name in models else failed.setdefault(name, ModelContents(pooled=None, grids={}))
            res.setdefault("states", []).append(rec.get("status"))
            if rec.get("status") != "ok" and rec.get("error"):
                res.setdefault("errors", []).append(str(rec["error"]))
        if failed:
            out["failed"] = failed
    return out


class ModelContents(dict):
    """One model's results: ``["pooled"]`` (ids, vectors, meta) and ``["grids"]`` ({id: Embedding}),
    also read as attributes (``embeddings``, ``status``; ``inputs`` is None: pixels are not stored)."""

    inputs = None

    @property
    def embeddings(self) -> np.ndarray | None:
        """``(N, D)`` pooled vectors, else the grids stacked ``(N, D, H, W)`` when they share a shape."""
        if self.get("pooled") is not None:
            return self["pooled"]["vectors"]
        grids = [g.to_numpy() for g in self.get("grids", {}).values()]
        if not grids or len({g.shape for g in grids}) != 1:
            return None
        return np.stack(grids)

    @property
    def error(self) -> str | None:
        """The first error when the model failed for every place, else None."""
        return self["errors"][0] if self.status == "failed" and self.get("errors") else None

    @property
    def status(self) -> str:
        states = set(self.get("states", ()))
        return "ok" if states <= {"ok"} else ("failed" if "ok" not in states else "partial")

    @property
    def meta(self) -> list[dict[str, Any]]:
        return [self["pooled"]["meta"]] if self.get("pooled") is not None else [g.meta for g in self["grids"].values()]


class ExportContents(dict):
    """What :func:`load_export` read from an export folder; a dict that also answers
    ``embedding(model)``, ``ok_models``, ``failed_models`` and ``n_items``."""

    def embedding(self, model: str) -> np.ndarray:
        if model not in self.models:
            raise ExportError(f"the export has no model {model!r}; it holds {', '.join(self.models)}")
        arr = self.models[model].embeddings
        if arr is None:
            raise ExportError(f"model {model!r} has no pooled vectors and no grids of one shape in this export")
        return arr

    @property
    def models(self) -> dict[str, ModelContents]:
        """Every model of the run: those with results, then those that failed everywhere."""
        return {**self["models"], **self.get("failed", {})}

    @property
    def manifest(self) -> list[dict[str, Any]]:
        return self.get("manifest", [])

    @property
    def status(self) -> str:
        states = {r.status for r in self.models.values()}
        return states.pop() if len(states) == 1 else "partial"

    @property
    def ok_models(self) -> list[str]:
        return [m for m, r in self.models.items() if r.status == "ok"]

    @property
    def failed_models(self) -> list[str]:
        return [m for m, r in self.models.items() if r.status == "failed"]

    @property
    def n_items(self) -> int:
        run = self.get("run") or {}
        if "places" in run:
            return int(run["places"])
        return max((len(r["pooled"]["ids"]) if r.get("pooled") else len(r["grids"])) for r in self["models"].values())

    def __getattr__(self, name: str) -> Any:  # run.json fields (temporal, places, ...) as attributes
        run = self.get("run") or {}
        if name in run:
            return run[name]
        raise AttributeError(f"export contents have no {name!r}; keys are {', '.join(self)}")


def _load_model_dir(folder: Path) -> ModelContents:
    res = ModelContents(pooled=None, grids={})
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
