"""Precomputed products as models: no weights and no network, only masking and pooling of the
vectors a product reader delivers at the product's own lattice."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from ..embedding import Embedding
from ..errors import CapabilityError, ProviderError, SpecError
from ..products.base import ProductReader, ProductSensor, ProductSpec, product_year
from ..providers.base import Observation, Provider
from ..providers.redact import redact
from ..specs import FrameSpec, InputPrep, OutputSpec, SensorSpec, TemporalSpec
from .base import Embedder, ModelCard

_HTTP_OPTIONS = ("retries", "backoff", "timeout")


class ProductEmbedder(Embedder):
    """Base of product models: ``describe()`` from the product's facts, ``embed`` = mask + pool."""

    family = "product"
    precomputed: ClassVar[bool] = True
    spec: ClassVar[ProductSpec]
    default_batch_size = 64

    def __init__(self, model_id: str, *, device: str = "cpu", weights: str | None = None,
                 batch_size: int | None = None, **options: Any) -> None:
        super().__init__(model_id, device="cpu", weights=weights, batch_size=batch_size)
        self.options = options
        self._readers: dict[str, ProductReader] = {}
        self._rlock = threading.Lock()

    # -- what the product is ------------------------------------------------------------------
    def source_text(self) -> str:
        return "precomputed product"

    def describe(self) -> ModelCard:
        s = self.spec
        return ModelCard(
            id=self.model_id, family=self.family, summary=f"{s.title}. {s.attribution}", bands=s.bands, scale_m=s.scale_m,
            image_size=None, temporal="single", outputs=("pooled", "grid"), dim=s.dim,
            weights=f"none (precomputed product: {self.source_text()})", license=s.license, paper=s.paper,
            preprocessing=self.preprocessing(),
            config={"years": [s.years[0], s.years[-1]], "resolution": s.resolution,
                    **{k: redact(v) if isinstance(v, str) else v for k, v in sorted(self.options.items())}},
            precomputed=True, noncommercial=s.noncommercial, attribution=s.attribution,
        )

    def preprocessing(self) -> dict[str, Any]:
        return {"pooling": "masked mean (or max) over the valid product pixels inside the place"}

    def check(self, output: OutputSpec, sensor: SensorSpec | None = None, temporal: TemporalSpec | None = None,
              frames: FrameSpec | None = None, prep: InputPrep | None = None) -> None:
        if output.mode not in ("pooled", "grid"):
            raise CapabilityError(f"model {self.model_id!r} gives pooled and grid output, not {output.mode!r}")
        if frames is not None:
            raise CapabilityError(f"model {self.model_id!r} is a precomputed product of one vector per pixel and "
                                  "year, not a time series of frames; drop frames")
        if prep is not None and prep.mode == "tile":
            raise CapabilityError(f"model {self.model_id!r} is a precomputed product, so tiling does not apply; "
                                  "drop prep")
        if temporal is not None:  # (embed() checks again without a window)
            product_year(self.spec, temporal)

    def sensor_for(self, sensor: SensorSpec | None) -> SensorSpec:
        return ProductSensor(f"product:{self.spec.id}", self.spec.bands, self.spec.scale_m)

    def frames_for(self, frames: FrameSpec | None) -> FrameSpec | None:
        return None

    # -- reading ----------------------------------------------------------------------------------
    def http_options(self) -> dict[str, Any]:
        return {k: self.options[k] for k in _HTTP_OPTIONS if k in self.options}

    def reader(self, provider: Provider) -> ProductReader:
        """The reader of this product (one per route), given the run's imagery provider."""
        key = self.route(provider)
        with self._rlock:
            rd = self._readers.get(key)
            if rd is None:
                rd = self._readers[key] = self.make_reader(key, provider)
            return rd

    def route(self, provider: Provider) -> str:
        return "default"

    def make_reader(self, route: str, provider: Provider) -> ProductReader:
        raise NotImplementedError

    def _load(self) -> None:
        self.weights_info = {"source": f"precomputed product {self.spec.id}", "precomputed": True}

    # -- pooling ----------------------------------------------------------------------------------
    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        return [self._one(o, output) for o in observations]

    def _one(self, obs: Observation, output: OutputSpec) -> Embedding:
        if not obs.bands or obs.bands[0] != self.spec.bands[0] or obs.array.shape[1] != self.spec.dim:
            raise ProviderError(f"model {self.model_id!r} reads its own product; the observation holds "
                                f"{len(obs.bands)} other bands")
        values, valid = obs.array[0], obs.valid[0]
        extra = {"product": {"id": self.spec.id, "year": obs.meta.get("year"), "attribution": self.spec.attribution,
                             "license": self.spec.license}}
        if output.mode == "grid":  # invalid pixels already hold NaN
            return self.grid_embedding(values, obs, output, **extra)
        cells = obs.meta.get("cell_weights_km2")
        weight = np.asarray(cells, np.float64) if cells is not None else obs.roi_mask.astype(np.float64)
        weight = np.where(valid, weight, 0.0)
        if weight.sum() <= 0:
            raise ProviderError(f"{self.spec.id} has no valid pixel inside the place; choose another place or year")
        w = weight.reshape(-1)
        keep = np.flatnonzero(w > 0)
        flat = values.reshape(values.shape[0], -1)
        picked = flat if keep.size == flat.shape[1] else flat[:, keep]  # valid pixels inside the place
        if output.pooling == "max":
            vec = picked.max(axis=1)
        else:
            wk = w[keep]
            vec = (picked @ (wk / wk.sum()).astype(np.float32)).astype(np.float64)
        return self.pooled_embedding(vec.astype(np.float32), obs, output, pixels=int((w > 0).sum()), **extra)


class AlphaEarthEmbedder(ProductEmbedder):
    """AlphaEarth / Google Satellite Embedding v1 annual (64-d, 10 m, 2017–2025).

    Options: `route` ``"auto"`` (Earth Engine when source='gee', else the COGs), ``"cog"`` or
    ``"gee"``; `layout` ``"source-coop"`` or ``"bucket"``; `url` (a mirror of the COG root),
    `index` (the tile index URL), `retries`, `backoff`, `timeout`.
    """

    from ..products import alphaearth as _mod

    spec = _mod.SPEC

    def __init__(self, model_id: str, *, route: str = "auto", layout: str = "source-coop", url: str | None = None,
                 index: str | None = None, **kwargs: Any) -> None:
        if route not in ("auto", "cog", "gee"):
            raise SpecError(f"route={route!r} must be 'auto', 'cog' or 'gee'")
        if layout not in self._mod.LAYOUTS:
            raise SpecError(f"layout={layout!r} must be one of {', '.join(self._mod.LAYOUTS)}")
        opts = {"route": route, "layout": layout, "url": url, "index": index}
        http = {k: kwargs.pop(k) for k in _HTTP_OPTIONS if k in kwargs}
        super().__init__(model_id, **kwargs, **{k: v for k, v in opts.items() if v is not None}, **http)

    def source_text(self) -> str:
        o = self.options
        if o.get("route") == "gee":
            return f"Earth Engine {self._mod.EE_COLLECTION}"
        return f"COGs ({o.get('layout')}) at {redact(o.get('url') or self._mod.LAYOUTS[o['layout']]['url'])}"

    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing(), "dequantization": "sign(v)*(|v|/127.5)^2", "nodata": self._mod.NODATA}

    def route(self, provider: Provider) -> str:
        r = self.options.get("route", "auto")
        if r == "auto":
            return "gee" if getattr(provider, "name", "") == "gee" else "cog"
        return r

    def make_reader(self, route: str, provider: Provider) -> ProductReader:
        if route == "gee":
            return self._mod.AlphaEarthEE(provider)
        o = self.options
        return self._mod.AlphaEarthCOG(o.get("layout", "source-coop"), o.get("url"), o.get("index"),
                                       **self.http_options())


class TesseraEmbedder(ProductEmbedder):
    """Tessera v1.1 annual (128-d, 10 m). Options: `store` (a Zarr v3 store in the geo-embeddings
    layout, an http(s) URL, ``s3://`` URL or folder; default the published plain Zarr copy) or
    `tiles` (the legacy ``grid_<lon>_<lat>`` tiles, with `landmasks`), and `retries`, `backoff`,
    `timeout`."""

    from ..products import tessera as _mod

    spec = _mod.SPEC

    def __init__(self, model_id: str, *, store: str | None = None, tiles: str | None = None,
                 landmasks: str | None = None, **kwargs: Any) -> None:
        if store and tiles:
            raise SpecError("tessera takes one of store= (a Zarr store) or tiles= (the legacy tiles), not both")
        opts = {"store": store, "tiles": tiles, "landmasks": landmasks}
        super().__init__(model_id, **kwargs, **{k: v for k, v in opts.items() if v is not None})

    def source_text(self) -> str:
        o = self.options
        if o.get("tiles"):
            return f"tiles {redact(o['tiles'])}"
        return f"Zarr store {redact(o.get('store') or self._mod.DEFAULT_STORE)}"

    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing(), "dequantization": "int8 * per-pixel float32 scale",
                "gaps": "NaN scale = water, infinite scale = not processed"}

    def route(self, provider: Provider) -> str:
        return "tiles" if self.options.get("tiles") else "zarr"

    def make_reader(self, route: str, provider: Provider) -> ProductReader:
        o = self.options
        if route == "zarr":
            return self._mod.TesseraZarr(o.get("store"), **self.http_options())
        return self._mod.TesseraTiles(o["tiles"], o.get("landmasks"), **self.http_options())


class CopernicusEmbedEmbedder(ProductEmbedder):
    """Copernicus-Embed (768-d, 0.25°, 2021). `weights`: the map's source (default the pinned
    Hub dataset revision; a local file or an http(s) URL also work)."""

    from ..products import copernicus as _mod

    spec = _mod.SPEC

    def source_text(self) -> str:
        return redact(self.weights or f"{self._mod.HF_SOURCE} {self._mod.FILENAME}")

    def preprocessing(self) -> dict[str, Any]:
        return {"pooling": "area-weighted mean (or max) over the 0.25° cells the place touches"}

    def make_reader(self, route: str, provider: Provider) -> ProductReader:
        return self._mod.CopernicusEmbedMap(self.weights, **self.http_options())
