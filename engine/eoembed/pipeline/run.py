"""The run: plan, execute (threads or Dask), write, consolidate, and the summary."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..embedders.base import Embedder
from ..errors import EoembedError, ExportError, ModelError, ProviderError, SpecError
from ..export.atomic import atomic_path
from ..export.layout import RUN_NAME
from ..export.manifest import MANIFEST_NAME, Manifest
from ..export.outdir import prepare_out_dir
from ..features import Place
from ..preflight import preflight
from ..products import open_for, route_products
from ..providers import Provider
from ..providers.redact import scrub
from ..specs import FrameSpec, InputPrep, OutputSpec, SensorSpec, SpatialSpec, TemporalSpec
from .budget import ThreadBudget, plan_threads, using_torch_threads
from .consolidate import consolidate_grids, consolidate_pooled
from .dask_executor import run_dask
from .inference import ItemResult
from .plan import ChunkTask, ModelJob, as_outputs, as_places, plan_chunks, plan_models, plan_wanted
from .resume import clean_partial_files, latest_ok
from .retry import RetryPolicy
from .thread_executor import run_threads
from .writing import Writer

ProgressFn = Callable[[int, int, dict[str, Any]], Any]


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
    workers: int | None = None,
    torch_threads: int | None = None,
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
    `workers` (places fetched at once) and `torch_threads` default to the thread budget of
    :mod:`.budget`, chosen from the cores this process may use and the provider.
    """
    t0 = time.perf_counter()
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SpecError(f"chunk_size={chunk_size!r} must be a whole number ≥ 1")
    for name, value in (("workers", workers), ("torch_threads", torch_threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"{name}={value!r} must be a whole number ≥ 1 (or None: chosen from the cores)")
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
    provider = open_for(source, source_options, [j.embedder() for j in jobs])
    try:
        return _run(place_list, jobs, provider, temporal, out, t0=t0, source=source, source_options=source_options,
                    prep=prep, chunk_size=chunk_size, budget=plan_threads(provider, workers, torch_threads,
                                                                   accelerator=_on_accelerator(jobs)),
                    executor=executor, scheduler=scheduler, policy=policy, continue_on_error=continue_on_error,
                    progress=progress, should_stop=should_stop, stack=stack)
    finally:
        if not isinstance(source, Provider):
            provider.close()  # opened here: its threads and open files end with the run


def _run(
    place_list: list[Place], jobs: list[ModelJob], provider: Provider, temporal: TemporalSpec, out: str | Path, *,
    t0: float, source: Any, source_options: dict[str, Any] | None, prep: InputPrep | None, chunk_size: int,
    budget: ThreadBudget, executor: str, scheduler: Any, policy: RetryPolicy, continue_on_error: bool,
    progress: ProgressFn | None, should_stop: Callable[[], bool] | None, stack: bool,
) -> ExportSummary:
    """The run once everything is resolved: plan, execute, consolidate (see :func:`run_export`)."""
    provider_sig = json.dumps(provider.describe(), sort_keys=True, default=str)
    provider = route_products(provider, [j.embedder() for j in jobs])
    preflight(jobs, provider, temporal, place_list)  # a request that can never succeed fails here, once
    out, _ = prepare_out_dir(out)
    clean_partial_files(out)
    manifest = Manifest(out / MANIFEST_NAME)
    wanted = plan_wanted(place_list, jobs, temporal, prep, provider_sig)
    done = latest_ok(manifest, wanted, out)  # ok in the manifest, file still sound
    total = len(place_list) * len(wanted)
    skipped = int(sum(int(d.sum()) for d in done.values()))
    tasks = plan_chunks(place_list, wanted, done, chunk_size)

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
        "executor": executor, "chunk_size": chunk_size, "threads": budget.to_dict(),
        "started": datetime.now(timezone.utc).isoformat(),
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
        failures.extend(bad[: max(0, 50 - len(failures))])  # the first 50 for the summary
        state.add(len(records) - len(bad), len(bad), chunk=task.number)
        if bad and not continue_on_error:
            raise _abort(bad[0])

    if skipped == total:
        pass  # everything is done already: only consolidate
    elif executor == "thread":
        with using_torch_threads(budget.torch):
            cancelled = run_threads(tasks, jobs, provider, temporal, prep, policy, budget.fetch, chunk_size, handle,
                                    should_stop, budget.tuner(), budget.streams)
    else:
        cancelled = run_dask(tasks, jobs, source, source_options or {}, temporal, prep, policy, budget.fetch,
                              scheduler, handle, should_stop)

    # consolidate
    files: dict[str, list[str]] = {}
    for job in jobs:
        card = job.embedder().describe().to_dict()
        meta = {**run_meta, "model": job.key, "card": card}
        for o in job.outputs:
            w = wanted[(job.key, o)]
            if o.mode == "pooled":
                paths = consolidate_pooled(out, job.key, o, w, {**meta, "output": o.key()}, geo_crs)
            else:
                ok = latest_ok(manifest, {(job.key, o): w})[(job.key, o)]
                ok_ids = [(int(i), place_list[i].id) for i in np.flatnonzero(ok)]
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


def _on_accelerator(jobs: Sequence[ModelJob]) -> bool:
    """True when a model runs its forward pass off the CPU (then one inference stream)."""
    return any(str(getattr(j.embedder(), "device", "cpu")).split(":")[0] not in ("cpu", "") for j in jobs)


def _abort(rec: dict[str, Any]) -> EoembedError:
    cls = {"fetch": ProviderError, "write": ExportError}.get(rec["stage"], ModelError)
    return cls(f"place {rec['id']!r}, model {rec['model']}: {rec['stage']} failed: {rec['error']}")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(scrub(data), indent=2, default=str))


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
