"""User imagery described: what the array, DataArray or raster holds and where it lies.

Reads numpy ``[C, H, W]`` / ``[T, C, H, W]`` arrays, ``xarray.DataArray`` objects, raster paths
and open rasterio datasets into uniform pixels with band names, a grid and dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
from affine import Affine

from .errors import SpecError
from .grid import GridSpec
from .sensors import S2_STACK_LAYOUTS, normalize_band, normalize_collection
from .specs import SpatialSpec, TemporalSpec, _parse_date, crs_string, parse_crs

#: A metric CRS with no place on Earth, for arrays given without georeferencing.
PIXEL_CRS = (
    'ENGCRS["eoembed pixel grid (not georeferenced)",EDATUM["none"],CS[Cartesian,2],'
    'AXIS["easting (x)",east,ORDER[1],LENGTHUNIT["metre",1]],'
    'AXIS["northing (y)",north,ORDER[2],LENGTHUNIT["metre",1]]]'
)


@dataclass
class UserData:
    """Imagery the user holds, with what it is: band names, collection, georeferencing, dates.

    `data`: numpy ``[C, H, W]`` or ``[T, C, H, W]``, an ``xarray.DataArray`` with ``band``/``y``/
    ``x`` (and ``time``) dims, a raster path or an open rasterio dataset. `nodata` marks missing
    pixels (Sentinel-2 uses 0) when the data do not declare their own.
    """

    data: Any
    bands: Sequence[str] | None = None
    collection: str = "sentinel-2-l2a"
    crs: Any = None
    transform: Any = None
    dates: Sequence[Any] | None = None
    spatial: SpatialSpec | None = None
    temporal: TemporalSpec | None = None
    scale_m: float | None = None
    nodata: float | None = 0.0


@dataclass
class Pixels:
    """User imagery made uniform: ``(T, C, H, W)`` float32 with band names, grid and dates."""

    array: np.ndarray
    bands: tuple[str, ...]
    grid: GridSpec
    georeferenced: bool
    dates: list[date] | None
    collection: str
    nodata: float | None
    kind: str
    notes: dict[str, Any] = field(default_factory=dict)



def as_userdata(data: Any, overrides: dict[str, Any]) -> UserData:
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(UserData.__dataclass_fields__))
    if unknown:
        raise SpecError(f"data cannot be described by {', '.join(unknown)}")
    if isinstance(data, UserData):  # the item's own description wins over shared keywords
        own = {k: v for k, v in data.__dict__.items() if v is not None}
        return UserData(**{**given, **own})
    return UserData(data=data, **given)


def _band_names(names: Sequence[Any], count: int, what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise SpecError(f"bands must be a list of band names like ['B04', 'B03', 'B02'], not the string {names!r}")
    if len(names) != count:
        raise SpecError(f"{what} has {count} bands but {len(names)} band names were given; give one name per band")
    out = tuple(normalize_band(n) for n in names)
    if len(set(out)) != len(out):
        raise SpecError(f"band names {list(names)} name a band twice")
    return out


def _default_bands(count: int, what: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    if count in S2_STACK_LAYOUTS:
        layout = S2_STACK_LAYOUTS[count]
        return layout, {"bands_assumed": f"{count}-band Sentinel-2 layout {','.join(layout)}"}
    raise SpecError(f"{what} has {count} bands and no band names; pass bands=[one name per band]")


def _grid(crs: Any, transform: Any, h: int, w: int, spatial: SpatialSpec | None,
          scale_m: float) -> tuple[GridSpec, bool]:
    if (crs is None) != (transform is None):
        raise SpecError("give both crs and transform to georeference the data, or neither")
    if crs is not None:
        t = transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise SpecError(f"transform {tuple(t)[:6]} is not north-up; give a north-up affine transform (b = d = 0, e < 0)")
        return GridSpec(crs_string(parse_crs(crs)), t, w, h), True
    if spatial is not None:
        wc = spatial.working_crs
        minx, miny, maxx, maxy = spatial.shape(wc).bounds
        t = Affine((maxx - minx) / w, 0.0, minx, 0.0, -(maxy - miny) / h, maxy)
        return GridSpec(crs_string(wc), t, w, h), True
    return GridSpec(PIXEL_CRS, Affine(scale_m, 0.0, 0.0, 0.0, -scale_m, h * scale_m), w, h), False


def _from_dataset(src: Any, ud: UserData) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any], Any, Any, float | None]:
    arr = src.read(out_dtype=np.float32)
    if ud.bands is not None:
        bands, notes = _band_names(ud.bands, src.count, "the raster"), {}
    elif all(src.descriptions):
        bands, notes = _band_names(src.descriptions, src.count, "the raster"), {}
    else:
        bands, notes = _default_bands(src.count, "the raster")
    if src.crs is None and ud.crs is None:
        crs = transform = None
    else:
        crs = ud.crs if ud.crs is not None else src.crs.to_wkt()
        transform = ud.transform if ud.transform is not None else src.transform
    nodata = src.nodata if src.nodata is not None else ud.nodata
    return arr, bands, notes, crs, transform, nodata


def _from_xarray(da: xr.DataArray, ud: UserData) -> tuple[np.ndarray, tuple[str, ...], dict[str, Any], Any, Any, list[Any] | None]:
    dims = set(da.dims)
    if not {"band", "y", "x"} <= dims or not dims <= {"time", "band", "y", "x"}:
        raise SpecError(f"the DataArray has dims {tuple(da.dims)}; give dims (band, y, x) or (time, band, y, x)")
    order = [d for d in ("time", "band", "y", "x") if d in dims]
    da = da.transpose(*order)
    arr = np.asarray(da.values, dtype=np.float32)
    if "time" not in dims:
        arr = arr[None]
    names = ud.bands if ud.bands is not None else (list(da["band"].values) if "band" in da.coords else None)
    if names is None:
        bands, notes = _default_bands(arr.shape[1], "the DataArray")
    else:
        bands, notes = _band_names([str(b) for b in names], arr.shape[1], "the DataArray"), {}
    crs = ud.crs if ud.crs is not None else da.attrs.get("crs")
    if crs is None and "spatial_ref" in da.coords:
        crs = da["spatial_ref"].attrs.get("crs_wkt")
    transform = ud.transform if ud.transform is not None else da.attrs.get("transform")
    if crs is not None and transform is None and "x" in da.coords and "y" in da.coords:
        transform = _transform_from_coords(np.asarray(da["x"].values, float), np.asarray(da["y"].values, float))
    dates = ud.dates
    if dates is None and "time" in da.coords:
        dates = [str(np.datetime64(t, "D")) for t in da["time"].values]
    return arr, bands, notes, crs, transform, dates


def _transform_from_coords(xs: np.ndarray, ys: np.ndarray) -> Affine:
    if len(xs) < 2 or len(ys) < 2:
        raise SpecError("the DataArray's x/y coordinates need at least two values each to give the pixel size")
    dx, dy = np.diff(xs), np.diff(ys)
    if not (np.allclose(dx, dx[0], rtol=1e-6) and np.allclose(dy, dy[0], rtol=1e-6)) or dx[0] <= 0 or dy[0] >= 0:
        raise SpecError("the DataArray's x/y coordinates are not a regular north-up grid; pass transform=")
    return Affine(dx[0], 0.0, xs[0] - dx[0] / 2, 0.0, dy[0], ys[0] - dy[0] / 2)


def read_pixels(ud: UserData, default_scale_m: float) -> Pixels:
    """The user's imagery as uniform ``(T, C, H, W)`` pixels on a grid."""
    data, notes, dates = ud.data, {}, ud.dates
    nodata = ud.nodata
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        if not path.is_file():
            raise SpecError(f"data path {str(data)!r} is not a file; give a GeoTIFF/VRT path, an array or a DataArray")
        with rasterio.open(path) as src:
            arr, bands, notes, crs, transform, nodata = _from_dataset(src, ud)
        arr, kind = arr[None], f"file {path.name}"
    elif hasattr(data, "read") and hasattr(data, "descriptions") and hasattr(data, "count"):
        arr, bands, notes, crs, transform, nodata = _from_dataset(data, ud)
        arr, kind = arr[None], "rasterio dataset"
    elif isinstance(data, xr.DataArray):
        arr, bands, notes, crs, transform, dates = _from_xarray(data, ud)
        kind = "xarray.DataArray"
    elif isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        arr = np.asarray(data, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise SpecError(f"the array has shape {arr.shape}; give [C, H, W] or [T, C, H, W]")
        if ud.bands is not None:
            bands = _band_names(ud.bands, arr.shape[1], "the array")
        else:
            bands, notes = _default_bands(arr.shape[1], "the array")
        crs, transform, kind = ud.crs, ud.transform, "array"
    else:
        raise SpecError(
            f"data of type {type(data).__name__} cannot be read; give a numpy array, an xarray.DataArray, "
            "a raster path or an open rasterio dataset"
        )
    t, _, h, w = arr.shape
    if t == 0 or h == 0 or w == 0:
        raise SpecError(f"the data is empty (shape {arr.shape})")
    scale = float(ud.scale_m) if ud.scale_m is not None else default_scale_m
    grid, georef = _grid(crs, transform, h, w, ud.spatial, scale)
    parsed = None
    if dates is not None:
        if isinstance(dates, (str, date)):
            dates = [dates]
        parsed = [_parse_date("dates", d) for d in dates]
        if len(parsed) != t:
            raise SpecError(f"the data has {t} frames but {len(parsed)} dates were given; give one date per frame")
    return Pixels(arr, bands, grid, georef, parsed, normalize_collection(ud.collection), nodata, kind, notes)
