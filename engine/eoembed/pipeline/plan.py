"""Planning: places, outputs and models resolved and checked, item fingerprints, chunks and slices."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embedders.base import Embedder
from ..embedders.registry import get_embedder
from ..errors import SpecError
from ..features import Place, read_places, require_unique_ids
from ..specs import FrameSpec, InputPrep, OutputSpec, SensorSpec, SpatialSpec, TemporalSpec


@dataclass(frozen=True)
class ModelJob:
    """One model of the run: how to build it and what to ask it for."""

    key: str  # model id, names its output folder
    model: str | Embedder
    config: tuple[tuple[str, Any], ...]
    weights: str | None
    device: str
    outputs: tuple[OutputSpec, ...]
    sensor: SensorSpec
    frames: FrameSpec | None
    signature: str  # model identity for fingerprints

    def embedder(self) -> Embedder:
        if isinstance(self.model, Embedder):
            return self.model
        return get_embedder(self.model, device=self.device, weights=self.weights, **dict(self.config))


@dataclass
class Item:
    """One unit of work and of the manifest: a place × model × output."""

    index: int
    id: str
    model: str
    output: OutputSpec
    fp: str


@dataclass
class ChunkTask:
    """The pending work of one chunk: its places and items (picklable, for Dask workers)."""

    number: int
    places: dict[int, tuple[str, SpatialSpec]]
    items: list[Item]


def as_places(
    places: str | Path | Sequence[Place | SpatialSpec] | Mapping[str, SpatialSpec],
    *,
    id_field: str | None = None,
    buffer_m: float = 320.0,
) -> list[Place]:
    """Places from a vector file, a list of spatial specs (ids are row numbers) or ``{id: spec}``."""
    if isinstance(places, (str, Path)):
        out = read_places(places, id_field=id_field, buffer_m=buffer_m)
    elif isinstance(places, Mapping):
        out = [_place_of(str(k), v, i) for i, (k, v) in enumerate(places.items())]
    else:
        out = [p if isinstance(p, Place) else _place_of(str(i), p, i) for i, p in enumerate(places)]
    if not out:
        raise SpecError("places is empty; give at least one place to export")
    require_unique_ids(out)
    return out


def _place_of(pid: str, spec: Any, i: int) -> Place:
    """A Place whose geometry is computed later, by the writer thread (off the critical path)."""
    if not isinstance(spec, SpatialSpec):
        raise SpecError(f"places[{i}] must be a BBox, PointBuffer, Geometry or Place, not {type(spec).__name__}")
    return Place(pid, spec, None, spec.crs)  # type: ignore[arg-type]


def as_outputs(outputs: str | OutputSpec | Sequence[str | OutputSpec]) -> list[OutputSpec] | None:
    """OutputSpecs from "pooled", "grid", "both" (None: whatever each model gives) or specs."""
    if isinstance(outputs, str) and outputs == "both":
        return None
    items = [outputs] if isinstance(outputs, (str, OutputSpec)) else list(outputs)
    specs = []
    for o in items:
        if isinstance(o, OutputSpec):
            specs.append(o)
        elif o in ("pooled", "grid"):
            specs.append(OutputSpec(o))
        else:
            raise SpecError(f"output {o!r} must be 'pooled', 'grid', 'both' or an OutputSpec")
    if not specs:
        raise SpecError("outputs is empty; give 'pooled', 'grid' or 'both'")
    return list(dict.fromkeys(specs))


def plan_models(
    models: str | Embedder | Sequence[str | Embedder | tuple[str, dict[str, Any]]],
    outputs: list[OutputSpec] | None,
    *,
    sensor: SensorSpec | None,
    temporal: TemporalSpec,
    frames: FrameSpec | None,
    prep: InputPrep | None,
    device: str,
    weights: str | Mapping[str, str] | None,
    model_config: Mapping[str, Mapping[str, Any]] | None,
) -> list[ModelJob]:
    """Resolve every model and check the request against it before anything is fetched."""
    if isinstance(models, (str, Embedder)):
        models = [m.strip() for m in models.split(",") if m.strip()] if isinstance(models, str) else [models]
    if not models:
        raise SpecError("models is empty; give at least one model id (see `eoembed models`)")
    jobs = []
    for m in models:
        config: dict[str, Any] = {}
        if isinstance(m, tuple):
            m, config = m[0], dict(m[1])
        key = m.model_id if isinstance(m, Embedder) else str(m).strip().lower()
        config = {**dict((model_config or {}).get(key, {})), **config}
        w = weights.get(key) if isinstance(weights, Mapping) else weights
        emb = m if isinstance(m, Embedder) else get_embedder(key, device=device, weights=w, **config)
        card = emb.describe()
        wanted = outputs if outputs is not None else [OutputSpec(o) for o in card.outputs]
        for o in wanted:
            emb.check(o, sensor, temporal, frames, prep)
        sig = json.dumps(
            [card.id, card.config, card.weights, w, getattr(emb, "weights", None), card.preprocessing],
            sort_keys=True, default=str,
        )
        jobs.append(ModelJob(
            key=card.id, model=m if isinstance(m, Embedder) else key,
            config=tuple(sorted(config.items())), weights=w, device=device, outputs=tuple(wanted),
            sensor=emb.sensor_for(sensor), frames=emb.frames_for(frames), signature=sig,
        ))
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise SpecError(f"models {keys} name a model twice")
    return jobs


def fingerprint(place: Place, job: ModelJob, output: OutputSpec, temporal: TemporalSpec,
                prep: InputPrep | None, provider_sig: str) -> str:
    """Identity of one item's result: place, id, window, sensor, frames, model, output, source."""
    parts = [
        place.spatial.key(), place.id, temporal.key(), job.sensor.key(),
        job.frames.key() if job.frames else "composite", job.signature, output.key(),
        prep.key() if prep else "default", provider_sig,
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()



def split_task(task: ChunkTask, size: int) -> list[ChunkTask]:
    """Slices of about `size` places of a chunk (the unit of fetch-ahead and of a forward pass)."""
    order = list(task.places)
    out = []
    for k in range(0, len(order), max(1, size)):
        keep = set(order[k : k + size])
        out.append(ChunkTask(task.number, {i: task.places[i] for i in order[k : k + size]},
                             [it for it in task.items if it.index in keep]))
    return out


@dataclass(frozen=True)
class Wanted:
    """The items a run wants of one model and output: one per place, fingerprints computed when
    asked (from the place), so that no table of N fingerprints is held in memory."""

    places: Sequence[Place]
    job: ModelJob
    output: OutputSpec
    temporal: TemporalSpec
    prep: InputPrep | None
    provider_sig: str

    def __len__(self) -> int:
        return len(self.places)

    def fp(self, index: int) -> str:
        """The fingerprint of the item of place `index`."""
        return fingerprint(self.places[index], self.job, self.output, self.temporal, self.prep, self.provider_sig)

    def matches(self, index: Any, fp: Any) -> bool:
        """Whether `fp` is what this run wants of place `index` (False for anything malformed)."""
        return isinstance(index, int) and 0 <= index < len(self.places) and fp == self.fp(index)


def plan_wanted(places: Sequence[Place], jobs: Sequence[ModelJob], temporal: TemporalSpec,
                prep: InputPrep | None, provider_sig: str) -> dict[tuple[str, OutputSpec], Wanted]:
    """What the run wants, per (model, output), in the order of models and their outputs."""
    return {(job.key, o): Wanted(places, job, o, temporal, prep, provider_sig) for job in jobs for o in job.outputs}


def plan_chunks(places: Sequence[Place], wanted: Mapping[tuple[str, OutputSpec], Wanted],
                done: Mapping[tuple[str, OutputSpec], np.ndarray], chunk_size: int) -> Iterator[ChunkTask]:
    """Chunks of `chunk_size` places that have work left (items not `done`), made as they are
    consumed: planning holds one chunk at a time, whatever the number of places."""
    number, pending, items = 0, {}, []
    for i, p in enumerate(places):
        mine = [Item(i, p.id, key[0], key[1], w.fp(i)) for key, w in wanted.items() if not done[key][i]]
        if not mine:
            continue
        pending[i] = (p.id, p.spatial)
        items += mine
        if len(pending) == chunk_size:
            yield ChunkTask(number, pending, items)
            number, pending, items = number + 1, {}, []
    if pending:
        yield ChunkTask(number, pending, items)
