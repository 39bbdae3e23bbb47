"""The thread budget: cores from affinity and cgroup quota, torch threads leave one core, the
fetch concurrency follows the provider, and a run sets and restores torch's thread count."""

from __future__ import annotations

import json
import os

import eoembed
import pytest
import torch
from eoembed.embedders.rcf import RCFEmbedder
from eoembed.pipeline.budget import (
    TorchThreadTuner,
    available_cores,
    cgroup_cpu_limit,
    plan_threads,
)
from eoembed.providers.base import Provider
from export_helpers import places, write_tiles


@pytest.mark.parametrize(
    ("files", "cores"),
    [({"cpu.max": "150000 100000\n"}, 1.5), ({"cpu.max": "max 100000\n"}, None),
     ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
     ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None), ({}, None)],
)
def test_cgroup_quota_v1_and_v2(tmp_path, files, cores) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == cores


def test_cores_are_those_of_the_affinity_mask(monkeypatch) -> None:
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr("eoembed.pipeline.budget.cgroup_cpu_limit", lambda: 2.5)
    assert available_cores() == 2  # a quota of 2.5 cores: two whole cores for threads


class _Remote(Provider):
    fetch_concurrency = 24

    def fetch(self, request):  # noqa: ANN001, ANN201
        raise NotImplementedError


def test_torch_leaves_a_core_and_fetching_follows_the_provider() -> None:
    class Local(_Remote):
        fetch_concurrency = 4

    assert plan_threads(Local(), cores=2).to_dict() == {"cores": 2, "torch": 1, "torch_max": 2, "fetch": 4, "write": 1}
    assert plan_threads(_Remote(), cores=8).to_dict() == {"cores": 8, "torch": 7, "torch_max": 8, "fetch": 24,
                                                          "write": 1}
    assert plan_threads(_Remote(), cores=1).torch == 1
    b = plan_threads(_Remote(), workers=3, torch_threads=5, cores=8)
    assert (b.fetch, b.torch, b.to_dict()["torch_max"]) == (3, 5, 5)
    assert b.tuner().candidates == [5]


def test_the_tuner_keeps_the_faster_thread_count_and_probes_again() -> None:
    tuner = TorchThreadTuner([1, 2], probe_every=4, warmup=1)
    speed = {1: 10.0, 2: 20.0}  # places/s; 2 threads faster (an idle machine)

    def run(n: int) -> list[int]:
        used = []
        for _ in range(n):
            k = tuner.pick()
            used.append(k)
            tuner.record(k, 8, 8 / speed[k])
        return used

    first = run(6)
    assert first[0] == 1 and sorted(first[1:5]) == [1, 1, 2, 2]  # warm-up, then each tried twice
    assert run(12).count(2) >= 9  # the faster kept, the other probed now and then
    speed[2] = 4.0  # another process now holds a core: two threads wait at every barrier
    assert run(12)[-4:].count(1) >= 3  # back to one thread after a probe or two


def test_a_run_uses_its_torch_threads_and_restores_them(tmp_path) -> None:
    folder = write_tiles(tmp_path / "img" / "tiles")[0].parent
    before = torch.get_num_threads()
    seen: list[int] = []

    class Spy(RCFEmbedder):
        def embed(self, observations, output, prep=None):  # noqa: ANN001, ANN201
            seen.append(torch.get_num_threads())
            return super().embed(observations, output, prep)

    torch.set_num_threads(2)
    try:
        s = eoembed.export_batch(places(3), None, [Spy(features=16)], tmp_path / "o", source=str(folder),
                                 torch_threads=1, workers=2)
        assert s.ok == 3 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["threads"]["torch"] == 1 and info["threads"]["fetch"] == 2
    with pytest.raises(eoembed.errors.SpecError, match="torch_threads"):
        eoembed.export_batch(places(1), None, ["rcf"], tmp_path / "p", source=str(folder), torch_threads=0)
