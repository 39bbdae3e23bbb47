"""Pixel grids on the ground: where a place's pixels lie (CRS, affine transform, size)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize
from rasterio.io import MemoryFile

from .errors import SpecError
from .specs import PointBuffer, SpatialSpec, crs_string, parse_crs

#: Most pixels one place may have on a side; larger places should use a coarser scale_m.
MAX_SIDE_PX = 8192
#: Edges this close to a lattice line (in pixels) are on it: reprojection round trips differ by less.
_SNAP_TOL = 1e-6


@dataclass(frozen=True)
class GridSpec:
    """A north-up pixel grid: `crs`, the affine `transform` of its top-left corner, and size.

    `basis` says why the grid lies where it does (see :mod:`eoembed.working_grid`); it is not
    part of the grid's identity.
    """

    crs: str
    transform: Affine
    width: int
    height: int
    basis: str = field(default="", compare=False)

    @property
    def res(self) -> tuple[float, float]:
        return (self.transform.a, -self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    def xs(self) -> np.ndarray:
        """x coordinates of the pixel centres."""
        return self.transform.c + self.transform.a * (np.arange(self.width) + 0.5)

    def ys(self) -> np.ndarray:
        """y coordinates of the pixel centres (descending for north-up grids)."""
        return self.transform.f + self.transform.e * (np.arange(self.height) + 0.5)

    def coarsen(self, out_h: int, out_w: int) -> GridSpec:
        """The grid covering the same extent with `out_h` × `out_w` larger pixels."""
        t = self.transform
        return GridSpec(
            self.crs,
            Affine(t.a * self.width / out_w, 0.0, t.c, 0.0, t.e * self.height / out_h, t.f),
            out_w,
            out_h,
            self.basis,
        )

    def key(self) -> str:
        t = self.transform
        return f"{self.crs}|{t.c!r},{t.f!r},{t.a!r},{t.e!r}|{self.width}x{self.height}"


def roi_grid(
    spatial: SpatialSpec,
    scale_m: float,
    crs: Any | None = None,
    anchor: tuple[float, float] = (0.0, 0.0),
    basis: str = "",
) -> GridSpec:
    """The grid of `scale_m` pixels covering `spatial` in its working CRS.

    Pixel edges are snapped to multiples of `scale_m`, so grids of different places share one
    lattice and align with Sentinel-2's native 10/20/60 m pixels in the same UTM zone.
    A PointBuffer gives exactly ``round(2·buffer_m / scale_m)`` pixels a side.
    `crs` overrides the working CRS and `anchor` shifts the lattice (a point on a pixel
    corner), so that a provider can put the grid on its imagery's own pixels; providers choose
    both with :func:`eoembed.working_grid.working_grid`. `basis` is recorded on the grid.
    """
    crs = spatial.working_crs if crs is None else parse_crs(crs)
    ax, ay = anchor
    if isinstance(spatial, PointBuffer):
        cx, cy = spatial.center(crs)
        n = max(1, round(2 * spatial.buffer_m / scale_m))
        minx = ax + round((cx - n * scale_m / 2 - ax) / scale_m) * scale_m
        maxy = ay + round((cy + n * scale_m / 2 - ay) / scale_m) * scale_m
        width = height = n
    else:
        x0, y0, x1, y1 = spatial.shape(crs).bounds
        x0, x1, y0, y1 = x0 - ax, x1 - ax, y0 - ay, y1 - ay
        minx = ax + math.floor(x0 / scale_m + _SNAP_TOL) * scale_m
        maxy = ay + math.ceil(y1 / scale_m - _SNAP_TOL) * scale_m
        width = max(1, math.ceil(x1 / scale_m - _SNAP_TOL) - math.floor(x0 / scale_m + _SNAP_TOL))
        height = max(1, math.ceil(y1 / scale_m - _SNAP_TOL) - math.floor(y0 / scale_m + _SNAP_TOL))
    if max(width, height) > MAX_SIDE_PX:
        raise SpecError(
            f"the place is {width}×{height} pixels at {scale_m:g} m, more than {MAX_SIDE_PX} a side; "
            "use a larger scale_m or a smaller area"
        )
    return GridSpec(
        crs_string(parse_crs(crs)), Affine(scale_m, 0.0, minx, 0.0, -scale_m, maxy), width, height, basis
    )


def roi_mask(spatial: SpatialSpec, grid: GridSpec) -> np.ndarray:
    """Boolean (height, width) mask, True where a pixel's centre lies inside the footprint.

    Non-polygon places (boxes, buffered points) are all True. A polygon too thin to contain
    any pixel centre falls back to every pixel it touches.
    """
    if not spatial.is_polygon:
        return np.ones((grid.height, grid.width), dtype=bool)
    shape = spatial.shape(grid.crs)
    inside = burn_mask(shape, grid, all_touched=False)
    if not inside.any():
        inside = burn_mask(shape, grid, all_touched=True)
    return inside


def burn_mask(shape: Any, grid: GridSpec, all_touched: bool = False) -> np.ndarray:
    """Boolean (height, width): pixels whose centre lies in `shape` (or that it touches).

    GDAL burns into an in-memory dataset created with the grid's transform (rasterio's own
    array path starts its in-memory dataset without one, which printed
    ``NotGeoreferencedWarning`` when several threads rasterised at once).
    """
    profile = dict(driver="MEM", width=grid.width, height=grid.height, count=1, dtype="uint8",
                   transform=grid.transform)
    with MemoryFile() as mem, mem.open(**profile) as dst:
        rasterize([(shape, 1)], dst_path=dst, transform=grid.transform, all_touched=all_touched, fill=0)
        return dst.read(1).astype(bool)
