"""The public API: a few flat calls that read like the user's sentence."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .embedders.base import Embedder, ModelCard
from .embedders.registry import describe_model as _describe_model
from .embedders.registry import get_embedder
from .embedders.registry import list_models as _list_models
from .embedding import Embedding
from .errors import CapabilityError, EoembedError, ProviderError, SpecError
from .products import open_for, route_products
from .providers import Provider, open_provider
from .providers.base import FetchRequest
from .specs import FrameSpec, InputPrep, OutputSpec, SensorSpec, SpatialSpec, TemporalSpec

#: The window used when none is given: every date (only sensible for local imagery).
ALL_TIME = TemporalSpec("1970-01-01", "2100-01-01")
POOLED = OutputSpec.pooled()


def list_models(*, aliases: bool = False) -> list[str]:
    """Canonical ids of every model eoembed knows (and the aliases that lead to them, if asked)."""
    return _list_models(aliases=aliases)


def describe_model(model: str, **config: Any) -> ModelCard:
    """What `model` needs and gives (bands, size, outputs, dims, weights, licence); loads nothing."""
    return _describe_model(model, **config)


def _provider(source: str | Path | Provider, source_options: dict[str, Any] | None) -> Provider:
    return open_provider(source, **(source_options or {}))


def _check_spatial(spatial: Any, index: int | None = None) -> SpatialSpec:
    if not isinstance(spatial, SpatialSpec):
        where = f"spatial[{index}]" if index is not None else "spatial"
        raise SpecError(
            f"{where} must be a BBox, PointBuffer or Geometry from eoembed.specs, not {type(spatial).__name__}"
        )
    return spatial


def _plan(
    model: str | Embedder,
    temporal: TemporalSpec | None,
    sensor: SensorSpec | None,
    output: OutputSpec,
    frames: FrameSpec | None,
    prep: InputPrep | None,
    device: str,
    weights: str | None,
    model_config: dict[str, Any] | None,
) -> tuple[Embedder, SensorSpec, FrameSpec | None, TemporalSpec]:
    """Resolve the embedder and check the request against it before anything is fetched."""
    if not isinstance(output, OutputSpec):
        raise SpecError("output must be OutputSpec.pooled() or OutputSpec.grid()")
    emb = model if isinstance(model, Embedder) else get_embedder(model, device=device, weights=weights, **(model_config or {}))
    emb.check(output, sensor, temporal, frames, prep)
    return emb, emb.sensor_for(sensor), emb.frames_for(frames), temporal or ALL_TIME


def get_embedding(
    model: str | Embedder,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None = None,
    *,
    sensor: SensorSpec | None = None,
    output: OutputSpec = POOLED,
    source: str | Path | Provider = "local",
    source_options: dict[str, Any] | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | None = None,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
) -> Embedding:
    """The embedding of one place by `model`.

    >>> get_embedding("rcf", PointBuffer(12.49, 41.89, 320), TemporalSpec.year(2022),
    ...               source="scenes/", output=OutputSpec.grid())
    """
    return get_embeddings_batch(
        model, [_check_spatial(spatial)], temporal, sensor=sensor, output=output, source=source,
        source_options=source_options, frames=frames, prep=prep, device=device, weights=weights,
        model_config=model_config,
    )[0]


def get_embeddings_batch(
    model: str | Embedder,
    spatials: Sequence[SpatialSpec],
    temporal: TemporalSpec | None = None,
    *,
    sensor: SensorSpec | None = None,
    output: OutputSpec = POOLED,
    source: str | Path | Provider = "local",
    source_options: dict[str, Any] | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | None = None,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    workers: int = 4,
) -> list[Embedding]:
    """Embeddings of many places, fetched concurrently and inferred in batches (one forward
    pass per ``batch_size`` places, not one per place). Raises on the first place that fails;
    for fault-tolerant, resumable runs over many places use :func:`export_batch`."""
    places = [_check_spatial(s, i) for i, s in enumerate(spatials)]
    if not places:
        return []
    emb, fetch_sensor, fetch_frames, window = _plan(
        model, temporal, sensor, output, frames, prep, device, weights, model_config
    )
    provider = route_products(open_for(source, source_options, [emb]), [emb])
    requests = _requests(provider, places, window, fetch_sensor, fetch_frames, workers)
    observations = provider.fetch_many(requests, workers=workers)
    for i, obs in enumerate(observations):
        if isinstance(obs, Exception):
            if isinstance(obs, EoembedError) and len(places) > 1:
                raise type(obs)(f"place #{i}: {obs}") from obs
            raise obs
    results = emb.embed(observations, output, prep)  # type: ignore[arg-type]
    for r in results:
        r.meta.setdefault("window", window.key())
    return results


def _requests(provider: Provider, places: Sequence[SpatialSpec], window: TemporalSpec, sensor: SensorSpec,
              frames: FrameSpec | None, workers: int) -> list[FetchRequest]:
    """One request per place, built concurrently (a provider may search its catalogue to place
    the grid); the first failure is raised with the place's index."""

    def one(spatial: SpatialSpec) -> FetchRequest | Exception:
        try:
            return provider.request(spatial, window, sensor, frames)
        except Exception as exc:  # raised below, in place order
            return exc

    if workers > 1 and len(places) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(places)), thread_name_prefix="eoembed-grid") as pool:
            made = list(pool.map(one, places))
    else:
        made = [one(s) for s in places]
    for i, req in enumerate(made):
        if isinstance(req, Exception):
            if isinstance(req, EoembedError) and len(places) > 1:
                raise type(req)(f"place #{i}: {req}") from req
            raise req
    return made  # type: ignore[return-value]


def embed_text(
    model: str | Embedder,
    texts: str | Sequence[str],
    *,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
) -> np.ndarray:
    """Text embeddings ``(N, D)`` in the same space as the model's image embeddings (CLIP models)."""
    emb = model if isinstance(model, Embedder) else get_embedder(model, device=device, weights=weights, **(model_config or {}))
    if not hasattr(emb, "embed_text"):
        raise CapabilityError(
            f"model {emb.model_id!r} has no text encoder; use a CLIP model such as remoteclip-vit-b-32"
        )
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise SpecError("texts must be one or more non-empty strings")
    return emb.embed_text(items)


def export_batch(
    places: Any,
    temporal: TemporalSpec | None,
    models: Any,
    out: str | Path,
    *,
    outputs: Any = "pooled",
    source: str | Path | Provider = "local",
    source_options: dict[str, Any] | None = None,
    chunk_size: int = 256,
    workers: int = 4,
    executor: str = "thread",
    scheduler: Any = None,
    retries: int = 2,
    continue_on_error: bool = True,
    progress: Any = None,
    **options: Any,
) -> Any:
    """Embed many places (a vector file, spatial specs or ``{id: spec}``) with several models and
    write the results under `out`: fast, fault-tolerant and resumable; ``executor="dask"`` spreads
    chunks over a ``dask.distributed`` cluster. Returns an :class:`~eoembed.pipeline.ExportSummary`.

    >>> export_batch("fields.gpkg", TemporalSpec.year(2022), ["rcf", "galileo-nano"], "out/",
    ...              outputs="both", source="scenes/", progress=lambda d, t, info: print(d, t))

    Further keywords (sensor, frames, prep, device, weights, model_config, id_field, buffer_m,
    backoff, should_stop, stack) are those of :func:`eoembed.pipeline.run_export`.
    """
    from .pipeline import run_export

    return run_export(
        places, temporal or ALL_TIME, models, out, outputs=outputs, source=source,
        source_options=source_options, chunk_size=chunk_size, workers=workers, executor=executor,
        scheduler=scheduler, retries=retries, continue_on_error=continue_on_error, progress=progress,
        **options,
    )


__all__ = [
    "ALL_TIME",
    "describe_model",
    "embed_text",
    "export_batch",
    "get_embedding",
    "get_embeddings_batch",
    "list_models",
    "ProviderError",
]
