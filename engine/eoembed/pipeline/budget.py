"""The thread budget of a run: how many threads fetch, write and run the forward pass.

The cores counted are those this process may actually use: its CPU affinity
(``os.sched_getaffinity``, which ``taskset`` and container cpusets narrow) and, when lower, its
cgroup CPU quota (``cpu.max`` of cgroup v2 or ``cpu.cfs_quota_us`` of v1, as Docker
``--cpus`` and Kubernetes limits set it). The budget on C such cores:

* **inference streams and torch threads** — on CPU, two inference streams (slices inferred at
  once by two threads) of ``C // 2`` torch intra-op threads each (one stream when C = 1 or the
  model runs on a GPU). Small networks use a core far better alone than split across two
  (measured on 2 cores: Galileo nano 63/s with one thread, 103–108/s with two, 132/s as two
  one-thread streams; RCF 50–60, 76–95, 98–108/s). Within a stream, :class:`TorchThreadTuner`
  picks ``C/2 − 1`` or ``C/2`` threads from the rate each achieves. Torch's own default (all
  cores in one stream) makes its threads meet at a barrier after every operation; when another
  thread or process holds one of those cores, the barrier waits for it and throughput collapses
  (an RCF export fell from ~400 to ~40 places/s on 2 cores when another process was busy).
* **fetch** — places fetched at once: the provider's choice (:attr:`Provider.fetch_concurrency`):
  a few for local files, where fetching is CPU work (decoding), many for remote sources, where
  threads mostly wait on the network (concurrency chosen for I/O, not for cores).
* **write** — one thread: files of a chunk are written while the next chunk is inferred.

``workers=`` and ``torch_threads=`` of :func:`~eoembed.pipeline.run_export` override the choice
(a given torch count per stream sets the streams to what fits in the cores, at most two).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..providers.base import Provider

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """Cores allowed by this process's cgroup CPU quota, or None when there is no quota."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process can use: its CPU affinity, capped by its cgroup quota (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


@dataclass(frozen=True)
class ThreadBudget:
    """Threads of one run: inference streams and torch intra-op threads in each, concurrent
    fetches, writers."""

    cores: int
    torch: int
    fetch: int
    write: int = 1
    torch_max: int = 0  # > torch: the tuner may use up to this many when they prove faster
    streams: int = 1

    def to_dict(self) -> dict[str, int]:
        return {"cores": self.cores, "streams": self.streams, "torch": self.torch,
                "torch_max": max(self.torch, self.torch_max), "fetch": self.fetch, "write": self.write}

    def tuner(self) -> TorchThreadTuner:
        """The run's torch thread chooser (one candidate when the count was given)."""
        return TorchThreadTuner([self.torch, max(self.torch, self.torch_max)])


def plan_threads(provider: Provider, workers: int | None = None, torch_threads: int | None = None,
                 cores: int | None = None, accelerator: bool = False) -> ThreadBudget:
    """The budget for a run on `provider` (see the module doc); explicit values win.
    `accelerator`: the forward pass runs on a GPU (one stream; CPU threads only prepare inputs)."""
    cores = available_cores() if cores is None else max(1, cores)
    fetch = workers if workers is not None else max(1, int(provider.fetch_concurrency))
    if torch_threads is not None:
        streams = 1 if accelerator else max(1, min(2, cores // torch_threads))
        return ThreadBudget(cores=cores, torch=torch_threads, fetch=fetch, torch_max=torch_threads, streams=streams)
    streams = 1 if accelerator else min(2, cores)
    per = max(1, cores // streams)
    return ThreadBudget(cores=cores, torch=max(1, per - 1), fetch=fetch, torch_max=per, streams=streams)


@contextlib.contextmanager
def using_torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads (in this thread), then restore the setting."""
    import torch

    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchThreadTuner:
    """Chooses torch's thread count while a run goes, from the forward rate it measures.

    Each candidate (e.g. C − 1 and C threads) is tried on the first slices in turn (a second
    time only when the first rates are within `close` of each other), then the faster (median of
    its last three slices) is kept; the other is tried again after `probe_every` slices, since
    other processes come and go. A probe that loses doubles the wait before the next one (up to
    `max_backoff` times `probe_every`): on a loaded machine a C-thread slice can be 5× slower,
    and probing it every 16 slices cost a third of the run (measured, Galileo nano, load 4).
    """

    def __init__(self, candidates: Sequence[int], probe_every: int = 16, warmup: int = 1,
                 close: float = 0.25, max_backoff: int = 16) -> None:
        self.candidates = sorted({max(1, c) for c in candidates})
        self.probe_every = max(2, probe_every)
        self.close = close
        self.max_backoff = max(1, max_backoff)
        self._warmup = warmup  # slices not timed (model load, first-call allocations)
        self._rates: dict[int, list[float]] = {c: [] for c in self.candidates}
        self._wait = self.probe_every  # slices until the next probe
        self._since = 0
        self._probing: int | None = None
        self._lock = threading.Lock()  # several inference streams pick and record at once

    def _needs_trial(self) -> list[int]:
        if any(not r for r in self._rates.values()):
            return [c for c, r in self._rates.items() if not r]
        firsts = [r[0] for r in self._rates.values()]
        if min(firsts) >= (1.0 - self.close) * max(firsts):  # too close to call on one slice each
            return [c for c, r in self._rates.items() if len(r) < 2]
        return []

    def pick(self) -> int:
        """The thread count for the next slice."""
        with self._lock:
            return self._pick()

    def _pick(self) -> int:
        if self._warmup > 0 or len(self.candidates) == 1:
            return self.best()
        untried = self._needs_trial()
        if untried:
            return min(untried, key=lambda c: len(self._rates[c]))
        self._since += 1
        if self._since >= self._wait:
            self._since = 0
            self._probing = next(c for c in self.candidates if c != self.best())
            return self._probing
        return self.best()

    def best(self) -> int:
        """The candidate with the highest recent rate (the fewest threads until measured)."""
        timed = {c: sorted(r[-3:])[len(r[-3:]) // 2] for c, r in self._rates.items() if r}
        return max(timed, key=lambda c: timed[c]) if len(timed) == len(self.candidates) else self.candidates[0]

    def record(self, threads: int, places: int, seconds: float) -> None:
        """What the slice just inferred with `threads` achieved."""
        with self._lock:
            self._record(threads, places, seconds)

    def _record(self, threads: int, places: int, seconds: float) -> None:
        if self._warmup > 0:
            self._warmup -= 1
            return
        if threads not in self._rates or seconds <= 0 or places <= 0:
            return
        rate = places / seconds
        if self._probing is not None and threads == self._probing:  # won: probe again soon
            kept = [sorted(r)[len(r) // 2] for c, r in self._rates.items() if c != threads and r]
            won = not kept or rate >= max(kept)
            self._wait = self.probe_every if won else min(self._wait * 2, self.probe_every * self.max_backoff)
            self._probing = None
        self._rates[threads] = (self._rates[threads] + [rate])[-3:]
