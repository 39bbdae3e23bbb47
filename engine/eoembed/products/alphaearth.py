"""AlphaEarth Foundations / Google Satellite Embedding v1 (annual, 64-d, 10 m), read from its
cloud-optimised GeoTIFFs (Google's bucket layout or the Source Cooperative copy) or through
Earth Engine.

COG layout: ``<base>/<year>/<zone><N|S>/<id>-<row>-<col>.tiff``, int8, 64 bands, nodata −128;
values de-quantise as ``sign(v)·(|v|/127.5)²``. The Source Cooperative copy stores its COGs
bottom-up and publishes a ``.vrt`` beside each, which is what is read there. Tiles are found
through the published index (``aef_index.csv`` or a GeoParquet), downloaded once and cached.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ..errors import ProviderError, SpecError
from ..grid import GridSpec, roi_grid, roi_mask
from ..providers.base import FetchRequest, Observation, Provider
from ..providers.raster_io import parse_grid_crs
from ..providers.redact import redact
from ..specs import FrameSpec, SensorSpec, SpatialSpec, TemporalSpec
from .base import (
    WGS84,
    ProductReader,
    ProductSpec,
    observation,
    place_text,
    product_year,
    put_on_grid,
    window_for,
)
from .remote import Remote, gdal_path, join
from .tile_index import Tile, load_index

SPEC = ProductSpec(
    id="alphaearth",
    title="AlphaEarth Foundations Satellite Embedding v1 (annual)",
    dim=64,
    band_prefix="A",
    years=tuple(range(2017, 2026)),
    resolution="10 m, UTM zone tiles",
    scale_m=10.0,
    license="CC-BY-4.0",
    attribution="The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind.",
    paper="https://arxiv.org/abs/2507.22291",
)
NODATA = -128
EE_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
#: Published locations of the COGs: Google's bucket (2017–2025) and the Source Cooperative copy
#: (2018–2024, bottom-up COGs read through their .vrt).
LAYOUTS: dict[str, dict[str, str]] = {
    "bucket": {"url": "https://storage.googleapis.com/alphaearth_foundations/satellite_embedding/v1/annual",
               "index": "aef_index.csv"},
    "source-coop": {"url": "https://data.source.coop/tge-labs/aef/v1/annual", "index": "aef_index.csv"},
}


def _table() -> np.ndarray:
    v = np.arange(-128, 128, dtype=np.float64)
    out = (np.sign(v) * (np.abs(v) / 127.5) ** 2).astype(np.float32)
    out[0] = np.nan  # −128 is nodata
    return out


#: de-quantised value of every int8 code, indexed by the code's unsigned byte (code + 128)
_TABLE = _table()


def dequantize(raw: np.ndarray) -> np.ndarray:
    """float32 vectors from the int8 values of the COGs: ``sign(v)·(|v|/127.5)²``; NaN for the
    nodata code −128."""
    codes = np.ascontiguousarray(raw, dtype=np.int8).view(np.uint8) ^ np.uint8(128)  # = v + 128
    return _TABLE[codes]


def _key(path: str) -> str | None:
    """A tile's path below ``…/annual/`` (so that an index works against any mirror)."""
    if "/annual/" in path:
        return path.split("/annual/", 1)[1]
    if not path.startswith(("s3://", "gs://", "http://", "https://", "/")):
        return path
    return None


class AlphaEarthCOG(ProductReader):
    """AlphaEarth from its COGs by windowed range reads, tiles found through the index."""

    spec = SPEC

    def __init__(self, layout: str = "source-coop", url: str | None = None, index: str | None = None, *,
                 retries: int = 3, backoff: float = 0.5, timeout: float = 60.0) -> None:
        if layout not in LAYOUTS:
            raise SpecError(f"layout={layout!r} must be one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.route = layout
        self.url = (url or LAYOUTS[layout]["url"]).rstrip("/")
        self.index_url = index or join(self.url, LAYOUTS[layout]["index"])
        self.remote = Remote(retries=retries, backoff=backoff, timeout=timeout)
        self._headers: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": redact(self.url), "index": redact(self.index_url)}

    # -- tiles ----------------------------------------------------------------------------------
    def tile_url(self, tile: Tile) -> str:
        key = _key(tile.path)
        href = join(self.url, key) if key is not None else tile.path
        if self.layout == "source-coop":
            for ext in (".tiff", ".tif"):
                if href.endswith(ext):
                    href = href[: -len(ext)] + ".vrt"
        return href

    def tiles(self, spatial: SpatialSpec, year: int) -> list[Tile]:
        index = load_index(self.remote, self.index_url, "the AlphaEarth tile index")
        return index.lookup(spatial.shape(WGS84), year)

    def _header(self, href: str) -> tuple[str, Any]:
        with self._lock:
            if href in self._headers:
                return self._headers[href]

        def read() -> tuple[str, Any]:
            with rasterio.Env(**self.remote.gdal_env()), rasterio.open(gdal_path(href)) as src:
                return src.crs.to_string(), src.transform

        try:
            head = self.remote.retry(f"opening {href}", read)
        except Exception as exc:
            raise self.remote.failure("an AlphaEarth tile", href, exc) from None
        with self._lock:
            self._headers[href] = head
        return head

    # -- grid -----------------------------------------------------------------------------------
    def request(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                frames: FrameSpec | None = None) -> FetchRequest:
        year = product_year(self.spec, temporal)
        crs = spatial.working_crs
        anchor = (0.0, 0.0)
        for tile in self.tiles(spatial, year):
            if parse_grid_crs(tile.crs) == crs:
                t = self._header(self.tile_url(tile))[1]
                anchor = (t.c, t.f)  # a corner of the tile (top or bottom) is on its lattice
                break
        grid = roi_grid(spatial, self.spec.scale_m, crs=crs, anchor=anchor)
        return FetchRequest(spatial, grid, temporal, sensor, None)

    # -- pixels ---------------------------------------------------------------------------------
    def _window(self, href: str, grid: GridSpec) -> tuple[np.ndarray, Affine, str] | None:
        """The de-quantised part of one tile that covers `grid` (NaN = nodata), as a north-up
        array with its transform and CRS; bottom-up tiles are turned the right way up."""
        with rasterio.Env(**self.remote.gdal_env()), rasterio.open(gdal_path(href)) as src:
            if src.count != self.spec.dim:
                raise ProviderError(f"{redact(href)} has {src.count} bands, not {self.spec.dim}; it is not an "
                                    "AlphaEarth tile")
            t, h, w = src.transform, src.height, src.width
            up = t.e > 0
            north = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * h) if up else t
            crs = src.crs.to_string()
            win = window_for(grid, crs, north, h, w)
            if win is None:
                return None
            r0, r1, c0, c1 = win
            rows = (h - r1, h - r0) if up else (r0, r1)
            raw = src.read(window=Window(c0, rows[0], c1 - c0, r1 - r0))
        return dequantize(raw[:, ::-1, :] if up else raw), north * Affine.translation(c0, r0), crs

    def fetch(self, request: FetchRequest) -> Observation:
        spatial, grid = request.spatial, request.grid
        year = product_year(self.spec, request.temporal)
        tiles = self.tiles(spatial, year)
        if not tiles:
            raise ProviderError(
                f"AlphaEarth has no tile for {place_text(spatial)} in {year} (the index lists none there); "
                "choose another year or place"
            )
        work = parse_grid_crs(grid.crs)
        tiles.sort(key=lambda t: (parse_grid_crs(t.crs) != work, t.path))  # the grid's own zone first
        out = np.full((self.spec.dim, grid.height, grid.width), np.nan, np.float32)
        valid = np.zeros((grid.height, grid.width), bool)
        used = []
        for tile in tiles:
            if valid.all():
                break
            href = self.tile_url(tile)

            try:
                got = self.remote.retry(f"reading {href}", lambda href=href: self._window(href, grid))
            except ProviderError:
                raise
            except Exception as exc:
                raise self.remote.failure("an AlphaEarth tile", href, exc) from None
            if got is None:
                continue
            before = int(valid.sum())
            put_on_grid(*got, grid, out, valid)
            if valid.sum() > before:
                used.append(redact(href))
        roi = roi_mask(spatial, grid)
        if not (valid & roi).any():
            raise ProviderError(
                f"AlphaEarth has no data for {place_text(spatial)} in {year} (the tiles there are nodata); "
                "choose another year or place"
            )
        meta = {"source": "cog", "layout": self.layout, "tiles": used, "index": redact(self.index_url),
                "nodata": NODATA, "dequantization": "sign(v)*(|v|/127.5)^2"}
        return observation(out, valid, grid, self.spec, year, roi, meta)


class AlphaEarthEE(ProductReader):
    """AlphaEarth through Earth Engine (``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``, bands A00…A63),
    with the session of an :class:`~eoembed.providers.gee.EarthEngineProvider`."""

    spec = SPEC
    route = "gee"

    def __init__(self, provider: Provider, collection: str = EE_COLLECTION) -> None:
        from ..providers.gee import EarthEngineProvider

        if not isinstance(provider, EarthEngineProvider):
            raise SpecError("alphaearth with route='gee' needs source='gee' (an Earth Engine provider)")
        self.ee = provider
        self.ee_collection = collection

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "collection": self.ee_collection}

    def request(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                frames: FrameSpec | None = None) -> FetchRequest:
        product_year(self.spec, temporal)
        return FetchRequest(spatial, roi_grid(spatial, self.spec.scale_m), temporal, sensor, None)

    def fetch(self, request: FetchRequest) -> Observation:
        import ee

        from ..providers.gee import _VALID_BAND, _geojson

        spatial, grid = request.spatial, request.grid
        year = product_year(self.spec, request.temporal)
        self.ee._ensure_session()
        region = ee.Geometry(json.loads(json.dumps(_geojson(spatial.shape(WGS84)))), None, False)
        start = datetime(year, 1, 1, tzinfo=timezone.utc).date().isoformat()
        coll = (ee.ImageCollection(self.ee_collection).filterBounds(region)
                .filterDate(start, f"{year + 1}-01-01").select(list(self.spec.bands)))
        images = self.ee._list(coll)
        if not images:
            raise ProviderError(
                f"Earth Engine's {self.ee_collection} has no image for {place_text(spatial)} in {year}; choose "
                "another year or place"
            )
        count = coll.count().select([self.spec.bands[0]], [_VALID_BAND]).unmask(0, False).toFloat()
        image = coll.mosaic().unmask(0, False).toFloat().addBands(count)
        stats: dict[str, int] = {"requests": 1, "tiles": 0}
        (values, counts), = self.ee._pixels([image], grid, self.spec.dim, stats)
        valid = counts > 0
        roi = roi_mask(spatial, grid)
        if not (valid & roi).any():
            raise ProviderError(
                f"Earth Engine's {self.ee_collection} has no data for {place_text(spatial)} in {year}; choose "
                "another year or place"
            )
        meta = {"source": "gee", "collection": self.ee_collection, "images": [im["id"] for im in images], **stats}
        return observation(values, valid, grid, self.spec, year, roi, meta)
