"""Arrays in: embeddings of imagery the user already holds (numpy, xarray, a raster file).

The pixels go through the same compositing, band selection, validity rule and model
preprocessing as fetched imagery, so the same values give the same embedding. Values are in
the provider's units: Sentinel-2 L2A reflectance × 10000 with any BOA offset removed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from .backends import CONVENTIONS
from .embedders.base import Embedder
from .embedders.registry import describe_model, get_embedder, list_models
from .embedding import Embedding
from .errors import CapabilityError, EoembedError, SpecError
from .grid import roi_mask
from .providers.base import FetchRequest, Observation
from .providers.composite import scenes_to_observation
from .specs import FrameSpec, InputPrep, OutputSpec, SensorSpec, SpatialSpec, TemporalSpec
from .user_data import Pixels, UserData, as_userdata, read_pixels

__all__ = ["UserData", "get_embedding_from_data", "get_embeddings_batch_from_data", "list_models_for_data"]

_ALL_TIME = TemporalSpec("1970-01-01", "2100-01-01")


def _needs_location(emb: Embedder) -> bool:
    return "location" in emb.describe().preprocessing


def _observation(emb: Embedder, px: Pixels, ud: UserData, frames: FrameSpec | None,
                 output: OutputSpec | None = None) -> Observation:
    card = emb.describe()
    if getattr(card, "precomputed", False):
        raise CapabilityError(f"model {card.id!r} serves precomputed embeddings and takes no imagery")
    sensor = emb.sensor_for(SensorSpec(collection=px.collection, scale_m=abs(px.grid.transform.a)))
    emb.check(output or OutputSpec(card.outputs[0]), sensor, ud.temporal, frames)
    wanted = list(sensor.bands or ())
    missing = [b for b in wanted if b not in px.bands]
    if missing:
        raise CapabilityError(
            f"model {card.id!r} needs bands {', '.join(wanted)} but the data lacks {', '.join(missing)} "
            f"(it has {', '.join(px.bands)})"
        )
    if _needs_location(emb) and not px.georeferenced:
        raise CapabilityError(
            f"model {card.id!r} uses where each pixel is; give crs and transform (or spatial=) with the data"
        )
    idx = [px.bands.index(b) for b in wanted]
    sel = px.array[:, idx]
    valid = ~np.isnan(sel).any(axis=1)
    if px.nodata is not None and not (isinstance(px.nodata, float) and math.isnan(px.nodata)):
        valid &= ~(sel == np.float32(px.nodata)).all(axis=1)
    sel = np.where(valid[:, None], sel, np.float32(0.0)).astype(np.float32)
    window = ud.temporal
    if px.dates is None:
        if sel.shape[0] > 1:
            raise SpecError(f"the data has {sel.shape[0]} frames but no dates; pass dates=[one per frame]")
        window = window or _ALL_TIME
        dates = [window.midpoint]
    else:
        dates = px.dates
        window = window or TemporalSpec(min(dates), max(dates) + timedelta(days=1))
        outside = [d for d in dates if not window.contains(d)]
        if outside:
            raise SpecError(f"date {outside[0]} lies outside the time window {window.key()}; widen temporal or fix dates")
    request = FetchRequest(ud.spatial, px.grid, window, sensor, emb.frames_for(frames))  # type: ignore[arg-type]
    roi = roi_mask(ud.spatial, px.grid) if ud.spatial is not None and px.georeferenced else np.ones(
        (px.grid.height, px.grid.width), bool)
    meta = {
        "provider": "user data",
        "dates": [d.isoformat() for d in px.dates] if px.dates else None,
        "user_input": {
            "source": px.kind,
            "collection": px.collection,
            "declared_bands": list(px.bands),
            "bands_used": wanted,
            "channel_indices": idx,
            "georeferenced": px.georeferenced,
            **px.notes,
        },
    }
    return scenes_to_observation(sel, valid, dates, wanted, request, meta, "the data", roi)


def _embedder(model: str | Embedder, device: str, weights: str | None, config: dict[str, Any]) -> Embedder:
    return model if isinstance(model, Embedder) else get_embedder(model, device=device, weights=weights, **config)


def get_embeddings_batch_from_data(
    model: str | Embedder,
    datas: Sequence[Any],
    *,
    bands: Sequence[str] | None = None,
    collection: str | None = None,
    crs: Any = None,
    transform: Any = None,
    dates: Sequence[Any] | None = None,
    spatials: Sequence[SpatialSpec | None] | None = None,
    temporal: TemporalSpec | None = None,
    output: OutputSpec | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | str | None = None,
    input_prep: InputPrep | str | None = None,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> list[Embedding]:
    """Embeddings of several user arrays (or UserData) by `model`, inferred in batches.

    Keywords given here apply to every item that does not say otherwise.
    """
    from .api import POOLED, _one_prep, model_options

    items = list(datas)
    if not items:
        raise SpecError("datas is empty; give at least one array, DataArray or raster")
    if spatials is not None and len(spatials) != len(items):
        raise SpecError(f"{len(spatials)} spatials for {len(items)} data items; give one per item")
    output = output or POOLED
    if not isinstance(output, OutputSpec):
        raise SpecError("output must be OutputSpec.pooled() or OutputSpec.grid()")
    the_prep = _one_prep(prep, input_prep)
    w, config = model_options(None, weights, model_config, model_kwargs)
    emb = _embedder(model, device, w, config)
    emb.check(output, prep=the_prep)
    scale = emb.describe().scale_m
    observations = []
    for i, item in enumerate(items):
        shared = {"bands": bands, "collection": collection, "crs": crs, "transform": transform,
                  "dates": dates, "temporal": temporal,
                  "spatial": spatials[i] if spatials is not None else None}
        ud = as_userdata(item, shared)
        try:
            observations.append(_observation(emb, read_pixels(ud, scale), ud, frames, output))
        except EoembedError as exc:
            if len(items) > 1:
                raise type(exc)(f"data #{i}: {exc}") from exc
            raise
    results = emb.embed(observations, output, the_prep)
    for r, obs in zip(results, observations):
        r.meta["window"] = obs.meta.get("window")
        r.meta["user_input"] = obs.meta["user_input"]
        r.meta["backend"] = {"requested": "data", "source": "user data"}
        r.meta["conventions"] = CONVENTIONS
    return results


def get_embedding_from_data(
    model: str | Embedder,
    data: Any,
    *,
    bands: Sequence[str] | None = None,
    collection: str | None = None,
    crs: Any = None,
    transform: Any = None,
    dates: Sequence[Any] | None = None,
    spatial: SpatialSpec | None = None,
    temporal: TemporalSpec | None = None,
    output: OutputSpec | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | str | None = None,
    input_prep: InputPrep | str | None = None,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> Embedding:
    """The embedding by `model` of imagery the user holds (see :class:`UserData`).

    >>> get_embedding_from_data("rcf", chip, bands=["B04", "B03", "B02"], crs="EPSG:32633",
    ...                         transform=(10, 0, 500000, 0, -10, 4600000), output=OutputSpec.grid())
    """
    return get_embeddings_batch_from_data(
        model, [data], bands=bands, collection=collection, crs=crs, transform=transform, dates=dates,
        spatials=[spatial], temporal=temporal, output=output, frames=frames, prep=prep,
        input_prep=input_prep, device=device, weights=weights, model_config=model_config, **model_kwargs,
    )[0]


def list_models_for_data(data: Any, **declared: Any) -> list[dict[str, Any]]:
    """For every model: can it take `data` (same keywords as :func:`get_embedding_from_data`'s
    bands/collection/crs/transform/dates/spatial/temporal), which bands it would use, and why not.
    Loads no weights."""
    ud = as_userdata(data, declared)
    report = []
    for model in list_models():
        entry: dict[str, Any] = {"model": model, "compatible": False, "bands_used": [], "reason": ""}
        try:
            emb = get_embedder(model)
            obs = _observation(emb, read_pixels(ud, describe_model(model).scale_m), ud, None)
            entry.update(compatible=True, bands_used=list(obs.bands))
        except EoembedError as exc:
            entry["reason"] = str(exc)
        report.append(entry)
    return report
