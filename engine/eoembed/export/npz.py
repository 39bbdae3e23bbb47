"""Pooled embeddings as NumPy ``.npz``: ids, an ``(N, D)`` float32 matrix and JSON metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from ..providers.redact import scrub
from .atomic import atomic_path


def write_npz(
    path: str | Path,
    ids: Sequence[Any],
    vectors: np.ndarray,
    *,
    model: str = "",
    meta: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ids, vectors ``(N, D)`` and `meta` (as JSON) atomically; no pickled objects."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ExportError(f"{len(ids)} ids and vectors of shape {vectors.shape} do not line up")
    payload = {
        "ids": np.array([str(i) for i in ids], dtype=str),
        "vectors": vectors,
        "model": np.array(model),
        "meta": np.array(json.dumps(scrub(meta or {}), default=str)),
        **(arrays or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)
    return path


def read_npz(path: str | Path) -> dict[str, Any]:
    """Read a file from :func:`write_npz`: ids, vectors, model, meta and any extra arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a readable eoembed .npz file ({exc})") from exc
    if "vectors" not in data or "ids" not in data:
        raise ExportError(f"{path} has no 'ids'/'vectors' arrays; it was not written by eoembed")
    out: dict[str, Any] = {
        "ids": [str(i) for i in data.pop("ids")],
        "vectors": data.pop("vectors").astype(np.float32),
        "model": str(data.pop("model", "")),
        "meta": json.loads(str(data.pop("meta", "{}"))),
    }
    out.update(data)
    return out
