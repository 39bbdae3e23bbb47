"""The result type: an embedding vector or a georeferenced embedding grid, with its provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine

from .grid import GridSpec


@dataclass
class Embedding:
    """One embedding of one place by one model.

    `data` is a float32 vector ``(D,)`` for pooled output, or an ``xarray.DataArray`` with dims
    ``(band, y, x)`` for grid output whose ``x``/``y`` coordinates are pixel centres in the CRS
    ``data.attrs["crs"]`` and whose ``data.attrs["transform"]`` is the affine transform (GDAL
    order), so it writes straight to a GeoTIFF. `meta` holds what is needed to reproduce it.
    """

    data: np.ndarray | xr.DataArray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_grid(self) -> bool:
        return isinstance(self.data, xr.DataArray)

    @property
    def dim(self) -> int:
        return int(self.data.shape[0])

    @property
    def crs(self) -> str | None:
        return self.data.attrs.get("crs") if self.is_grid else self.meta.get("crs")

    @property
    def transform(self) -> Affine | None:
        if not self.is_grid:
            return None
        return Affine(*self.data.attrs["transform"][:6])

    @property
    def grid(self) -> GridSpec | None:
        """The pixel grid of a grid embedding (None for pooled)."""
        if not self.is_grid:
            return None
        return GridSpec(self.crs, self.transform, int(self.data.sizes["x"]), int(self.data.sizes["y"]))

    def to_numpy(self) -> np.ndarray:
        """The values as a plain float32 array: ``(D,)`` or ``(D, H, W)``."""
        return np.asarray(self.data.values if self.is_grid else self.data, dtype=np.float32)

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.data.shape)
        kind = f"grid {shape} in {self.crs}" if self.is_grid else f"pooled ({shape})"
        return f"<Embedding {self.meta.get('model', '?')} {kind}>"


def grid_dataarray(values: np.ndarray, grid: GridSpec, band_prefix: str = "emb") -> xr.DataArray:
    """Wrap a ``(D, H, W)`` array on `grid` as a labelled, georeferenced DataArray."""
    d, h, w = values.shape
    if (h, w) != (grid.height, grid.width):
        raise ValueError(f"values are {h}×{w} but the grid is {grid.height}×{grid.width}")
    return xr.DataArray(
        np.ascontiguousarray(values, dtype=np.float32),
        dims=("band", "y", "x"),
        coords={
            "band": [f"{band_prefix}_{i:04d}" for i in range(d)],
            "y": grid.ys(),
            "x": grid.xs(),
        },
        attrs={"crs": grid.crs, "transform": tuple(grid.transform)[:6]},
    )
