"""What every product reader shares: the product's sensor, year choice, coverage sentences,
putting a product's pixels on the place's grid, and routing product requests past the imagery
provider."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from ..errors import CapabilityError, SpecError
from ..grid import GridSpec
from ..providers.base import FetchRequest, Observation, Provider, make_observation
from ..providers.raster_io import parse_grid_crs
from ..specs import FrameSpec, SensorSpec, SpatialSpec, TemporalSpec, transformer

WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class ProductSpec:
    """The facts of one embedding product, known without touching the network."""

    id: str
    title: str
    dim: int
    band_prefix: str
    years: tuple[int, ...]
    resolution: str
    scale_m: float
    license: str
    attribution: str
    paper: str = ""
    noncommercial: bool = False

    @property
    def bands(self) -> tuple[str, ...]:
        width = 2 if self.dim <= 100 else 3
        return tuple(f"{self.band_prefix}{i:0{width}d}" for i in range(self.dim))


@dataclass(frozen=True)
class ProductSensor(SensorSpec):
    """The "sensor" of a product: its collection (``product:<id>/<route>``) and its band names.

    A product is not imagery, so Sentinel-2 band names do not apply; requests carrying this
    sensor are answered by the product's reader, never by the imagery provider.
    """

    def __post_init__(self) -> None:
        if not str(self.collection).startswith("product:"):
            raise SpecError(f"collection={self.collection!r} is not a product collection")
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(str(b) for b in self.bands))
        object.__setattr__(self, "scale_m", float(self.scale_m))

    def with_bands(self, bands: tuple[str, ...]) -> ProductSensor:
        return ProductSensor(self.collection, tuple(bands), self.scale_m, self.cloudy_pct, self.fill_value,
                             self.composite)


def product_year(spec: ProductSpec, temporal: TemporalSpec | None) -> int:
    """The one product year a window asks for; CapabilityError when it asks for none or several."""
    years = spec.years
    if temporal is None or (temporal.end - temporal.start).days > 3 * 366:
        if len(years) == 1:
            return years[0]
        raise CapabilityError(
            f"{spec.id} is annual ({years[0]}–{years[-1]}); give one year, e.g. TemporalSpec.year({years[-1]})"
        )
    last = date.fromordinal(temporal.end.toordinal() - 1)
    inside = [y for y in range(temporal.start.year, last.year + 1) if y in years]
    if len(years) == 1:
        if not inside:
            raise CapabilityError(
                f"{spec.id} exists for {years[0]} only, but the window is {temporal.key()}; use "
                f"TemporalSpec.year({years[0]}) or leave the window out"
            )
        return years[0]
    if temporal.start.year != last.year:
        raise CapabilityError(
            f"{spec.id} is annual and the window {temporal.key()} spans {temporal.start.year}–{last.year}; "
            f"give one year, e.g. TemporalSpec.year({last.year})"
        )
    if not inside:
        raise CapabilityError(
            f"{spec.id} has the years {years[0]}–{years[-1]}, not {temporal.start.year}; choose one of those"
        )
    return inside[0]


def place_text(spatial: SpatialSpec) -> str:
    """A short human name of a place: its centre in degrees."""
    c = spatial.shape(WGS84).centroid
    return f"the place at {abs(c.x):.4f}°{'E' if c.x >= 0 else 'W'}, {abs(c.y):.4f}°{'N' if c.y >= 0 else 'S'}"


def lonlat_bounds(spatial: SpatialSpec) -> tuple[float, float, float, float]:
    return tuple(spatial.shape(WGS84).bounds)  # type: ignore[return-value]


def utm_epsg(zone: int, north: bool) -> str:
    return f"EPSG:{(32600 if north else 32700) + int(zone)}"


def put_on_grid(values: np.ndarray, transform: Any, crs: str, grid: GridSpec, out: np.ndarray,
                valid: np.ndarray) -> None:
    """Fill the still-invalid pixels of `out` ``(D, H, W)`` from `values` ``(D, h, w)`` (NaN =
    no data) lying at `transform` in `crs`: a copy when the lattices agree, else nearest-
    neighbour warping (embedding vectors are never blended)."""
    d = values.shape[0]
    t, g = transform, grid.transform
    same = parse_grid_crs(crs) == parse_grid_crs(grid.crs) and not (t.b or t.d)
    if same and math.isclose(t.a, g.a, rel_tol=1e-9) and math.isclose(t.e, g.e, rel_tol=1e-9):
        col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
        if abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
            col, row = int(round(col)), int(round(row))
            r0, c0 = max(row, 0), max(col, 0)
            r1, c1 = min(row + grid.height, values.shape[1]), min(col + grid.width, values.shape[2])
            if r0 >= r1 or c0 >= c1:
                return
            src = values[:, r0:r1, c0:c1]
            dst = (slice(None), slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
            ok = ~np.isnan(src).any(axis=0) & ~valid[dst[1:]]
            np.copyto(out[dst], src, where=ok[None])
            valid[dst[1:]] |= ok
            return
    tmp = np.full((d, grid.height, grid.width), np.nan, np.float32)
    reproject(source=np.ascontiguousarray(values, np.float32), destination=tmp, src_transform=transform,
              src_crs=parse_grid_crs(crs), src_nodata=np.nan, dst_transform=g, dst_crs=parse_grid_crs(grid.crs),
              dst_nodata=np.nan, resampling=Resampling.nearest)
    ok = ~np.isnan(tmp).any(axis=0) & ~valid
    np.copyto(out, tmp, where=ok[None])
    valid |= ok


def window_for(grid: GridSpec, crs: str, transform: Affine, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Rows and columns ``(r0, r1, c0, c1)`` of a raster that cover `grid` (one pixel margin)."""
    left, bottom, right, top = transform_bounds(parse_grid_crs(grid.crs), parse_grid_crs(crs), *grid.bounds,
                                                densify_pts=21)
    inv = ~transform
    cols, rows = zip(*(inv * (x, y) for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))))
    r0, r1 = max(0, math.floor(min(rows)) - 1), min(height, math.ceil(max(rows)) + 1)
    c0, c1 = max(0, math.floor(min(cols)) - 1), min(width, math.ceil(max(cols)) + 1)
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def observation(values: np.ndarray, valid: np.ndarray, grid: GridSpec, spec: ProductSpec, year: int,
                roi: np.ndarray, meta: dict[str, Any]) -> Observation:
    """An Observation of product vectors: ``(1, D, H, W)``, NaN where the product has no data
    (`values` is changed in place)."""
    vals = np.asarray(values, np.float32)
    if not valid.all():
        vals[:, ~valid] = np.nan
    meta = {"product": spec.id, "year": year, "coverage": round(float(valid[roi].mean()) if roi.any() else 0.0, 6),
            **meta}
    return make_observation(vals[None], valid[None], grid, spec.bands, [date(year, 7, 1)], roi, meta)


class ProductReader(Provider):
    """Reads one product's vectors for a place at the product's native lattice."""

    spec: ProductSpec
    route: str = "default"

    @property
    def collection(self) -> str:
        return f"product:{self.spec.id}"

    def sensor(self) -> ProductSensor:
        return ProductSensor(self.collection, self.spec.bands, self.spec.scale_m)

    def describe(self) -> dict[str, Any]:
        return {"provider": "product", "product": self.spec.id, "route": self.route}


class ProductRouter(Provider):
    """The imagery provider, with requests for products answered by their readers instead."""

    def __init__(self, base: Provider, readers: Iterable[ProductReader]) -> None:
        self.base = base
        self.readers = {r.collection: r for r in readers}
        self.name = base.name

    def _reader(self, sensor: SensorSpec) -> Provider:
        if isinstance(sensor, ProductSensor):
            return self.readers[sensor.collection]
        return self.base

    def grid_for(self, spatial: SpatialSpec, sensor: SensorSpec, temporal: TemporalSpec | None = None) -> GridSpec:
        return self._reader(sensor).grid_for(spatial, sensor, temporal)

    def request(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                frames: FrameSpec | None = None) -> FetchRequest:
        return self._reader(sensor).request(spatial, temporal, sensor, frames)

    def fetch(self, request: FetchRequest) -> Observation:
        return self._reader(request.sensor).fetch(request)

    def describe(self) -> dict[str, Any]:
        return self.base.describe()


class NoImagery(Provider):
    """The imagery provider of a run whose models are all products (nothing to read)."""

    name = "none"

    def fetch(self, request: FetchRequest) -> Observation:
        raise SpecError("this run has no imagery source; give source= for the models that need imagery")


def open_for(source: Any, options: dict[str, Any] | None, embedders: Sequence[Any]) -> Provider:
    """The run's provider: `source` opened, or no imagery at all when every model is a product
    and `source` is the default ``"local"`` without paths."""
    from ..providers import open_provider

    opts = dict(options or {})
    if source == "local" and "paths" not in opts and embedders and all(
            getattr(e, "precomputed", False) for e in embedders):
        return NoImagery()
    return open_provider(source, **opts)


def route_products(provider: Provider, embedders: Sequence[Any]) -> Provider:
    """`provider`, wrapped so that the product models among `embedders` read their products."""
    readers = [e.reader(provider) for e in embedders if getattr(e, "precomputed", False)]
    if not readers:
        return provider
    base = provider.base if isinstance(provider, ProductRouter) else provider
    return ProductRouter(base, readers)


__all__ = ["NoImagery", "open_for", "ProductReader", "ProductRouter", "ProductSensor", "ProductSpec", "product_year", "route_products",
           "transformer"]
