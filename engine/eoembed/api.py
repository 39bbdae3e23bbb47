"""The public API: a few flat calls that read like the user's sentence."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .backends import CONVENTIONS, choose_source, collection_record, open_source, record_backend
from .embedders.base import Embedder, ModelCard
from .embedders.registry import describe_model as _describe_model
from .embedders.registry import get_embedder
from .embedders.registry import list_models as _list_models
from .embedding import Embedding
from .errors import CapabilityError, EoembedError, ProviderError, SpecError
from .providers import PROVIDERS, Provider
from .providers.base import FetchRequest
from .specs import (
    FetchSpec,
    FrameSpec,
    InputPrep,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)

#: The window used when none is given: every date (only sensible for local imagery).
ALL_TIME = TemporalSpec("1970-01-01", "2100-01-01")
POOLED = OutputSpec.pooled()


def list_models(*, aliases: bool = False) -> list[str]:
    """Canonical ids of every model eoembed knows (and the aliases that lead to them, if asked)."""
    return _list_models(aliases=aliases)


def describe_model(model: str, **config: Any) -> ModelCard:
    """What `model` needs and gives (bands, size, outputs, dims, weights, licence); loads nothing."""
    return _describe_model(model, **config)


def _check_spatial(spatial: Any, index: int | None = None) -> SpatialSpec:
    if not isinstance(spatial, SpatialSpec):
        where = f"spatial[{index}]" if index is not None else "spatial"
        raise SpecError(
            f"{where} must be a BBox, PointBuffer or Geometry from eoembed.specs, not {type(spatial).__name__}"
        )
    return spatial


def model_options(
    sensor: SensorSpec | None,
    weights: str | None,
    model_config: dict[str, Any] | None,
    model_kwargs: dict[str, Any],
) -> tuple[str | None, dict[str, Any]]:
    """The weights (a checkpoint named by ``sensor.collection`` counts) and the model config."""
    if sensor is not None and sensor.checkpoint is not None:
        if weights is not None and weights != sensor.checkpoint:
            raise SpecError(
                f"weights={weights!r} and sensor collection {sensor.checkpoint!r} both choose a checkpoint; give one"
            )
        weights = sensor.checkpoint
    config = dict(model_config or {})
    clash = sorted(set(config) & set(model_kwargs))
    if clash:
        raise SpecError(f"{', '.join(clash)} given both in model_config and as keywords; give each once")
    config.update(model_kwargs)
    return weights, config


def _plan(
    model: str | Embedder,
    temporal: TemporalSpec | None,
    sensor: SensorSpec | None,
    fetch: FetchSpec | None,
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
    if sensor is not None and not isinstance(sensor, SensorSpec):
        raise SpecError(f"sensor must be a SensorSpec, not {type(sensor).__name__}")
    if fetch is not None:
        if not isinstance(fetch, FetchSpec):
            raise SpecError(f"fetch must be a FetchSpec, not {type(fetch).__name__}")
        if sensor is not None:
            raise SpecError("give sensor= or fetch=, not both (fetch adjusts the model's own sensor)")
    emb = model if isinstance(model, Embedder) else get_embedder(model, device=device, weights=weights, **(model_config or {}))
    if fetch is not None:
        sensor = fetch.sensor(emb.describe().scale_m)
    emb.check(output, sensor, temporal, frames, prep)
    return emb, emb.sensor_for(sensor), emb.frames_for(frames), temporal or ALL_TIME


def get_embedding(
    model: str | Embedder,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None = None,
    *,
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    output: OutputSpec = POOLED,
    source: str | Path | Provider | None = None,
    backend: str | None = None,
    source_options: dict[str, Any] | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | str | None = None,
    input_prep: InputPrep | str | None = None,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> Embedding:
    """The embedding of one place by `model`.

    `source` is a provider name, a folder of imagery or a Provider; `backend` ("auto", "local",
    "stac", "gee") chooses one by name (see :mod:`eoembed.backends`); further keywords configure
    the model (like `model_config`).

    >>> get_embedding("rcf", PointBuffer(12.49, 41.89, 320), TemporalSpec.year(2022),
    ...               source="scenes/", output=OutputSpec.grid())
    """
    return get_embeddings_batch(
        model, [_check_spatial(spatial)], temporal, sensor=sensor, fetch=fetch, output=output, source=source,
        backend=backend, source_options=source_options, frames=frames, prep=prep, input_prep=input_prep,
        device=device, weights=weights, model_config=model_config, **model_kwargs,
    )[0]


def get_embeddings_batch(
    model: str | Embedder,
    spatials: Sequence[SpatialSpec],
    temporal: TemporalSpec | None = None,
    *,
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    output: OutputSpec = POOLED,
    source: str | Path | Provider | None = None,
    backend: str | None = None,
    source_options: dict[str, Any] | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | str | None = None,
    input_prep: InputPrep | str | None = None,
    device: str = "cpu",
    weights: str | None = None,
    model_config: dict[str, Any] | None = None,
    workers: int = 4,
    **model_kwargs: Any,
) -> list[Embedding]:
    """Embeddings of many places, fetched concurrently and inferred in batches (one forward
    pass per ``batch_size`` places, not one per place). Raises on the first place that fails;
    for fault-tolerant, resumable runs over many places use :func:`export_batch`."""
    places = [_check_spatial(s, i) for i, s in enumerate(spatials)]
    if not places:
        return []
    prep = _one_prep(prep, input_prep)
    weights, config = model_options(sensor, weights, model_config, model_kwargs)
    emb, fetch_sensor, fetch_frames, window = _plan(
        model, temporal, sensor, fetch, output, frames, prep, device, weights, config
    )
    provider, backend_record = open_source(source, backend, source_options, [emb])
    requests = _requests(provider, places, window, fetch_sensor, fetch_frames, workers)
    observations = provider.fetch_many(requests, workers=workers)
    for i, obs in enumerate(observations):
        if isinstance(obs, Exception):
            if isinstance(obs, EoembedError) and len(places) > 1:
                raise type(obs)(f"place #{i}: {obs}") from obs
            raise obs
    results = emb.embed(observations, output, prep)  # type: ignore[arg-type]
    collection = collection_record(fetch_sensor, provider)
    for r in results:
        r.meta.setdefault("window", window.key())
        r.meta["backend"] = backend_record
        r.meta["collection"] = collection
        r.meta["conventions"] = CONVENTIONS
    return results


def _products_only(models: Sequence[Any]) -> bool:
    """True when every model (id, (id, config) or embedder) is a precomputed product."""
    from .embedders.registry import embedder_class

    def one(m: Any) -> bool:
        if isinstance(m, Embedder):
            return bool(getattr(m, "precomputed", False))
        try:
            return bool(getattr(embedder_class(m[0] if isinstance(m, tuple) else m)[0], "precomputed", False))
        except EoembedError:
            return False

    return bool(models) and all(one(m) for m in models)


def _one_prep(prep: InputPrep | str | None, input_prep: InputPrep | str | None) -> InputPrep | None:
    if prep is not None and input_prep is not None:
        raise SpecError("give prep= or input_prep= (the same setting), not both")
    return InputPrep.parse(input_prep if input_prep is not None else prep)


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
    places: Any = None,
    temporal: TemporalSpec | None = None,
    models: Any = None,
    out: str | Path | None = None,
    *,
    spatials: Sequence[SpatialSpec] | None = None,
    target: Any = None,
    config: Any = None,
    outputs: Any = None,
    output: OutputSpec | None = None,
    source: str | Path | Provider | None = None,
    backend: str | None = None,
    source_options: dict[str, Any] | None = None,
    sensor: SensorSpec | None = None,
    fetch: FetchSpec | None = None,
    input_prep: InputPrep | str | None = None,
    chunk_size: int = 256,
    workers: int | None = None,
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

    The keyword form ``export_batch(spatials=[...], temporal=..., models=[...],
    target=ExportTarget.combined("out/run"), config=ExportConfig(...), backend="auto",
    output=OutputSpec.pooled())`` means the same. Further keywords (frames, prep, device, weights,
    model_config, id_field, buffer_m, backoff, should_stop, stack, torch_threads) are those of
    :func:`eoembed.pipeline.run_export`; `workers=None` lets the thread budget choose (few for
    local files, many for remote sources).
    """
    from .export.targets import ExportConfig, ExportTarget, export_models, export_places
    from .pipeline import run_export

    if spatials is not None:
        if places is not None:
            raise SpecError("give places or spatials= (the same thing), not both")
        places = spatials
    if target is not None:
        if out is not None:
            raise SpecError("give out or target= (the same thing), not both")
        if not isinstance(target, ExportTarget):
            raise SpecError(f"target must be an ExportTarget, not {type(target).__name__}")
        out = target.out
        places = export_places(places, target)
        config = ExportConfig() if config is None else config
    if places is None or models is None or out is None:
        raise SpecError("export_batch needs places (or spatials=), models and out (or target=)")
    run: dict[str, Any] = {"chunk_size": chunk_size, "workers": workers, "retries": retries,
                           "continue_on_error": continue_on_error, "progress": progress}
    if config is not None:
        if not isinstance(config, ExportConfig):
            raise SpecError(f"config must be an ExportConfig, not {type(config).__name__}")
        run.update(config.run_options())
    names, asked = export_models(models, config.infer_batch_size if config is not None else None)
    if fetch is not None or asked:
        wanted = {repr(s) for s in [*asked, *([fetch] if fetch is not None else [])]}
        if sensor is not None or len(wanted) > 1:
            raise SpecError("one export reads with one sensor; give a single sensor= or fetch=, or run one export per sensor")
        spec = fetch if fetch is not None else asked[0]
        sensor = spec.sensor(10.0) if isinstance(spec, FetchSpec) else spec
    if sensor is not None:
        options["sensor"] = sensor
        if sensor.checkpoint is not None:
            if len(names) != 1:
                raise SpecError("a checkpoint in sensor.collection chooses weights for one model; export that model alone")
            options.setdefault("weights", sensor.checkpoint)
    if output is not None:
        if outputs is not None:
            raise SpecError("give outputs= or output= (the same thing), not both")
        outputs = output
    prep = _one_prep(options.pop("prep", None), input_prep)
    if prep is not None:
        options["prep"] = prep
    if options.get("modality") is not None:
        raise SpecError(f"modality={options['modality']!r}: eoembed models read Sentinel-2 L2A only; drop modality")
    options.pop("modality", None)
    unknown = sorted(set(options) - set(inspect.signature(run_export).parameters))
    if unknown:
        raise SpecError(f"export_batch does not take {', '.join(unknown)}; see help(eoembed.export_batch)")
    if source is None and backend in (None, "auto") and _products_only(names):
        chosen, opts = "local", dict(source_options or {})  # run_export reads no imagery for them
        why = "auto: every model is a precomputed product, no imagery is read"
    else:
        chosen, opts, why = choose_source(source, backend, source_options)
    summary = run_export(
        places, temporal or ALL_TIME, names, out, outputs=outputs or "pooled", source=chosen,
        source_options=opts, executor=executor, scheduler=scheduler, **run, **options,
    )
    record_backend(Path(out), {"requested": backend or ("source" if source is not None else "auto"),
                               "source": chosen.name if isinstance(chosen, Provider) else (
                                   chosen if isinstance(chosen, str) and chosen in PROVIDERS else "local"),
                               "why": why})
    return summary


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
