"""Where a batch export puts its files, and file-name-safe versions of user ids."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

RUN_NAME = "run.json"
POOLED_PARQUET = "pooled.parquet"
POOLED_NPZ = "pooled.npz"
PARTS_DIR = "parts"
GRIDS_DIR = "grids"
GRID_STACK = "grids.nc"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, limit: int = 80) -> str:
    """A file name for `text` that cannot escape its folder or collide with another id.

    Ids that are already plain (letters, digits, ``._-``, not starting with ``.``) are kept;
    anything else (``/``, ``..``, spaces, accents) is replaced by ``_`` and suffixed with a
    short hash of the original, so that ``a/b`` and ``a_b`` stay distinct files.
    """
    text = str(text)
    clean = _UNSAFE.sub("_", text).strip("._") or "item"
    if clean == text and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[:limit]}-{digest}"


def model_dir(out: Path, model: str, output_key: str) -> Path:
    """``<out>/<model>`` for the default pooled/grid outputs, ``<out>/<model>/<output>`` else."""
    base = Path(out) / safe_name(model)
    return base if output_key in ("pooled/mean", "grid") else base / safe_name(output_key.replace("/", "-"))


def grid_path(out: Path, model: str, item_id: str) -> Path:
    return model_dir(out, model, "grid") / GRIDS_DIR / f"{safe_name(item_id)}.tif"
