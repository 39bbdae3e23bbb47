"""The thread executor: fetch runs ahead of inference slice by slice, a writer thread behind."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ..providers import Provider
from ..specs import InputPrep, TemporalSpec
from .budget import TorchThreadTuner
from .fetch import Fetched, fetch_chunk
from .inference import ItemResult, infer_chunk
from .plan import ChunkTask, ModelJob, split_task
from .retry import RetryPolicy


def stream_chunks(
    tasks: Iterable[ChunkTask],
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


def slice_size(jobs: Sequence[ModelJob], chunk_size: int, workers: int) -> int:
    """Places per slice: a whole inference batch, and enough fetches to keep every fetch thread busy."""
    sizes = [j.embedder().batch_size for j in jobs]
    return max(1, min(chunk_size, max(*sizes, 2 * workers)))


def run_threads(
    tasks: Iterable[ChunkTask], jobs: list[ModelJob], provider: Provider, temporal: TemporalSpec,
    prep: InputPrep | None, policy: RetryPolicy, workers: int, chunk_size: int,
    handle: Callable[[ChunkTask, list[ItemResult]], None], should_stop: Callable[[], bool] | None,
    tuner: TorchThreadTuner | None = None,
) -> bool:
    """Fetch ahead of inference (slice by slice) and write chunk k−1 while chunk k is inferred;
    `tuner` sets torch's thread count slice by slice from the rates it measures."""
    broken: dict[str, str] = {}
    size = slice_size(jobs, chunk_size, workers)

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
