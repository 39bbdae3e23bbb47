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

The modules follow the data: :mod:`.plan` (places, models, items, chunks), :mod:`.fetch`,
:mod:`.inference`, :mod:`.writing`, :mod:`.resume`, :mod:`.consolidate` (the final merge),
:mod:`.thread_executor` and :mod:`.dask_executor`, :mod:`.retry`; :mod:`.run` ties them together.
"""

from ..export.geotiff import write_geotiff  # noqa: F401  (looked up here by the writer; tests patch it)
from ..export.layout import PARTS_DIR
from .consolidate import STACK_MAX_BYTES, consolidate_grids, consolidate_pooled
from .dask_executor import run_chunk_on_worker
from .fetch import Fetched, fetch_chunk
from .inference import ItemResult, infer, infer_chunk
from .plan import (
    ChunkTask,
    Item,
    ModelJob,
    as_outputs,
    as_places,
    fingerprint,
    plan_models,
    split_task,
)
from .resume import clean_partial_files, done_fingerprints
from .retry import PERMANENT, RetryPolicy
from .run import ExportSummary, ProgressFn, run_export
from .thread_executor import stream_chunks
from .writing import Writer

__all__ = [
    "PARTS_DIR", "PERMANENT", "STACK_MAX_BYTES", "ChunkTask", "ExportSummary", "Fetched", "Item",
    "ItemResult", "ModelJob", "ProgressFn", "RetryPolicy", "Writer", "as_outputs", "as_places",
    "clean_partial_files", "consolidate_grids", "consolidate_pooled", "done_fingerprints",
    "fetch_chunk", "fingerprint", "infer", "infer_chunk", "plan_models", "run_chunk_on_worker",
    "run_export", "split_task", "stream_chunks",
]
