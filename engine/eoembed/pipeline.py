"""Batch orchestration: chunk → dedup → prefetch → infer → write, with retries, a manifest and resume.

:func:`run_export` embeds many places with several models and writes the results to a folder:

* **Chunks** of ``chunk_size`` places bound peak memory: at most the chunk being inferred, the
  next chunk being fetched and the previous chunk being written are in memory at once.
* **Dedup**: a place's pixels are fetched once per (grid, window, frames, sensor settings) for
  all models, with the union of their bands, then each model gets its bands.
* **Overlap**: fetches of chunk k+1 run in a thread pool while chunk k is inferred, and a
  writer thread writes chunk k−1; inference is batched (``batch_size`` places per forward).
* **Faults**: each (place, model, output) item is isolated; fetch, inference and write are
  retried with exponential backoff and jitter; a JSON-lines manifest records every item's
  state. A rerun skips items whose fingerprint is recorded done (and whose files are intact)
  and retries the failed ones. Every file is written atomically, so a SIGKILL at any moment
  leaves no corrupted file and a rerun ends with the same outputs.
* **Scale-out**: ``executor="dask"`` sends chunks to a ``dask.distributed`` cluster; each
  worker process caches its provider and embedders (loaded once), results stream back and
  are written by this process to the same outputs and manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio
import shapely
from pyproj import Transformer

from . import __version__
from .embedders.base import Embedder
from .embedders.registry import get_embedder
from .embedding import Embedding
from .errors import CapabilityError, EoembedError, ExportError, ModelError, ProviderError, SpecError
from .export.atomic import atomic_path
from .export.geoparquet import read_geoparquet, write_geoparquet
from .export.geotiff import read_geotiff, write_geotiff
from .export.layout import (
    GRID_STACK,
    PARTS_DIR,
    POOLED_NPZ,
    POOLED_PARQUET,
    RUN_NAME,
    grid_path,
    model_dir,
)
from .export.manifest import MANIFEST_NAME, Manifest
from .export.npz import write_npz
from .export.stack import write_grid_stack
from .features import Place, read_places
from .providers import Provider, open_provider
from .providers.base import FetchRequest, Observation, make_observation
from .specs import (
    FrameSpec,
    InputPrep,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)

#: Errors that no retry can fix: the request itself is wrong.
PERMANENT = (SpecError, CapabilityError)
#: Largest NetCDF grid stack file; more grids go to numbered shards.
STACK_MAX_BYTES = 512 * 2**20

ProgressFn = Callable[[int, int, dict[str, Any]], Any]


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter: the k-th wait is
    ``backoff · 2^k · U(0.5, 1.5)`` seconds, capped at ``max_wait``."""

    retries: int = 2
    backoff: float = 0.2
    max_wait: float = 10.0

    def wait(self, attempt: int) -> float:
        return min(self.max_wait, self.backoff * (2**attempt) * random.uniform(0.5, 1.5))

    def call(self, fn: Callable[[], Any]) -> tuple[Any, int]:
        """``(fn(), attempts)``; re-raises the last error (with ``.attempts``) when all fail."""
        for attempt in range(self.retries + 1):
            try:
                return fn(), attempt + 1
            except PERMANENT as exc:
                exc.attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            except Exception as exc:
                if attempt >= self.retries:
                    exc.attempts = attempt + 1  # type: ignore[attr-defined]
                    raise
                time.sleep(self.wait(attempt))
        raise AssertionError("unreachable")


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


@dataclass
class ItemResult:
    """What became of one item: an embedding, or the stage and error that stopped it."""

    item: Item
    embedding: Embedding | None = None
    stage: str = "ok"
    error: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportSummary:
    """The end of a run: counts, throughput, failures and the files written."""

    out: Path
    total: int
    ok: int
    failed: int
    skipped: int
    seconds: float
    cancelled: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """Items computed in this run."""
        return self.ok

    @property
    def throughput(self) -> float:
        """Items computed per second in this run."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d["throughput"] = round(self.throughput, 3)
        return d

    def __str__(self) -> str:
        tail = " (cancelled)" if self.cancelled else ""
        return (
            f"{self.ok} done, {self.failed} failed, {self.skipped} skipped of {self.total} in "
            f"{self.seconds:.1f} s ({self.throughput:.1f}/s) → {self.out}{tail}"
        )


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
    seen: dict[str, int] = {}
    for i, p in enumerate(out):
        if p.id in seen:
            raise SpecError(f"places #{seen[p.id]} and #{i} share the id {p.id!r}; ids must be unique (use another id field)")
        seen[p.id] = i
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


# ---------------------------------------------------------------------------------------------
# compute: fetch (deduplicated) and infer (batched), both isolated per item and retried
# ---------------------------------------------------------------------------------------------
def _group_key(req: FetchRequest) -> str:
    sensor = dataclasses.replace(req.sensor, bands=None)
    frames = req.frames.key() if req.frames else "composite"
    return "|".join((req.grid.key(), req.temporal.key(), sensor.key(), frames, req.spatial.key()))


def _subset(obs: Observation, bands: tuple[str, ...]) -> Observation:
    if obs.bands == bands:
        return obs
    return make_observation(obs.values(bands), obs.valid, obs.grid, bands, obs.dates, obs.roi_mask, obs.meta)


#: per (place index, model): the observation or None, the error text or None, and attempts
Fetched = dict[tuple[int, str], tuple["Observation | None", "str | None", int]]


def fetch_chunk(
    task: ChunkTask,
    jobs: Sequence[ModelJob],
    provider: Provider,
    temporal: TemporalSpec,
    policy: RetryPolicy,
    pool: ThreadPoolExecutor | None,
) -> Fetched:
    """Observations for every (place, model) the chunk needs, fetched once per pixel request.

    Requests of several models that differ only in bands are merged (union of bands); when the
    merged fetch fails, each model's own bands are fetched so one missing band cannot sink all.
    Returns ``{(index, model): (observation, error, attempts)}``.
    """
    by_model = {j.key: j for j in jobs}
    needed: dict[int, set[str]] = {}
    for it in task.items:
        needed.setdefault(it.index, set()).add(it.model)
    groups: dict[str, dict[str, Any]] = {}
    out: Fetched = {}
    pairs = [(index, m) for index, models in needed.items() for m in sorted(models)]

    def make(pair: tuple[int, str]) -> FetchRequest | Exception:
        job = by_model[pair[1]]
        try:  # a provider may search its catalogue to place the grid: in parallel
            return provider.request(task.places[pair[0]][1], temporal, job.sensor, job.frames)
        except Exception as exc:
            return exc

    made = list(pool.map(make, pairs) if pool is not None and len(pairs) > 1 else map(make, pairs))
    for (index, m), req in zip(pairs, made):
        if isinstance(req, Exception):
            out[(index, m)] = (None, _err(req), 1)
            continue
        g = groups.setdefault(_group_key(req), {"req": req, "members": []})
        g["members"].append((index, m, req.sensor.bands))

    def run(group: dict[str, Any]) -> list[tuple[tuple[int, str], tuple[Observation | None, str | None, int]]]:
        req: FetchRequest = group["req"]
        members = group["members"]
        band_sets = list(dict.fromkeys(b for _, _, b in members))
        union = tuple(dict.fromkeys(b for bs in band_sets for b in bs))
        res: list[tuple[tuple[int, str], tuple[Observation | None, str | None, int]]] = []
        try:
            obs, n = policy.call(lambda: provider.fetch(dataclasses.replace(req, sensor=req.sensor.with_bands(union))))
            return [((i, m), (_subset(obs, b), None, n)) for i, m, b in members]
        except Exception as exc:
            tried = getattr(exc, "attempts", 1)
            if len(band_sets) == 1:
                return [((i, m), (None, _err(exc), tried)) for i, m, _ in members]
        for bs in band_sets:
            try:
                obs, n = policy.call(lambda bs=bs: provider.fetch(dataclasses.replace(req, sensor=req.sensor.with_bands(bs))))
                res += [((i, m), (obs, None, tried + n)) for i, m, b in members if b == bs]
            except Exception as exc:
                res += [((i, m), (None, _err(exc), tried + getattr(exc, "attempts", 1))) for i, m, b in members if b == bs]
        return res

    work = list(groups.values())
    results = pool.map(run, work) if pool is not None and len(work) > 1 else map(run, work)
    for pairs in results:
        out.update(pairs)
    return out


def _err(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, EoembedError) else f"{type(exc).__name__}: {text}"


def infer(
    embedder: Embedder,
    observations: Sequence[Observation],
    output: OutputSpec,
    prep: InputPrep | None,
    policy: RetryPolicy,
) -> list[tuple[Embedding | None, str | None, int]]:
    """Embed `observations` in batches; isolate and retry failures.

    Each round embeds the still-pending items as one batched call; when that call fails the
    items are embedded one by one so that good items are not sunk by a bad one. Items that
    still fail wait (backoff with jitter, once per round) and are retried, up to
    ``policy.retries`` times. Returns ``(embedding, error, attempts)`` per observation.
    """
    n = len(observations)
    done: list[Embedding | None] = [None] * n
    errors: list[str | None] = [None] * n
    attempts = [0] * n
    pending = list(range(n))
    for rnd in range(policy.retries + 1):
        if rnd:
            time.sleep(policy.wait(rnd - 1))
        for i in pending:
            attempts[i] += 1
        try:
            res = embedder.embed([observations[i] for i in pending], output, prep)
            for i, e in zip(pending, res):
                done[i], errors[i] = e, None
            pending = []
        except PERMANENT as exc:
            for i in pending:
                errors[i] = _err(exc)
            break
        except Exception as exc:
            if len(pending) == 1:
                errors[pending[0]] = _err(exc)
            else:
                still = []
                for i in pending:
                    try:
                        done[i], errors[i] = embedder.embed([observations[i]], output, prep)[0], None
                    except Exception as one:
                        errors[i] = _err(one)
                        still.append(i)
                pending = still
        if not pending:
            break
    return list(zip(done, errors, attempts))


def infer_chunk(
    task: ChunkTask,
    fetched: Fetched,
    jobs: Sequence[ModelJob],
    prep: InputPrep | None,
    policy: RetryPolicy,
    broken: dict[str, str] | None = None,
) -> list[ItemResult]:
    """Run every model of the chunk on its fetched observations; one ItemResult per item."""
    broken = {} if broken is None else broken
    results: list[ItemResult] = []
    by_model = {j.key: j for j in jobs}
    for job in jobs:
        for output in job.outputs:
            items = [it for it in task.items if it.model == job.key and it.output == output]
            if not items:
                continue
            ready: list[tuple[Item, Observation, int]] = []
            for it in items:
                obs, msg, n = fetched.get((it.index, it.model), (None, "not fetched", 0))
                if obs is not None:
                    ready.append((it, obs, n))
                else:
                    results.append(ItemResult(it, stage="fetch", error=msg, attempts={"fetch": n}))
            if not ready:
                continue
            if job.key in broken:
                results += [ItemResult(it, stage="load", error=broken[job.key], attempts={"fetch": n}) for it, _, n in ready]
                continue
            embedder = by_model[job.key].embedder()
            try:
                policy.call(embedder.load)
            except Exception as exc:
                broken[job.key] = _err(exc)
                results += [ItemResult(it, stage="load", error=broken[job.key], attempts={"fetch": n}) for it, _, n in ready]
                continue
            outs = infer(embedder, [o for _, o, _ in ready], output, prep, policy)
            for (it, _, nf), (emb, err, n) in zip(ready, outs):
                if emb is not None:
                    results.append(ItemResult(it, embedding=emb, attempts={"fetch": nf, "infer": n}))
                else:
                    results.append(ItemResult(it, stage="infer", error=err, attempts={"fetch": nf, "infer": n}))
    return results


# ---------------------------------------------------------------------------------------------
# Dask workers: one provider and one embedder per model per worker process
# ---------------------------------------------------------------------------------------------
_WORKER_PROVIDERS: dict[str, Provider] = {}
_WORKER_LOCK = threading.Lock()


def _worker_provider(source: Any, options: dict[str, Any]) -> Provider:
    key = repr((str(source), sorted(options.items())))
    with _WORKER_LOCK:
        prov = _WORKER_PROVIDERS.get(key)
        if prov is None:
            prov = _WORKER_PROVIDERS[key] = open_provider(source, **options)
        return prov


def run_chunk_on_worker(
    task: ChunkTask,
    jobs: Sequence[ModelJob],
    source: Any,
    options: dict[str, Any],
    temporal: TemporalSpec,
    prep: InputPrep | None,
    policy: RetryPolicy,
    threads: int,
) -> list[ItemResult]:
    """Fetch and infer one chunk inside a Dask worker (the provider and models are cached there);
    fetching runs ahead of inference slice by slice, as in the threaded executor."""
    provider = source if isinstance(source, Provider) else _worker_provider(source, options)
    size = _slice_size(jobs, len(task.places), threads)
    broken: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="eoembed-fetch") as pool:
        out: list[ItemResult] = []
        for _, results in stream_chunks(
            [task],
            lambda t: fetch_chunk(t, jobs, provider, temporal, policy, pool),
            lambda t, f: infer_chunk(t, f, jobs, prep, policy, broken),
            size, ahead=2,
        ):
            out += results
    return out


# ---------------------------------------------------------------------------------------------
# write
# ---------------------------------------------------------------------------------------------
class Writer:
    """Writes one chunk's results (parquet part files, GeoTIFFs) then records them in the manifest.

    Files first, manifest second: a crash in between only means an item is computed again,
    never that the manifest points at a file that does not exist.
    """

    def __init__(self, out: Path, run_id: str, places: Sequence[Place], geo_crs: str,
                 manifest: Manifest, policy: RetryPolicy, run_meta: dict[str, Any]) -> None:
        self.out, self.run_id, self.places, self.geo_crs = out, run_id, places, geo_crs
        self.manifest, self.policy, self.run_meta = manifest, policy, run_meta
        self._transformers: dict[str, Transformer] = {}
        self._metric_crs: dict[str, bool] = {}

    def _metric(self, spec: PointBuffer) -> bool:
        """True when the spec's own CRS is its working CRS (then its square is axis-aligned in it)."""
        ok = self._metric_crs.get(spec.crs)
        if ok is None:
            ok = self._metric_crs[spec.crs] = spec.working_crs == spec.crs_obj
        return ok

    def geometry(self, index: int) -> shapely.Geometry:
        """The place's geometry in the output CRS (squares of points in a metric CRS built directly)."""
        p = self.places[index]
        spec = p.spatial
        if p.geometry is not None:
            geom = p.geometry
        elif isinstance(spec, PointBuffer) and self._metric(spec):
            b = spec.buffer_m
            geom = shapely.box(spec.x - b, spec.y - b, spec.x + b, spec.y + b)
        else:
            geom = spec.shape()
        if p.crs == self.geo_crs:
            return geom
        tr = self._transformers.get(p.crs)
        if tr is None:
            tr = self._transformers[p.crs] = Transformer.from_crs(p.crs, self.geo_crs, always_xy=True)
        return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    def write(self, chunk: int, results: list[ItemResult]) -> list[dict[str, Any]]:
        """Write the ok results, then append one manifest record per result; returns the records."""
        files: dict[str, str] = {}
        pooled: dict[tuple[str, OutputSpec], list[ItemResult]] = {}
        for r in results:
            if r.embedding is None:
                continue
            if r.item.output.mode == "pooled":
                pooled.setdefault((r.item.model, r.item.output), []).append(r)
            else:
                self._guarded(r, lambda r=r: self._write_grid(r), files)
        for (model, output), rows in pooled.items():
            name = f"{PARTS_DIR}/pooled-{self.run_id}-{chunk:06d}.parquet"
            path = model_dir(self.out, model, output.key()) / name

            def write_part(rows=rows, path=path, model=model, output=output) -> str:
                self._write_part(path, rows, model, output)
                return str(path.relative_to(self.out))

            try:
                rel, n = self.policy.call(write_part)
                for r in rows:
                    files[r.item.fp] = rel
                    r.attempts["write"] = n
            except Exception as exc:
                for r in rows:
                    r.stage, r.error, r.embedding = "write", _err(exc), None
                    r.attempts["write"] = getattr(exc, "attempts", 1)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        records = []
        for r in results:
            rec = {
                "fp": r.item.fp, "index": r.item.index, "id": r.item.id, "model": r.item.model,
                "output": r.item.output.key(), "status": "ok" if r.stage == "ok" else "failed",
                "stage": r.stage, "error": r.error, "attempts": r.attempts, "run": self.run_id, "time": now,
            }
            if r.stage == "ok":
                rec["file"] = files[r.item.fp]
            records.append(rec)
        self.policy.call(lambda: self.manifest.append(records))
        return records

    def _guarded(self, r: ItemResult, fn: Callable[[], str], files: dict[str, str]) -> None:
        try:
            rel, n = self.policy.call(fn)
            files[r.item.fp] = rel
            r.attempts["write"] = n
        except Exception as exc:
            r.stage, r.error, r.embedding = "write", _err(exc), None
            r.attempts["write"] = getattr(exc, "attempts", 1)

    def _write_grid(self, r: ItemResult) -> str:
        assert r.embedding is not None
        path = grid_path(self.out, r.item.model, r.item.id)
        emb = Embedding(r.embedding.data, {**r.embedding.meta, "id": r.item.id, "fingerprint": r.item.fp})
        write_geotiff(emb, path)
        return str(path.relative_to(self.out))

    def _write_part(self, path: Path, rows: list[ItemResult], model: str, output: OutputSpec) -> None:
        vectors = np.stack([r.embedding.to_numpy() for r in rows])  # type: ignore[union-attr]
        first = rows[0].embedding.meta  # type: ignore[union-attr]
        meta = {**self.run_meta, "model": model, "output": output.key(),
                "embedding": {k: v for k, v in first.items() if k != "source"}}
        write_geoparquet(
            path, [r.item.id for r in rows], [self.geometry(r.item.index) for r in rows], vectors, self.geo_crs,
            model=model, meta=meta,
            columns={
                "index": [r.item.index for r in rows],
                "fingerprint": [r.item.fp for r in rows],
                "coverage": [r.embedding.meta.get("source", {}).get("coverage") for r in rows],  # type: ignore[union-attr]
                "source": [json.dumps(r.embedding.meta.get("source", {}), default=str) for r in rows],  # type: ignore[union-attr]
            },
        )


# ---------------------------------------------------------------------------------------------
# resume: what is done, what files are sound
# ---------------------------------------------------------------------------------------------
def clean_partial_files(out: Path) -> list[Path]:
    """Remove temporary files a crash left behind (``.<name>.<hex>.part``) and quarantine
    part files that cannot be read (renamed ``*.corrupt``); returns what was touched."""
    touched = []
    if not out.exists():
        return touched
    for p in out.rglob(".*.part"):
        if p.is_file():
            p.unlink(missing_ok=True)
            touched.append(p)
    for p in out.rglob(f"{PARTS_DIR}/*.parquet"):
        try:
            pq.read_metadata(p)
        except Exception:
            bad = p.with_name(p.name + ".corrupt")
            p.replace(bad)
            touched.append(bad)
    return touched


def _file_sound(path: Path, mode: str, cache: dict[Path, bool]) -> bool:
    if path in cache:
        return cache[path]
    ok = path.is_file()
    if ok and mode == "grid":
        try:
            with rasterio.open(path) as src:
                ok = src.count > 0
        except Exception:
            ok = False
    cache[path] = ok
    return ok


def done_fingerprints(out: Path, manifest: Manifest) -> dict[str, dict[str, Any]]:
    """Latest ok records whose files are still sound (a deleted or broken file means redo)."""
    cache: dict[Path, bool] = {}
    done = {}
    for fp, rec in manifest.latest().items():
        if rec.get("status") != "ok" or not rec.get("file"):
            continue
        if _file_sound(out / rec["file"], "grid" if rec.get("output") == "grid" else "pooled", cache):
            done[fp] = rec
    return done


# ---------------------------------------------------------------------------------------------
# finalise: consolidated outputs
# ---------------------------------------------------------------------------------------------
def consolidate_pooled(out: Path, model: str, output: OutputSpec, wanted: dict[str, int],
                       meta: dict[str, Any], crs: str) -> list[Path]:
    """Merge a model's part files into ``pooled.parquet`` and ``pooled.npz``, rows in input order.

    Only fingerprints in `wanted` (fp → input index) count; duplicates (an item computed twice
    around a crash) keep one row. Geometries end up in `crs` (parts of earlier runs may differ).
    """
    folder = model_dir(out, model, output.key())
    rows: dict[str, tuple[int, str, shapely.Geometry, np.ndarray, float | None, str]] = {}
    for part in sorted((folder / PARTS_DIR).glob("*.parquet")):
        try:
            t = read_geoparquet(part)
        except ExportError:
            continue
        cols = t["columns"]
        geoms = t["geometries"]
        if t["crs"] != crs and any(fp in wanted and fp not in rows for fp in cols["fingerprint"]):
            tr = Transformer.from_crs(t["crs"], crs, always_xy=True)
            geoms = [shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
                     for g in geoms]
        for k, fp in enumerate(cols["fingerprint"]):
            if fp in wanted and fp not in rows:
                rows[fp] = (wanted[fp], t["ids"][k], geoms[k], t["vectors"][k], cols["coverage"][k], cols["source"][k])
    if not rows:
        return []
    ordered = sorted(rows.items(), key=lambda kv: kv[1][0])
    ids = [r[1] for _, r in ordered]
    vectors = np.stack([r[3] for _, r in ordered])
    index = [r[0] for _, r in ordered]
    fps = [fp for fp, _ in ordered]
    pq_path = write_geoparquet(
        folder / POOLED_PARQUET, ids, [r[2] for _, r in ordered], vectors, crs,
        model=model, meta=meta,
        columns={"index": index, "fingerprint": fps, "coverage": [r[4] for _, r in ordered],
                 "source": [r[5] for _, r in ordered]},
    )
    npz_path = write_npz(folder / POOLED_NPZ, ids, vectors, model=model, meta=meta,
                         arrays={"index": np.asarray(index, np.int64), "fingerprints": np.asarray(fps)})
    return [pq_path, npz_path]


def consolidate_grids(out: Path, model: str, wanted: Sequence[tuple[int, str]], meta: dict[str, Any],
                      max_bytes: int = STACK_MAX_BYTES) -> list[Path]:
    """Stack a model's grid GeoTIFFs (in input order) into ``grids.nc``, or numbered shards
    ``grids-00000.nc``… when they exceed `max_bytes`, so memory stays bounded."""
    folder = model_dir(out, model, "grid")
    for old in folder.glob("grids*.nc"):
        old.unlink()
    shards: list[list[tuple[str, Embedding]]] = [[]]
    size = 0
    written: list[Path] = []

    def flush(items: list[tuple[str, Embedding]], k: int) -> None:
        written.append(write_grid_stack(folder / f"grids-{k:05d}.nc", items, meta=meta))

    k = 0
    for _, item_id in sorted(wanted):
        path = grid_path(out, model, item_id)
        try:
            emb = read_geotiff(path)
        except ExportError:
            continue
        nbytes = emb.to_numpy().nbytes
        if shards[-1] and size + nbytes > max_bytes:
            flush(shards[-1], k)
            k += 1
            shards.append([])
            size = 0
        shards[-1].append((item_id, emb))
        size += nbytes
    if shards[-1]:
        flush(shards[-1], k)
    if len(written) == 1:
        final = folder / GRID_STACK
        written[0].replace(final)
        written = [final]
    return written


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def run_export(
    places: str | Path | Sequence[Place | SpatialSpec] | Mapping[str, SpatialSpec],
    temporal: TemporalSpec,
    models: str | Embedder | Sequence[str | Embedder | tuple[str, dict[str, Any]]],
    out: str | Path,
    *,
    outputs: str | OutputSpec | Sequence[str | OutputSpec] = "pooled",
    source: str | Path | Provider = "local",
    source_options: dict[str, Any] | None = None,
    sensor: SensorSpec | None = None,
    frames: FrameSpec | None = None,
    prep: InputPrep | None = None,
    device: str = "cpu",
    weights: str | Mapping[str, str] | None = None,
    model_config: Mapping[str, Mapping[str, Any]] | None = None,
    id_field: str | None = None,
    buffer_m: float = 320.0,
    chunk_size: int = 256,
    workers: int = 4,
    executor: str = "thread",
    scheduler: Any = None,
    retries: int = 2,
    backoff: float = 0.2,
    continue_on_error: bool = True,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    stack: bool = True,
) -> ExportSummary:
    """Embed every place with every model and write the results under `out` (see module doc).

    Layout: ``<out>/<model>/pooled.parquet`` (+ ``pooled.npz``), ``<out>/<model>/grids/<id>.tif``
    and ``<out>/<model>/grids.nc``, ``<out>/manifest.jsonl``, ``<out>/run.json``.
    """
    t0 = time.perf_counter()
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SpecError(f"chunk_size={chunk_size!r} must be a whole number ≥ 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers={workers!r} must be a whole number ≥ 1")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
        raise SpecError(f"retries={retries!r} must be a whole number from 0 to 20")
    if executor not in ("thread", "dask"):
        raise SpecError(f"executor={executor!r} must be 'thread' or 'dask'")
    policy = RetryPolicy(retries=retries, backoff=float(backoff))
    place_list = as_places(places, id_field=id_field, buffer_m=buffer_m)
    jobs = plan_models(models, as_outputs(outputs), sensor=sensor, temporal=temporal, frames=frames, prep=prep,
                       device=device, weights=weights, model_config=model_config)
    if executor == "dask" and any(isinstance(j.model, Embedder) for j in jobs):
        raise SpecError("executor='dask' needs model ids (strings), not Embedder instances, so workers can build them")
    provider = open_provider(source, **(source_options or {}))
    provider_sig = json.dumps(provider.describe(), sort_keys=True, default=str)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_partial_files(out)
    manifest = Manifest(out / MANIFEST_NAME)
    done = done_fingerprints(out, manifest)

    # plan every item; skip those done
    items_by_place: list[list[Item]] = []
    wanted: dict[tuple[str, OutputSpec], dict[str, int]] = {}
    skipped = 0
    for i, p in enumerate(place_list):
        mine = []
        for job in jobs:
            for o in job.outputs:
                fp = fingerprint(p, job, o, temporal, prep, provider_sig)
                wanted.setdefault((job.key, o), {})[fp] = i
                if fp in done:
                    skipped += 1
                else:
                    mine.append(Item(i, p.id, job.key, o, fp))
        items_by_place.append(mine)
    total = sum(len(v) for v in wanted.values())
    pending_places = [i for i, its in enumerate(items_by_place) if its]
    tasks = [
        ChunkTask(
            number=k // chunk_size,
            places={i: (place_list[i].id, place_list[i].spatial) for i in pending_places[k : k + chunk_size]},
            items=[it for i in pending_places[k : k + chunk_size] for it in items_by_place[i]],
        )
        for k in range(0, len(pending_places), chunk_size)
    ]

    crs_set = {p.crs for p in place_list}
    geo_crs = crs_set.pop() if len(crs_set) == 1 else "EPSG:4326"
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    run_meta = {
        "eoembed": __version__, "run": run_id, "window": temporal.key(),
        "sensor": {j.key: j.sensor.key() for j in jobs}, "source": provider.describe(),
        "prep": prep.key() if prep else None,
    }
    run_info = {
        **run_meta, "status": "running", "places": len(place_list), "items": total,
        "models": {j.key: {"outputs": [o.key() for o in j.outputs], "frames": j.frames.key() if j.frames else None}
                   for j in jobs},
        "executor": executor, "chunk_size": chunk_size, "started": datetime.now(timezone.utc).isoformat(),
    }
    _write_json(out / RUN_NAME, run_info)
    writer = Writer(out, run_id, place_list, geo_crs, manifest, policy, run_meta)
    state = _Progress(total, skipped, progress)
    state.report("start")

    failures: list[dict[str, Any]] = []
    cancelled = False

    def handle(task: ChunkTask, results: list[ItemResult]) -> None:
        records = writer.write(task.number, results)
        bad = [r for r in records if r["status"] != "ok"]
        failures.extend(bad)
        state.add(len(records) - len(bad), len(bad), chunk=task.number)
        if bad and not continue_on_error:
            raise _abort(bad[0])

    if not tasks:
        pass  # everything is done already: only consolidate
    elif executor == "thread":
        cancelled = _run_threads(tasks, jobs, provider, temporal, prep, policy, workers, chunk_size, handle,
                                 should_stop)
    else:
        cancelled = _run_dask(tasks, jobs, source, source_options or {}, temporal, prep, policy, workers,
                              scheduler, handle, should_stop)

    # consolidate
    files: dict[str, list[str]] = {}
    for job in jobs:
        card = job.embedder().describe().to_dict()
        meta = {**run_meta, "model": job.key, "card": card}
        for o in job.outputs:
            fps = wanted[(job.key, o)]
            if o.mode == "pooled":
                paths = consolidate_pooled(out, job.key, o, fps, {**meta, "output": o.key()}, geo_crs)
            else:
                ok_ids = _ok_ids(manifest, fps, place_list)
                paths = consolidate_grids(out, job.key, ok_ids, {**meta, "output": "grid"}) if stack and ok_ids else []
            files[f"{job.key}/{o.key()}"] = [str(p.relative_to(out)) for p in paths]
    summary = ExportSummary(
        out=out, total=total, ok=state.ok, failed=state.failed,
        skipped=skipped, seconds=time.perf_counter() - t0, cancelled=cancelled,
        failures=[{k: f[k] for k in ("id", "model", "output", "stage", "error")} for f in failures[:50]],
        files=files,
    )
    _write_json(out / RUN_NAME, {**run_info, "status": "cancelled" if cancelled else "finished",
                                 "finished": datetime.now(timezone.utc).isoformat(), "summary": summary.to_dict()})
    state.report("done")
    return summary


def _ok_ids(manifest: Manifest, fps: dict[str, int], places: Sequence[Place]) -> list[tuple[int, str]]:
    latest = manifest.latest()
    return [(i, places[i].id) for fp, i in fps.items() if latest.get(fp, {}).get("status") == "ok"]


def _abort(rec: dict[str, Any]) -> EoembedError:
    cls = {"fetch": ProviderError, "write": ExportError}.get(rec["stage"], ModelError)
    return cls(f"place {rec['id']!r}, model {rec['model']}: {rec['stage']} failed: {rec['error']}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


class _Progress:
    """Counts items and calls ``progress(done, total, info)`` with rate and ETA."""

    def __init__(self, total: int, skipped: int, fn: ProgressFn | None) -> None:
        self.total, self.skipped, self.fn = total, skipped, fn
        self.ok = self.failed = 0
        self.t0 = time.perf_counter()

    def add(self, ok: int, failed: int, **info: Any) -> None:
        self.ok += ok
        self.failed += failed
        self.report("chunk", **info)

    def report(self, stage: str, **info: Any) -> None:
        if self.fn is None:
            return
        done = self.skipped + self.ok + self.failed
        dt = time.perf_counter() - self.t0
        rate = (self.ok + self.failed) / dt if dt > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else None
        self.fn(done, self.total, {"stage": stage, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                                   "rate": rate, "eta_s": eta, **info})


def split_task(task: ChunkTask, size: int) -> list[ChunkTask]:
    """Slices of about `size` places of a chunk (the unit of fetch-ahead and of a forward pass)."""
    order = list(task.places)
    out = []
    for k in range(0, len(order), max(1, size)):
        keep = set(order[k : k + size])
        out.append(ChunkTask(task.number, {i: task.places[i] for i in order[k : k + size]},
                             [it for it in task.items if it.index in keep]))
    return out


def stream_chunks(
    tasks: Sequence[ChunkTask],
    fetch: Callable[[ChunkTask], Fetched],
    infer_slice: Callable[[ChunkTask, Fetched], list[ItemResult]],
    slice_size: int,
    ahead: int,
) -> Iterator[tuple[ChunkTask, list[ItemResult]]]:
    """Yield ``(chunk, results)`` chunk by chunk while fetching runs ahead of inference.

    Each chunk is cut into slices of `slice_size` places; one background thread fetches slices
    in order (each fetch itself parallel), at most `ahead` slices ahead of the slice being
    inferred. Inference starts as soon as the first slice is in, so the pipeline fills fast and
    at most about ``ahead × slice_size`` fetched places wait in memory.
    """
    slices = ((t, s) for t in tasks for s in split_task(t, slice_size))
    window: deque[tuple[ChunkTask, ChunkTask, Future]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eoembed-prefetch") as prefetch:

        def fill() -> None:
            while len(window) < max(1, ahead):
                nxt = next(slices, None)
                if nxt is None:
                    return
                window.append((nxt[0], nxt[1], prefetch.submit(fetch, nxt[1])))

        fill()
        current: ChunkTask | None = None
        results: list[ItemResult] = []
        try:
            while window:
                task, part, fut = window.popleft()
                fill()
                fetched = fut.result()
                if current is not None and task is not current:
                    yield current, results
                    results = []
                current = task
                results += infer_slice(part, fetched)
                del fetched
            if current is not None:
                yield current, results
        finally:
            for _, _, fut in window:
                fut.cancel()


def _slice_size(jobs: Sequence[ModelJob], chunk_size: int, workers: int) -> int:
    """Places per slice: a whole inference batch, and enough fetches to keep every fetch thread busy."""
    sizes = [j.embedder().batch_size for j in jobs]
    return max(1, min(chunk_size, max(*sizes, 2 * workers)))


def _run_threads(
    tasks: list[ChunkTask], jobs: list[ModelJob], provider: Provider, temporal: TemporalSpec,
    prep: InputPrep | None, policy: RetryPolicy, workers: int, chunk_size: int,
    handle: Callable[[ChunkTask, list[ItemResult]], None], should_stop: Callable[[], bool] | None,
) -> bool:
    """Fetch ahead of inference (slice by slice) and write chunk k−1 while chunk k is inferred."""
    broken: dict[str, str] = {}
    size = _slice_size(jobs, chunk_size, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoembed-fetch") as fetch_pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="eoembed-write") as write_pool:
        writing: Future | None = None
        stream = stream_chunks(
            tasks,
            lambda t: fetch_chunk(t, jobs, provider, temporal, policy, fetch_pool),
            lambda t, f: infer_chunk(t, f, jobs, prep, policy, broken),
            size, ahead=-(-chunk_size // size) + 1,
        )
        try:
            for task, results in stream:
                if writing is not None:
                    writing.result()
                writing = write_pool.submit(handle, task, results)
                if should_stop is not None and should_stop():
                    return True
            if writing is not None:
                writing.result()
        finally:
            stream.close()
    return False


def _run_dask(
    tasks: list[ChunkTask], jobs: list[ModelJob], source: Any, options: dict[str, Any], temporal: TemporalSpec,
    prep: InputPrep | None, policy: RetryPolicy, workers: int, scheduler: Any,
    handle: Callable[[ChunkTask, list[ItemResult]], None], should_stop: Callable[[], bool] | None,
) -> bool:
    """Send chunks to a Dask cluster, a few per worker in flight; write results as they come."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise SpecError("executor='dask' needs dask.distributed: pip install 'eoembed[dask]'") from exc
    if isinstance(source, Provider):
        raise SpecError("executor='dask' needs source as a name or path (workers open it), not a Provider instance")
    cluster = None
    if isinstance(scheduler, Client):
        client, own = scheduler, False
    elif scheduler is None or (isinstance(scheduler, str) and scheduler.startswith("local")):
        n = int(scheduler.split(":", 1)[1]) if isinstance(scheduler, str) and ":" in scheduler else 2
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client, own = Client(cluster), True
    elif isinstance(scheduler, str):
        try:
            client, own = Client(scheduler, timeout="20s"), True
        except OSError as exc:
            raise SpecError(f"could not reach the Dask scheduler {scheduler!r} ({exc}); check the address") from exc
    else:
        raise SpecError("scheduler must be a dask.distributed Client, a scheduler address or 'local:N'")
    cancelled = False
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        queue = list(tasks)
        ac = as_completed()
        by_future: dict[Any, ChunkTask] = {}

        def submit() -> None:
            task = queue.pop(0)
            fut = client.submit(run_chunk_on_worker, task, jobs, source, options, temporal, prep, policy,
                                workers, pure=False, retries=policy.retries)
            by_future[fut] = task
            ac.add(fut)

        for _ in range(min(len(queue), 2 * n_workers)):
            submit()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eoembed-write") as write_pool:
            writing: Future | None = None
            for fut in ac:
                task = by_future.pop(fut)
                try:
                    results = fut.result()
                except Exception as exc:  # the worker itself died or the task could not run
                    results = [ItemResult(it, stage="worker", error=_err(exc)) for it in task.items]
                if queue and not cancelled:
                    submit()
                if writing is not None:
                    writing.result()
                writing = write_pool.submit(handle, task, results)
                if should_stop is not None and should_stop() and not cancelled:
                    cancelled = True
                    queue.clear()
            if writing is not None:
                writing.result()
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
    return cancelled
