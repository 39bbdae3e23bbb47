"""The thread budget of a run: how many threads fetch, write and run the forward pass.

The cores counted are those this process may actually use: its CPU affinity
(``os.sched_getaffinity``, which ``taskset`` and container cpusets narrow) and, when lower, its
cgroup CPU quota (``cpu.max`` of cgroup v2 or ``cpu.cfs_quota_us`` of v1, as Docker
``--cpus`` and Kubernetes limits set it). The budget on C such cores:

* **torch** — ``C − 1`` or ``C`` intra-op threads, chosen while the run goes by
  :class:`TorchThreadTuner` from the forward rate each achieves (``C − 1`` leaves a core to
  fetching, writing and the provider; ``C`` is faster on an idle machine for models that scale). Torch's own default (all cores) makes its threads meet at
  a barrier after every operation; when another thread or process holds one of those cores, the
  barrier waits for it, and throughput collapses (an RCF export fell from ~400 to ~40 places/s
  on 2 cores when another process was busy; with one torch thread it stayed at ~400/s).
* **fetch** — places fetched at once: the provider's choice (:attr:`Provider.fetch_concurrency`):
  a few for local files, where fetching is CPU work (decoding), many for remote sources, where
  threads mostly wait on the network (concurrency chosen for I/O, not for cores).
* **write** — one thread: files of a chunk are written while the next chunk is inferred.

``workers=`` and ``torch_threads=`` of :func:`~eoembed.pipeline.run_export` override the choice.
"""

from __future__ import annotations

import contextlib
import math
import os
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
    """Threads of one run: forward pass (torch intra-op), concurrent fetches, writers."""

    cores: int
    torch: int
    fetch: int
    write: int = 1
    torch_max: int = 0  # > torch: the tuner may use up to this many when they prove faster

    def to_dict(self) -> dict[str, int]:
        return {"cores": self.cores, "torch": self.torch, "torch_max": max(self.torch, self.torch_max),
                "fetch": self.fetch, "write": self.write}

    def tuner(self) -> TorchThreadTuner:
        """The run's torch thread chooser (one candidate when the count was given)."""
        return TorchThreadTuner([self.torch, max(self.torch, self.torch_max)])


def plan_threads(provider: Provider, workers: int | None = None, torch_threads: int | None = None,
                 cores: int | None = None) -> ThreadBudget:
    """The budget for a run on `provider` (see the module doc); explicit values win."""
    cores = available_cores() if cores is None else max(1, cores)
    torch = torch_threads if torch_threads is not None else max(1, cores - 1)
    fetch = workers if workers is not None else max(1, int(provider.fetch_concurrency))
    return ThreadBudget(cores=cores, torch=torch, fetch=fetch, torch_max=torch if torch_threads else cores)


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

    Each candidate (e.g. C − 1 and C threads) is tried on the first slices in turn, then the
    faster (median of its last three slices) is kept; every `probe_every` slices the other is
    tried once more, since other processes come and go. On an idle machine this finds the more
    threads faster where the model scales; when another process holds a core, the barrier waits
    make more threads slower and it falls back.
    """

    def __init__(self, candidates: Sequence[int], probe_every: int = 16, warmup: int = 1) -> None:
        self.candidates = sorted({max(1, c) for c in candidates})
        self.probe_every = max(2, probe_every)
        self._warmup = warmup  # slices not timed (model load, first-call allocations)
        self._rates: dict[int, list[float]] = {c: [] for c in self.candidates}
        self._calls = 0

    def pick(self) -> int:
        """The thread count for the next slice."""
        self._calls += 1
        if self._warmup > 0 or len(self.candidates) == 1:
            return self.best()
        untried = [c for c in self.candidates if len(self._rates[c]) < 2]
        if untried:
            return min(untried, key=lambda c: len(self._rates[c]))
        if self._calls % self.probe_every == 0:
            return next(c for c in self.candidates if c != self.best())
        return self.best()

    def best(self) -> int:
        """The candidate with the highest recent rate (the fewest threads until measured)."""
        timed = {c: sorted(r[-3:])[len(r[-3:]) // 2] for c, r in self._rates.items() if r}
        return max(timed, key=lambda c: timed[c]) if len(timed) == len(self.candidates) else self.candidates[0]

    def record(self, threads: int, places: int, seconds: float) -> None:
        """What the slice just inferred with `threads` achieved."""
        if self._warmup > 0:
            self._warmup -= 1
            return
        if threads in self._rates and seconds > 0 and places > 0:
            self._rates[threads] = (self._rates[threads] + [places / seconds])[-3:]
