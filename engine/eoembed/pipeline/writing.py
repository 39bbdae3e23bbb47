"""Writing one chunk: parquet part files and grid GeoTIFFs first, then the manifest records."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from ..embedding import Embedding
from ..export.geoparquet import write_geoparquet
from ..export.layout import PARTS_DIR, grid_path, model_dir
from ..export.manifest import Manifest
from ..features import Place
from ..specs import OutputSpec, PointBuffer
from .inference import ItemResult
from .retry import RetryPolicy, error_text


class Writer:
    """Writes one chunk's results (parquet part files, GeoTIFFs) then records them in the manifest.

    Files first, manifest second: a crash in between only means an item is computed again,
    never that the manifest points at a file that does not exist.
    """

    def __init__(self, out: Path, run_id: str, places: Sequence[Place], geo_crs: str,
                 manifest: Manifest, policy: RetryPolicy, run_meta: dict[str, Any]) -> None:
        self.out, self.run_id, self.places, self.geo_crs = out, run_id, places, geo_crs
        self.manifest, self.policy, self.run_meta = manifest, policy, run_meta
        self._transformers: dict[str, Transformer] = {}
        self._metric_crs: dict[str, bool] = {}

    def _metric(self, spec: PointBuffer) -> bool:
        """True when the spec's own CRS is its working CRS (then its square is axis-aligned in it)."""
        ok = self._metric_crs.get(spec.crs)
        if ok is None:
            ok = self._metric_crs[spec.crs] = spec.working_crs == spec.crs_obj
        return ok

    def _own_geometry(self, index: int) -> shapely.Geometry:
        """The place's geometry in its own CRS (squares of points in a metric CRS built directly)."""
        p = self.places[index]
        spec = p.spatial
        if p.geometry is not None:
            return p.geometry
        if isinstance(spec, PointBuffer) and self._metric(spec):
            b = spec.buffer_m
            return shapely.box(spec.x - b, spec.y - b, spec.x + b, spec.y + b)
        return spec.shape()

    def geometry(self, index: int) -> shapely.Geometry:
        """The place's geometry in the output CRS."""
        return self.geometries([index])[0]

    def geometries(self, indices: Sequence[int]) -> list[shapely.Geometry]:
        """The places' geometries in the output CRS, transformed in one call per CRS."""
        out: list[shapely.Geometry] = [self._own_geometry(i) for i in indices]
        by_crs: dict[str, list[int]] = {}
        for k, i in enumerate(indices):
            crs = self.places[i].crs
            if crs != self.geo_crs:
                by_crs.setdefault(crs, []).append(k)
        for crs, ks in by_crs.items():
            tr = self._transformers.get(crs)
            if tr is None:
                tr = self._transformers[crs] = Transformer.from_crs(crs, self.geo_crs, always_xy=True)
            moved = shapely.transform(np.array([out[k] for k in ks], dtype=object),
                                      lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
            for k, g in zip(ks, moved):
                out[k] = g
        return out

    def write(self, chunk: int, results: list[ItemResult]) -> list[dict[str, Any]]:
        """Write the ok results, then append one manifest record per result; returns the records."""
        files: dict[str, str] = {}
        pooled: dict[tuple[str, OutputSpec], list[ItemResult]] = {}
        for r in results:
            if r.embedding is None:
                continue
            if r.item.output.mode == "pooled":
                pooled.setdefault((r.item.model, r.item.output), []).append(r)
            else:
                self._guarded(r, lambda r=r: self._write_grid(r), files)
        for (model, output), rows in pooled.items():
            name = f"{PARTS_DIR}/pooled-{self.run_id}-{chunk:06d}.parquet"
            path = model_dir(self.out, model, output.key()) / name

            def write_part(rows=rows, path=path, model=model, output=output) -> str:
                self._write_part(path, rows, model, output)
                return str(path.relative_to(self.out))

            try:
                rel, n = self.policy.call(write_part)
                for r in rows:
                    files[r.item.fp] = rel
                    r.attempts["write"] = n
            except Exception as exc:
                for r in rows:
                    r.stage, r.error, r.embedding = "write", error_text(exc), None
                    r.attempts["write"] = getattr(exc, "attempts", 1)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = []
        for r in results:
            rec = {
                "fp": r.item.fp, "index": r.item.index, "id": r.item.id, "model": r.item.model,
                "output": r.item.output.key(), "status": "ok" if r.stage == "ok" else "failed",
                "stage": r.stage, "error": r.error, "attempts": r.attempts, "run": self.run_id, "time": now,
            }
            if r.stage == "ok":
                rec["file"] = files[r.item.fp]
            records.append(rec)
        self.policy.call(lambda: self.manifest.append(records))
        return records

    def _guarded(self, r: ItemResult, fn: Callable[[], str], files: dict[str, str]) -> None:
        try:
            rel, n = self.policy.call(fn)
            files[r.item.fp] = rel
            r.attempts["write"] = n
        except Exception as exc:
            r.stage, r.error, r.embedding = "write", error_text(exc), None
            r.attempts["write"] = getattr(exc, "attempts", 1)

    def _write_grid(self, r: ItemResult) -> str:
        assert r.embedding is not None
        path = grid_path(self.out, r.item.model, r.item.id)
        emb = Embedding(r.embedding.data, {**r.embedding.meta, "id": r.item.id, "fingerprint": r.item.fp})
        from . import write_geotiff  # the package's name, so the GeoTIFF writer can be substituted

        write_geotiff(emb, path)
        return str(path.relative_to(self.out))

    def _write_part(self, path: Path, rows: list[ItemResult], model: str, output: OutputSpec) -> None:
        vectors = np.stack([r.embedding.to_numpy() for r in rows])  # type: ignore[union-attr]
        first = rows[0].embedding.meta  # type: ignore[union-attr]
        meta = {**self.run_meta, "model": model, "output": output.key(),
                "embedding": {k: v for k, v in first.items() if k != "source"}}
        write_geoparquet(
            path, [r.item.id for r in rows], self.geometries([r.item.index for r in rows]), vectors, self.geo_crs,
            model=model, meta=meta,
            columns={
                "index": [r.item.index for r in rows],
                "fingerprint": [r.item.fp for r in rows],
                "coverage": [r.embedding.meta.get("source", {}).get("coverage") for r in rows],  # type: ignore[union-attr]
                "source": [json.dumps(r.embedding.meta.get("source", {}), default=str) for r in rows],  # type: ignore[union-attr]
            },
        )
