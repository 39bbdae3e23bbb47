"""The thread budget of a run: how many threads fetch, write and run the forward pass.

The cores counted are those this process may actually use: its CPU affinity
(``os.sched_getaffinity``, which ``taskset`` and container cpusets narrow) and, when lower, its
cgroup CPU quota (``cpu.max`` of cgroup v2 or ``cpu.cfs_quota_us`` of v1, as Docker
``--cpus`` and Kubernetes limits set it). The budget on C such cores:

* **torch** — ``C − 1`` intra-op threads (at least 1): one core is left to fetching (decoding
  pixels), writing and the provider. Torch's own default (all cores) makes its threads meet at
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
from collections.abc import Iterator
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

    def to_dict(self) -> dict[str, int]:
        return {"cores": self.cores, "torch": self.torch, "fetch": self.fetch, "write": self.write}


def plan_threads(provider: Provider, workers: int | None = None, torch_threads: int | None = None,
                 cores: int | None = None) -> ThreadBudget:
    """The budget for a run on `provider` (see the module doc); explicit values win."""
    cores = available_cores() if cores is None else max(1, cores)
    torch = torch_threads if torch_threads is not None else max(1, cores - 1)
    fetch = workers if workers is not None else max(1, int(provider.fetch_concurrency))
    return ThreadBudget(cores=cores, torch=torch, fetch=fetch)


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
