"""The Dask executor: chunks run on ``dask.distributed`` workers, results written here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..errors import SpecError
from ..products import open_for, route_products
from ..providers import Provider
from ..specs import InputPrep, TemporalSpec
from .fetch import fetch_chunk, prepare_chunk
from .inference import ItemResult, infer_chunk
from .plan import ChunkTask, ModelJob
from .retry import RetryPolicy, error_text
from .thread_executor import slice_size, stream_chunks

_WORKER_PROVIDERS: dict[str, Provider] = {}
_WORKER_LOCK = threading.Lock()


def _worker_provider(source: Any, options: dict[str, Any], embedders: Sequence[Any] = ()) -> Provider:
    products_only = bool(embedders) and all(getattr(e, "precomputed", False) for e in embedders)
    key = repr((str(source), sorted(options.items()), products_only))
    with _WORKER_LOCK:
        prov = _WORKER_PROVIDERS.get(key)
        if prov is None:
            prov = _WORKER_PROVIDERS[key] = open_for(source, options, embedders)
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
    embedders = [j.embedder() for j in jobs]
    provider = source if isinstance(source, Provider) else _worker_provider(source, options, embedders)
    provider = route_products(provider, embedders)
    size = slice_size(jobs, len(task.places))
    broken: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="eoembed-fetch") as pool:
        out: list[ItemResult] = []
        for _, results in stream_chunks(
            [task],
            lambda t: fetch_chunk(t, jobs, provider, temporal, policy, pool),
            lambda t, f: infer_chunk(t, f, jobs, prep, policy, broken),
            size, ahead=max(2, -(-threads // size) + 1), fetchers=-(-threads // size),
            prepare=lambda t: prepare_chunk(t, jobs, provider, temporal),
        ):
            out += results
    return out



def run_dask(
    tasks: Iterable[ChunkTask], jobs: list[ModelJob], source: Any, options: dict[str, Any], temporal: TemporalSpec,
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
        queue = iter(tasks)  # chunks are planned as they are sent
        ac = as_completed()
        by_future: dict[Any, ChunkTask] = {}

        def submit() -> None:
            task = next(queue, None)
            if task is None:
                return
            fut = client.submit(run_chunk_on_worker, task, jobs, source, options, temporal, prep, policy,
                                workers, pure=False, retries=policy.retries)
            by_future[fut] = task
            ac.add(fut)

        for _ in range(2 * n_workers):
            submit()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eoembed-write") as write_pool:
            writing: Future | None = None
            for fut in ac:
                task = by_future.pop(fut)
                try:
                    results = fut.result()
                except Exception as exc:  # the worker itself died or the task could not run
                    results = [ItemResult(it, stage="worker", error=error_text(exc)) for it in task.items]
                if not cancelled:
                    submit()
                if writing is not None:
                    writing.result()
                writing = write_pool.submit(handle, task, results)
                if should_stop is not None and should_stop() and not cancelled:
                    cancelled = True
                    queue = iter(())
            if writing is not None:
                writing.result()
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
    return cancelled
