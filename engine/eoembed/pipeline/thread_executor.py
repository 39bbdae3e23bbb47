"""The thread executor: fetch runs ahead of inference slice by slice, a writer thread behind."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ..providers import Provider
from ..specs import InputPrep, TemporalSpec
from .budget import TorchThreadTuner
from .fetch import Fetched, fetch_chunk, prepare_chunk
from .inference import ItemResult, infer_chunk
from .plan import ChunkTask, ModelJob, split_task
from .retry import RetryPolicy


def stream_chunks(
    tasks: Iterable[ChunkTask],
    fetch: Callable[[ChunkTask], Fetched],
    infer_slice: Callable[[ChunkTask, Fetched], list[ItemResult]],
    slice_size: int,
    ahead: int,
    streams: int = 1,
    fetchers: int = 1,
    prepare: Callable[[ChunkTask], None] | None = None,
) -> Iterator[tuple[ChunkTask, list[ItemResult]]]:
    """Yield ``(chunk, results)`` chunk by chunk, in order, while fetching runs ahead of inference.

    Each chunk is cut into slices of `slice_size` places. `fetchers` background threads fetch
    slices (each fetch itself parallel), at most `ahead` slices ahead of the oldest slice not
    yet inferred, after ``prepare(chunk)`` (shared work of the chunk, e.g. one catalogue
    search) has run; `streams` threads infer fetched slices at once, in order. Inference
    starts as soon as the first slice is in, so the pipeline fills fast and at most about
    ``(ahead + streams) × slice_size`` fetched places wait in memory.
    """
    window: deque[tuple[ChunkTask, ChunkTask, Future]] = deque()
    inferring: deque[tuple[ChunkTask, Future]] = deque()
    streams, fetchers = max(1, streams), max(1, fetchers)
    with ThreadPoolExecutor(max_workers=fetchers, thread_name_prefix="eoembed-prefetch") as prefetch, \
            ThreadPoolExecutor(max_workers=streams, thread_name_prefix="eoembed-infer") as infer_pool:

        def slices() -> Iterator[tuple[ChunkTask, ChunkTask, Future | None]]:
            for t in tasks:
                # submitted before the chunk's slices, so a thread takes it before any of them waits on it
                ready = prefetch.submit(prepare, t) if prepare is not None else None
                for part in split_task(t, slice_size):
                    yield t, part, ready

        def fetch_after(ready: Future | None, part: ChunkTask) -> Fetched:
            if ready is not None:  # the chunk's shared work first; if it failed, each place does its own
                wait([ready])
            return fetch(part)

        queue = slices()

        def fill() -> None:
            while len(window) < max(1, ahead):
                nxt = next(queue, None)
                if nxt is None:
                    return
                task, part, ready = nxt
                window.append((task, part, prefetch.submit(fetch_after, ready, part)))

        fill()
        current: ChunkTask | None = None
        results: list[ItemResult] = []

        def collect() -> Iterator[tuple[ChunkTask, list[ItemResult]]]:
            nonlocal current, results
            task, fut = inferring.popleft()
            done = fut.result()
            if current is not None and task is not current:
                yield current, results
                results = []
            current = task
            results += done

        try:
            while window:
                task, part, fut = window.popleft()
                fill()
                fetched = fut.result()
                while len(inferring) >= streams:
                    yield from collect()
                inferring.append((task, infer_pool.submit(infer_slice, part, fetched)))
                del fetched
            while inferring:
                yield from collect()
            if current is not None:
                yield current, results
        finally:
            for _, _, fut in window:
                fut.cancel()
            for _, fut in inferring:
                fut.cancel()


def slice_size(jobs: Sequence[ModelJob], chunk_size: int) -> int:
    """Places per slice: one inference batch (the largest of the run's models), so inference
    starts as soon as one batch is fetched; more fetch threads fetch more slices at once."""
    return max(1, min(chunk_size, max(j.embedder().batch_size for j in jobs)))


def run_threads(
    tasks: Iterable[ChunkTask], jobs: list[ModelJob], provider: Provider, temporal: TemporalSpec,
    prep: InputPrep | None, policy: RetryPolicy, workers: int, chunk_size: int,
    handle: Callable[[ChunkTask, list[ItemResult]], None], should_stop: Callable[[], bool] | None,
    tuner: TorchThreadTuner | None = None, streams: int = 1,
) -> bool:
    """Fetch ahead of inference (slice by slice, `workers` places at once), infer `streams`
    slices at once, and write chunk k−1 while chunk k is inferred; `tuner` sets torch's thread
    count (in each inference thread) slice by slice from the rates it measures."""
    broken: dict[str, str] = {}
    size = slice_size(jobs, chunk_size)

    def infer_slice(t: ChunkTask, f: Fetched) -> list[ItemResult]:
        if tuner is None:
            return infer_chunk(t, f, jobs, prep, policy, broken)
        import torch

        n = tuner.pick()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        t0 = time.perf_counter()
        out = infer_chunk(t, f, jobs, prep, policy, broken)
        tuner.record(n, len(t.places), time.perf_counter() - t0)
        return out

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoembed-fetch") as fetch_pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="eoembed-write") as write_pool:
        writing: Future | None = None
        stream = stream_chunks(
            tasks,
            lambda t: fetch_chunk(t, jobs, provider, temporal, policy, fetch_pool),
            infer_slice,
            size, ahead=-(-chunk_size // size) + 1, streams=streams, fetchers=-(-workers // size) + 1,
            prepare=lambda t: prepare_chunk(t, jobs, provider, temporal),
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
