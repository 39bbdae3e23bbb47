"""Tessera (annual, 128-d, 10 m): the Zarr store in the geo-embeddings convention, and the
legacy 0.1° ``grid_<lon>_<lat>`` tiles.

Zarr store: one group per UTM zone and hemisphere (``33N``, ``33S`` in the published store;
``utm33`` as geotessera writes it) with ``embeddings`` int8 ``(time, band, y, x)`` (axes found by
their Zarr dimension names), ``scales`` float32 ``(time, y, x)``, ``time`` (years), ``x``/``y``
pixel centres, and ``proj:code`` / ``spatial:transform`` attributes. A vector is
``embeddings × scale``; a NaN scale is not embedded (water, or too few clear observations), an
infinite one land not processed yet. The default is the published plain Zarr copy, read over
HTTPS chunk by chunk (the Icechunk original needs the icechunk library and S3).
Legacy tiles: ``<root>/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>.npy`` ``(H, W, 128)`` int8 and
``…_scales.npy`` ``(H, W)``, georeferenced by ``<landmasks>/grid_<lon>_<lat>.tiff``.
"""

from __future__ import annotations

import io
import math
import threading
from typing import Any

import numpy as np
import pyproj
import rasterio
from affine import Affine

from ..errors import ProviderError, SpecError
from ..grid import roi_grid, roi_mask
from ..providers.base import FetchRequest, Observation
from ..providers.raster_io import parse_grid_crs
from ..providers.redact import redact
from ..specs import FrameSpec, SensorSpec, SpatialSpec, TemporalSpec
from .base import (
    ProductReader,
    ProductSpec,
    lonlat_bounds,
    observation,
    place_text,
    product_year,
    put_on_grid,
    window_for,
)
from .remote import NotFound, Remote, gdal_path, join

SPEC = ProductSpec(
    id="tessera",
    title="TESSERA v1.1 pixel embeddings (annual)",
    dim=128,
    band_prefix="T",
    years=tuple(range(2017, 2026)),
    resolution="10 m, UTM",
    scale_m=10.0,
    license="MIT (code); see the data terms published with geotessera",
    attribution="TESSERA embeddings by the University of Cambridge (ucam-eo/geotessera).",
    paper="https://arxiv.org/abs/2506.20380",
)


def _zones(spatial: SpatialSpec) -> list[tuple[int, bool]]:
    """(UTM zone, north?) pairs a place touches."""
    w, s, e, n = lonlat_bounds(spatial)
    first, last = int((w + 180) // 6) + 1, int((min(e, 179.999999) + 180) // 6) + 1
    halves = [h for h, hit in ((True, n >= 0), (False, s < 0)) if hit]
    return [(z, h) for z in range(max(1, first), min(60, last) + 1) for h in halves]


class _Gaps:
    """Why pixels are missing: not embedded (NaN scale: water, or too few clear observations) or
    land not processed yet (infinite scale)."""

    def __init__(self) -> None:
        self.water = self.pending = 0
        self.sources: list[str] = []

    def add(self, scales: np.ndarray) -> None:
        self.water += int(np.isnan(scales).sum())
        self.pending += int(np.isinf(scales).sum())

    def error(self, spatial: SpatialSpec, year: int) -> ProviderError:
        where = place_text(spatial)
        if self.water and not self.pending:
            why = "it is not embedded there (water, or too few clear observations that year)"
        elif self.pending:
            why = "that land is not processed yet for this year"
        else:
            why = "the product does not cover it"
        return ProviderError(f"Tessera has no embeddings for {where} in {year}: {why}; choose another year or "
                             "place, or an on-the-fly model")


#: The published plain Zarr v3 copy of the TESSERA v1.1 global store (anonymous reads over HTTPS;
#: the same data as the Icechunk store ``s3://tessera-embeddings/v1.1/dclimate.icechunk``).
DEFAULT_STORE = "https://tessera-embeddings.s3.us-west-2.amazonaws.com/v1.1/cambridge.zarr"
_AXES = {"time": ("time", "t", "year"), "band": ("band", "bands", "dim", "dims", "embedding", "channel"),
         "y": ("y", "northing", "lat"), "x": ("x", "easting", "lon")}


def store_url(url: str, region: str = "us-west-2") -> str:
    """An http(s) URL (or a folder) for a store given as ``s3://bucket/prefix`` or as is."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        return f"https://{bucket}.s3.{region}.amazonaws.com/{prefix}".rstrip("/")
    return url.rstrip("/")


def _axes(arr: Any, want: tuple[str, ...]) -> tuple[int, ...]:
    """Positions of the `want` axes in `arr`, from its Zarr v3 dimension names (else the convention's
    order)."""
    names = [str(n).lower() if n is not None else "" for n in (getattr(arr.metadata, "dimension_names", None) or ())]
    if len(names) != arr.ndim or not all(names):
        return tuple(range(len(want)))
    out = []
    for axis in want:
        hit = [i for i, n in enumerate(names) if n in _AXES[axis]]
        if not hit:
            raise ProviderError(f"a Tessera array has dimensions {names}; it lacks {axis!r}, so it is not in the "
                                "geo-embeddings layout")
        out.append(hit[0])
    return tuple(out)


def _read(arr: Any, want: tuple[str, ...], sel: dict[str, Any]) -> np.ndarray:
    """`arr` sliced by axis name and returned in the `want` order."""
    pos = _axes(arr, want)
    index: list[Any] = [slice(None)] * arr.ndim
    for axis, p in zip(want, pos):
        index[p] = sel.get(axis, slice(None))
    data = np.asarray(arr[tuple(index)])
    kept = [p for axis, p in zip(want, pos) if not isinstance(sel.get(axis), int)]
    order = sorted(kept)
    return np.transpose(data, [order.index(p) for p in kept])


def _years(arr: Any) -> list[int]:
    v = np.asarray(arr[:]).ravel()
    if np.issubdtype(v.dtype, np.datetime64):
        return [int(str(t)[:4]) for t in v.astype("datetime64[Y]")]
    units = str(dict(arr.attrs).get("units", ""))
    if units.startswith("days since"):
        base = np.datetime64(units.split("since", 1)[1].strip()[:10])
        return [int(str(base + np.timedelta64(int(d), "D"))[:4]) for d in v]
    return [int(x) for x in v]


class TesseraZarr(ProductReader):
    """Tessera from a Zarr v3 store in the geo-embeddings convention (groups ``33N`` / ``33S`` as
    published, or ``utm33`` as geotessera writes them), reading only the chunks a place needs."""

    spec = SPEC
    route = "zarr"

    def __init__(self, url: str | None = None, *, region: str = "us-west-2", retries: int = 3,
                 backoff: float = 0.5, timeout: float = 60.0) -> None:
        self.url = store_url(url or DEFAULT_STORE, region)
        self.remote = Remote(retries=retries, backoff=backoff, timeout=timeout)
        self._groups: dict[tuple[int, bool], Any] = {}
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "store": redact(self.url)}

    def request(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                frames: FrameSpec | None = None) -> FetchRequest:
        product_year(self.spec, temporal)
        crs = spatial.working_crs
        anchor = (0.0, 0.0)
        zone = crs.utm_zone
        if zone:
            group = self._group(int(zone[:-1]), zone[-1].upper() == "N")
            if group is not None and parse_grid_crs(group["crs"]) == crs:
                t = group["transform"]
                anchor = (t.c, t.f)
        return FetchRequest(spatial, roi_grid(spatial, self.spec.scale_m, crs=crs, anchor=anchor), temporal,
                            sensor, None)

    def _open(self, zone: int, north: bool) -> tuple[Any, str] | None:
        import zarr

        from .zarr_http import HttpZarrStore

        store = HttpZarrStore(self.url, self.remote)
        for name in (f"{zone:02d}{'N' if north else 'S'}", f"utm{zone:02d}"):
            try:
                return zarr.open_group(store, path=name, mode="r", zarr_format=3, use_consolidated=False), name
            except (FileNotFoundError, KeyError, NotFound):
                continue
            except ProviderError:
                raise
            except Exception as exc:
                raise ProviderError(f"the Tessera store at {redact(self.url)} could not be opened ({redact(exc)}); "
                                    "check store=") from None
        return None

    def _group(self, zone: int, north: bool) -> dict[str, Any] | None:
        key = (zone, north)
        with self._lock:
            if key in self._groups:
                return self._groups[key]
        found = self._open(zone, north)
        info = None
        if found is not None:
            g, name = found
            attrs = dict(g.attrs)
            code = attrs.get("proj:code") or attrs.get("crs")
            if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
                code = f"EPSG:{code}"
            crs = str(code or f"EPSG:{(32600 if north or name.startswith('utm') else 32700) + zone}")
            if "spatial:transform" in attrs:
                transform = Affine(*[float(v) for v in attrs["spatial:transform"][:6]])
            else:
                x, y = g["x"][:2], g["y"][:2]
                dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
                transform = Affine(dx, 0, float(x[0]) - dx / 2, 0, dy, float(y[0]) - dy / 2)
            info = {"group": g, "name": name, "crs": crs, "transform": transform, "years": _years(g["time"])}
        with self._lock:
            self._groups[key] = info
        return info

    def fetch(self, request: FetchRequest) -> Observation:
        spatial, grid = request.spatial, request.grid
        year = product_year(self.spec, request.temporal)
        out = np.full((self.spec.dim, grid.height, grid.width), np.nan, np.float32)
        valid = np.zeros((grid.height, grid.width), bool)
        gaps = _Gaps()
        work = pyproj.CRS.from_user_input(grid.crs).utm_zone or ""
        for zone, north in sorted(_zones(spatial), key=lambda zn: f"{zn[0]}{'N' if zn[1] else 'S'}" != work):
            info = self._group(zone, north)
            if info is None or year not in info["years"] or info["name"] in gaps.sources:
                continue
            g, t = info["group"], info["transform"]
            emb, scales = g["embeddings"], g["scales"]
            h, w = (emb.shape[i] for i in _axes(emb, ("time", "band", "y", "x"))[2:])
            win = window_for(grid, info["crs"], t, h, w)
            if win is None:
                continue
            r0, r1, c0, c1 = win
            sel = {"time": info["years"].index(year), "y": slice(r0, r1), "x": slice(c0, c1)}
            try:
                sc = _read(scales, ("time", "y", "x"), sel).astype(np.float32)
                vals = _read(emb, ("time", "band", "y", "x"), sel).astype(np.float32)
            except ProviderError:
                raise
            except Exception as exc:
                raise ProviderError(f"reading the Tessera store at {redact(self.url)} failed ({redact(exc)})") from None
            gaps.add(sc)
            vals *= np.where(np.isfinite(sc), sc, np.nan)[None]  # in place: a 10 km place is ~0.5 GB
            put_on_grid(vals, t * Affine.translation(c0, r0), info["crs"], grid, out, valid)
            gaps.sources.append(info["name"])
        roi = roi_mask(spatial, grid)
        if not (valid & roi).any():
            raise gaps.error(spatial, year)
        meta = {"source": "zarr", "store": redact(self.url), "groups": gaps.sources}
        return observation(out, valid, grid, self.spec, year, roi, meta)


def tile_name(lon: float, lat: float) -> str:
    """The legacy tile holding (lon, lat): centres at odd multiples of 0.05°."""
    return f"grid_{math.floor(lon * 10) / 10 + 0.05:.2f}_{math.floor(lat * 10) / 10 + 0.05:.2f}"


def _npy_header(raw: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran:
        raise ProviderError("a Tessera tile is stored in Fortran order; only C order is read")
    return tuple(shape), np.dtype(dtype), f.tell()


class TesseraTiles(ProductReader):
    """Tessera from the legacy 0.1° tiles (``.npy`` + ``_scales.npy``), reading only the rows a
    place needs."""

    spec = SPEC
    route = "tiles"

    def __init__(self, url: str, landmasks: str | None = None, *, retries: int = 3, backoff: float = 0.5,
                 timeout: float = 60.0) -> None:
        if not isinstance(url, str) or not url.strip():
            raise SpecError("tessera needs tiles=<URL or folder of the grid_<lon>_<lat> tiles>")
        self.url = url.rstrip("/")
        self.landmasks = (landmasks or join(self.url, "landmasks")).rstrip("/")
        self.remote = Remote(retries=retries, backoff=backoff, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tiles": redact(self.url)}

    def request(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                frames: FrameSpec | None = None) -> FetchRequest:
        product_year(self.spec, temporal)
        crs = spatial.working_crs
        c = spatial.shape("EPSG:4326").centroid
        head = self._landmask(tile_name(c.x, c.y))
        anchor = (head[1].c, head[1].f) if head and parse_grid_crs(head[0]) == crs else (0.0, 0.0)
        return FetchRequest(spatial, roi_grid(spatial, self.spec.scale_m, crs=crs, anchor=anchor), temporal,
                            sensor, None)

    def _landmask(self, name: str) -> tuple[str, Affine, int, int] | None:
        try:
            path = self.remote.cached(join(self.landmasks, f"{name}.tiff"), "a Tessera landmask")
        except NotFound:
            return None
        with rasterio.open(gdal_path(str(path))) as src:
            return src.crs.to_string(), src.transform, src.height, src.width

    def _rows(self, url: str, r0: int, r1: int, what: str) -> np.ndarray:
        head = self.remote.get(url, 0, 1024, what=what)
        shape, dtype, offset = _npy_header(head)
        row = int(np.prod(shape[1:])) * dtype.itemsize
        raw = self.remote.get(url, offset + r0 * row, offset + r1 * row, what=what)
        return np.frombuffer(raw, dtype=dtype).reshape((r1 - r0, *shape[1:]))

    def fetch(self, request: FetchRequest) -> Observation:
        spatial, grid = request.spatial, request.grid
        year = product_year(self.spec, request.temporal)
        w, s, e, n = lonlat_bounds(spatial)
        names = sorted({tile_name(x, y) for x in np.arange(math.floor(w * 10), math.floor(e * 10) + 1) / 10 + 0.01
                        for y in np.arange(math.floor(s * 10), math.floor(n * 10) + 1) / 10 + 0.01})
        out = np.zeros((self.spec.dim, grid.height, grid.width), np.float32)
        valid = np.zeros((grid.height, grid.width), bool)
        gaps = _Gaps()
        for name in names:
            head = self._landmask(name)
            if head is None:
                continue
            crs, t, h, wd = head
            win = window_for(grid, crs, t, h, wd)
            if win is None:
                continue
            r0, r1, c0, c1 = win
            base = join(self.url, str(year), name, name)
            try:
                q = self._rows(f"{base}.npy", r0, r1, "a Tessera tile")[:, c0:c1]
                sc = self._rows(f"{base}_scales.npy", r0, r1, "a Tessera tile's scales")[:, c0:c1]
            except NotFound:
                continue
            sc = np.asarray(sc, np.float32)
            gaps.add(sc)
            vals = np.moveaxis(q.astype(np.float32), -1, 0) * np.where(np.isfinite(sc) & (sc > 0), sc, np.nan)[None]
            put_on_grid(vals, t * Affine.translation(c0, r0), crs, grid, out, valid)
            gaps.sources.append(name)
        roi = roi_mask(spatial, grid)
        if not (valid & roi).any():
            raise gaps.error(spatial, year)
        meta = {"source": "tiles", "tiles": gaps.sources, "root": redact(self.url)}
        return observation(out, valid, grid, self.spec, year, roi, meta)
