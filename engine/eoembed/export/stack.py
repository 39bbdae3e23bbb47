"""Many grid embeddings in one NetCDF file (netCDF3 via xarray + scipy; no extra dependency).

Layout: ``embedding(roi, band, y, x)`` float32, grids smaller than the largest padded with
NaN at the bottom/right; per ROI its ``roi_id``, ``crs``, affine ``transform`` (GDAL order),
true ``height``/``width``, pixel-centre coordinates ``x_coord(roi, x)`` / ``y_coord(roi, y)``
and its provenance as JSON in ``meta``. ROIs may lie in different CRSs; each keeps its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

from ..embedding import Embedding, grid_dataarray
from ..errors import ExportError
from ..grid import GridSpec
from ..providers.redact import scrub
from .atomic import atomic_path


def write_grid_stack(
    path: str | Path,
    items: Sequence[tuple[str, Embedding]],
    *,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write `(id, grid Embedding)` pairs of one model to one NetCDF file atomically."""
    if not items:
        raise ExportError("no grid embeddings to write to a stack")
    dims = {e.dim for _, e in items}
    if len(dims) != 1 or not all(e.is_grid for _, e in items):
        raise ExportError("a grid stack holds grid embeddings of one model with one number of bands")
    n, d = len(items), dims.pop()
    h = max(int(e.data.sizes["y"]) for _, e in items)
    w = max(int(e.data.sizes["x"]) for _, e in items)
    values = np.full((n, d, h, w), np.nan, np.float32)
    xs = np.full((n, w), np.nan)
    ys = np.full((n, h), np.nan)
    for i, (_, e) in enumerate(items):
        g = e.grid
        assert g is not None
        values[i, :, : g.height, : g.width] = e.to_numpy()
        xs[i, : g.width] = g.xs()
        ys[i, : g.height] = g.ys()
    ds = xr.Dataset(
        {
            "embedding": (("roi", "band", "y", "x"), values, {"_FillValue": np.float32(np.nan)}),
            "roi_id": (("roi",), np.array([str(i) for i, _ in items], dtype=object)),
            "crs": (("roi",), np.array([str(e.crs) for _, e in items], dtype=object)),
            "transform": (("roi", "affine"), np.array([tuple(e.transform)[:6] for _, e in items], np.float64)),
            "height": (("roi",), np.array([e.data.sizes["y"] for _, e in items], np.int32)),
            "width": (("roi",), np.array([e.data.sizes["x"] for _, e in items], np.int32)),
            "x_coord": (("roi", "x"), xs),
            "y_coord": (("roi", "y"), ys),
            "meta": (("roi",), np.array([json.dumps(scrub(e.meta), default=str) for _, e in items], dtype=object)),
        },
        coords={"band": [str(b) for b in items[0][1].data.coords["band"].values]},
        attrs={"Conventions": "eoembed-grid-stack-1", "eoembed": json.dumps(scrub(meta or {}), default=str)},
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="scipy", format="NETCDF3_64BIT")
    return path


def read_grid_stack(path: str | Path) -> dict[str, Embedding]:
    """Read a stack from :func:`write_grid_stack`: ``{roi id: grid Embedding}`` in file order."""
    try:
        ds = xr.open_dataset(path, engine="scipy", mask_and_scale=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ExportError(f"{path} is not a readable eoembed NetCDF grid stack ({exc})") from exc
    with ds:
        if "embedding" not in ds or "transform" not in ds:
            raise ExportError(f"{path} has no 'embedding'/'transform' variables; it was not written by eoembed")
        values = ds["embedding"].values
        bands = [str(b) for b in ds["band"].values]
        out: dict[str, Embedding] = {}
        for i in range(ds.sizes["roi"]):
            h, w = int(ds["height"].values[i]), int(ds["width"].values[i])
            grid = GridSpec(str(ds["crs"].values[i]), Affine(*ds["transform"].values[i]), w, h)
            arr = grid_dataarray(values[i, :, :h, :w], grid).assign_coords(band=bands)
            out[str(ds["roi_id"].values[i])] = Embedding(arr, json.loads(str(ds["meta"].values[i])))
    return out
