"""Copernicus-Embed (768-d, 2021) on the global 0.25° EPSG:4326 grid: one GeoTIFF of the
Hugging Face dataset ``torchgeo/copernicus_embed`` (revision pinned), resolved and cached like
a checkpoint; a place reads only the cells it touches, weighted by the area it covers."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Geod
from rasterio.windows import Window

from ..errors import ProviderError
from ..grid import GridSpec
from ..providers.base import FetchRequest, Observation
from ..providers.redact import redact
from ..specs import FrameSpec, SensorSpec, SpatialSpec, TemporalSpec
from .base import WGS84, ProductReader, ProductSpec, observation, place_text, product_year
from .remote import Remote, gdal_path, is_url

SPEC = ProductSpec(
    id="copernicus-embed",
    title="Copernicus-Embed: Copernicus-FM embeddings of Copernicus-Pretrain 2021 on a 0.25° grid",
    dim=768,
    band_prefix="C",
    years=(2021,),
    resolution="0.25° (EPSG:4326)",
    scale_m=27830.0,
    license="CC-BY-4.0",
    attribution="Copernicus-Embed by the Technical University of Munich (torchgeo/copernicus_embed), from "
                "Copernicus-FM embeddings of Copernicus Sentinel data 2021.",
    paper="https://arxiv.org/abs/2503.11849",
)
HF_SOURCE = "hf:torchgeo/copernicus_embed@435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb"
FILENAME = "embed_map_310k.tif"
#: SHA-256 of the pinned file (as torchgeo records it), checked once per process.
SHA256 = "38f6fd15b20153f7b3ba2d7b38fb9ef56b751dfcb42e17cc1b02aad1580a59ad"
_GEOD = Geod(ellps="WGS84")
_CHECKED: set[str] = set()
_CHECK_LOCK = threading.Lock()


def resolve_map(source: str | None) -> str:
    """The GeoTIFF to read: an http(s) URL as is, else a local file through ``weights.resolve``
    (the pinned Hub revision by default; the SHA-256 is checked for it, once per process)."""
    from ..weights import resolve

    src = source or HF_SOURCE
    if is_url(src):
        return src
    if src == HF_SOURCE:
        path = str(resolve(src, FILENAME, repo_type="dataset"))
        with _CHECK_LOCK:
            if path not in _CHECKED:
                resolve(path, sha256=SHA256)
                _CHECKED.add(path)
        return path
    return str(resolve(src, FILENAME if not src.lower().endswith((".tif", ".tiff")) else None,
                       repo_type="dataset"))


def cell_weights(spatial: SpatialSpec, grid: GridSpec) -> np.ndarray:
    """Area (km²) of the place inside each cell of a lon/lat grid."""
    shape = spatial.shape(WGS84)
    out = np.zeros((grid.height, grid.width), np.float64)
    t = grid.transform
    for r in range(grid.height):
        for c in range(grid.width):
            x0, y0 = t * (c, r)
            x1, y1 = t * (c + 1, r + 1)
            part = shape.intersection(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            if not part.is_empty:
                out[r, c] = abs(_GEOD.geometry_area_perimeter(part)[0]) / 1e6
    return out


class CopernicusEmbedMap(ProductReader):
    """Copernicus-Embed cells for a place, read as one window of the global GeoTIFF."""

    spec = SPEC
    route = "geotiff"

    def __init__(self, source: str | None = None, *, retries: int = 3, backoff: float = 0.5,
                 timeout: float = 60.0) -> None:
        self.source = source
        self.remote = Remote(retries=retries, backoff=backoff, timeout=timeout)
        self._path: str | None = None
        self._head: tuple[Affine, int, int] | None = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "file": redact(self.source or f"{HF_SOURCE}/{FILENAME}")}

    def _open_head(self) -> tuple[str, Affine, int, int]:
        with self._lock:
            if self._path is None:
                self._path = resolve_map(self.source)
            if self._head is None:
                path = self._path

                def head() -> tuple[Affine, int, int]:
                    with rasterio.Env(**self.remote.gdal_env()), rasterio.open(gdal_path(path)) as src:
                        if src.count != self.spec.dim:
                            raise ProviderError(f"{redact(path)} has {src.count} bands, not {self.spec.dim}; it is "
                                                "not the Copernicus-Embed map")
                        return src.transform, src.height, src.width

                try:
                    self._head = self.remote.retry("opening the Copernicus-Embed map", head)
                except ProviderError:
                    raise
                except Exception as exc:
                    raise self.remote.failure("the Copernicus-Embed map", path, exc) from None
            return (self._path, *self._head)

    def request(self, spatial: SpatialSpec, temporal: TemporalSpec, sensor: SensorSpec,
                frames: FrameSpec | None = None) -> FetchRequest:
        product_year(self.spec, temporal)
        _, t, h, w = self._open_head()
        x0, y0, x1, y1 = spatial.shape(WGS84).bounds
        inv = ~t
        c0, r0 = inv * (x0, y1)
        c1, r1 = inv * (x1, y0)
        c0, r0 = max(0, math.floor(c0 + 1e-9)), max(0, math.floor(r0 + 1e-9))
        c1, r1 = min(w, max(c0 + 1, math.ceil(c1 - 1e-9))), min(h, max(r0 + 1, math.ceil(r1 - 1e-9)))
        grid = GridSpec(WGS84, t * Affine.translation(c0, r0), c1 - c0, r1 - r0)
        return FetchRequest(spatial, grid, temporal, sensor, None)

    def fetch(self, request: FetchRequest) -> Observation:
        spatial, grid = request.spatial, request.grid
        year = product_year(self.spec, request.temporal)
        path, t, _, _ = self._open_head()
        c0, r0 = (~t) * (grid.transform.c, grid.transform.f)
        window = Window(int(round(c0)), int(round(r0)), grid.width, grid.height)

        def read() -> np.ndarray:
            with rasterio.Env(**self.remote.gdal_env()), rasterio.open(gdal_path(path)) as src:
                return src.read(window=window, out_dtype=np.float32)

        try:
            vals = self.remote.retry("reading the Copernicus-Embed map", read)
        except Exception as exc:
            raise self.remote.failure("the Copernicus-Embed map", path, exc) from None
        valid = np.isfinite(vals).all(axis=0) & (vals != 0).any(axis=0)
        weights = cell_weights(spatial, grid)
        roi = weights > 0
        if not (valid & roi).any():
            raise ProviderError(f"Copernicus-Embed has no embedding for {place_text(spatial)} (the cells it touches "
                                "are empty, e.g. open sea); choose another place")
        meta = {"source": "geotiff", "file": redact(path), "cell_weights_km2": np.round(weights, 6).tolist(),
                "cells": [int(window.row_off), int(window.col_off), grid.height, grid.width]}
        return observation(vals, valid, grid, self.spec, year, roi, meta)
