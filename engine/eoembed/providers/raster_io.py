"""Reading raster pixels onto a target grid: a window read when grids align, a warp otherwise.

Only the part of a file that the grid needs is read (for a COG over HTTP: range requests).
"""

from __future__ import annotations

import math
import threading
import weakref
from functools import lru_cache

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import reproject
from rasterio.windows import Window

from ..grid import GridSpec

_ALIGN_TOL = 1e-6  # in pixels


@lru_cache(maxsize=256)
def parse_grid_crs(crs: str) -> CRS:
    """rasterio CRS of a grid's CRS text (memoised: parsing WKT costs more than a small read)."""
    return CRS.from_user_input(crs)


#: per open dataset, whether its CRS is that of a grid CRS text: comparing two CRSs costs more than
#: reading a cached tile, and a dataset kept open is read for many places on the same grid CRS
_SAME_CRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SAME_CRS_LOCK = threading.Lock()


def _same_crs(src: rasterio.io.DatasetReader, crs: str) -> bool:
    with _SAME_CRS_LOCK:
        known = _SAME_CRS.get(src)
        if known is not None and crs in known:
            return known[crs]
    same = src.crs is not None and src.crs == parse_grid_crs(crs)
    with _SAME_CRS_LOCK:
        _SAME_CRS.setdefault(src, {})[crs] = same
    return same


def aligned_offset(src: rasterio.io.DatasetReader, grid: GridSpec) -> tuple[int, int] | None:
    """(row, col) of the grid's top-left pixel in `src` when both share CRS, pixel size and
    lattice, else None (a warp is needed)."""
    st = src.transform
    if not _same_crs(src, grid.crs) or st.b or st.d:
        return None
    return lattice_offset(st.a, st.c, st.e, st.f, grid)


def lattice_offset(a: float, c: float, e: float, f: float, grid: GridSpec) -> tuple[int, int] | None:
    """(row, col) of the grid's top-left pixel on the north-up lattice ``x = a·col + c``,
    ``y = e·row + f`` when the grid has its pixel size and lies on it, else None."""
    gt = grid.transform
    if gt.b or gt.d:
        return None
    if abs(a - gt.a) > _ALIGN_TOL * abs(gt.a) or abs(e - gt.e) > _ALIGN_TOL * abs(gt.e):
        return None
    col = (gt.c - c) / a
    row = (gt.f - f) / e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return int(round(row)), int(round(col))


def read_to_grid(
    src: rasterio.io.DatasetReader,
    indexes: list[int],
    grid: GridSpec,
    resampling: Resampling = Resampling.bilinear,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of bands `indexes` (1-based) of `src` on `grid`.

    Returns float32 values ``(C, H, W)`` and validity ``(H, W)``: False where the file has no
    data (outside its extent or equal to its nodata, or `nodata` when the file declares none).
    """
    nd = src.nodata if src.nodata is not None else nodata
    h, w = grid.height, grid.width
    off = aligned_offset(src, grid)
    if off is not None:
        return _read_aligned(src, indexes, off, h, w, nd)
    return _read_warped(src, indexes, grid, resampling, nd)


def _read_aligned(src, indexes, off, h, w, nd):
    row, col = off
    out = np.zeros((len(indexes), h, w), np.float32)
    valid = np.zeros((h, w), bool)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, src.height), min(col + w, src.width)
    if r0 >= r1 or c0 >= c1:
        return out, valid
    data = src.read(indexes, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=np.float32)
    out[:, r0 - row : r1 - row, c0 - col : c1 - col] = data
    ok = np.ones(data.shape[1:], bool)
    if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
        ok &= ~(data == nd).all(axis=0)
    ok &= ~np.isnan(data).any(axis=0)
    valid[r0 - row : r1 - row, c0 - col : c1 - col] = ok
    out[:, ~valid] = 0.0
    return out, valid


def _read_warped(src, indexes, grid, resampling, nd):
    """Warp bands of the open dataset `src` onto `grid`; GDAL reads only the blocks it needs.

    Both ends are georeferenced datasets: the file itself and an in-memory dataset created
    with the grid's CRS and transform. (Handing rasterio plain arrays makes it build in-memory
    datasets that start without a geotransform, which printed ``NotGeoreferencedWarning``.)
    """
    h, w = grid.height, grid.width
    n = len(indexes)
    src_nodata = None if nd is None or (isinstance(nd, float) and math.isnan(nd)) else nd
    profile = dict(driver="MEM", width=w, height=h, count=n, dtype="float32",
                   crs=parse_grid_crs(grid.crs), transform=grid.transform, nodata=np.nan)
    with MemoryFile() as mem, mem.open(**profile) as dst:
        reproject(
            source=rasterio.band(src, list(indexes)),
            destination=rasterio.band(dst, list(range(1, n + 1))),
            src_nodata=src_nodata,
            dst_nodata=np.nan,
            resampling=resampling,
        )
        out = dst.read(out_dtype=np.float32)
    valid = ~np.isnan(out).any(axis=0)
    out[:, ~valid] = 0.0
    return out, valid


def http_gdal_env(timeout: float, *, vrt: bool = False) -> dict[str, str]:
    """GDAL options for windowed COG reads over HTTP. Retries are the caller's: GDAL must neither
    retry nor cache a failed URL, or a later attempt in this process would be answered from it."""
    seconds = str(max(1, int(round(timeout))))
    extensions = ".tif,.tiff,.TIF,.TIFF" + (",.vrt,.VRT" if vrt else "")
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": extensions,
        "GDAL_HTTP_MAX_RETRY": "0",
        "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/",
        "GDAL_HTTP_TIMEOUT": seconds,
        "GDAL_HTTP_CONNECTTIMEOUT": seconds,
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "AWS_NO_SIGN_REQUEST": "YES",
        "CPL_CURL_VERBOSE": "NO",
    }
