"""Resume: leftovers of a crash cleaned up, done items whose files are still sound."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio

from ..export.layout import PARTS_DIR
from ..export.manifest import Manifest
from ..specs import OutputSpec
from .plan import Wanted


def clean_partial_files(out: Path) -> list[Path]:
    """Remove temporary files a crash left behind (``.<name>.<hex>.part``) and quarantine
    part files that cannot be read (renamed ``*.corrupt``); returns what was touched."""
    touched = []
    if not out.exists():
        return touched
    for p in out.rglob(".*.part"):
        if p.is_file():
            p.unlink(missing_ok=True)
            touched.append(p)
    for p in out.rglob(f"{PARTS_DIR}/*.parquet"):
        try:
            pq.read_metadata(p)
        except Exception:
            bad = p.with_name(p.name + ".corrupt")
            p.replace(bad)
            touched.append(bad)
    return touched


def _file_sound(path: Path, mode: str, cache: dict[Path, bool]) -> bool:
    if path in cache:
        return cache[path]
    ok = path.is_file()
    if ok and mode == "grid":
        try:
            with rasterio.open(path) as src:
                ok = src.count > 0
        except Exception:
            ok = False
    cache[path] = ok
    return ok


def done_fingerprints(out: Path, manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Latest ok records whose files are still sound (a deleted or broken file means redo)."""
    cache: dict[Path, bool] = {}
    done = {}
    for fp, rec in manifest.latest().items():
        if rec.get("status") != "ok" or not rec.get("file"):
            continue
        if _file_sound(out / rec["file"], "grid" if rec.get("output") == "grid" else "pooled", cache):
            done[fp] = rec
    return done


def latest_ok(manifest: Manifest, wanted: Mapping[tuple[str, OutputSpec], Wanted],
              out: Path | None = None) -> dict[tuple[str, OutputSpec], np.ndarray]:
    """Per (model, output): which places' items the manifest's latest record says are ok (and,
    when `out` is given, whose file is still sound), as one bool per place.

    The manifest is read as a stream and only records whose fingerprint is the one the run
    wants count, so memory is one byte per place and item, not one record.
    """
    by_name = {(key[0], key[1].key()): key for key in wanted}
    state = {key: np.zeros(len(w), bool) for key, w in wanted.items()}
    parts: dict[Path, bool] = {}  # part files are shared by a chunk's rows: check each once
    for rec in manifest.records():
        key = by_name.get((rec.get("model"), rec.get("output")))
        if key is None or not wanted[key].matches(rec.get("index"), rec.get("fp")):
            continue
        ok = rec.get("status") == "ok" and bool(rec.get("file"))
        if ok and out is not None:
            mode = "grid" if rec.get("output") == "grid" else "pooled"
            ok = _file_sound(out / rec["file"], mode, parts if mode == "pooled" else {})
        state[key][rec["index"]] = ok
    return state
