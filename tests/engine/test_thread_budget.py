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


def test_two_inference_streams_share_the_cores_and_fetching_follows_the_provider() -> None:
    class Local(_Remote):
        fetch_concurrency = 4

    assert plan_threads(Local(), cores=2).to_dict() == {"cores": 2, "streams": 2, "torch": 1, "torch_max": 1,
                                                        "fetch": 4, "write": 1}
    assert plan_threads(_Remote(), cores=8).to_dict() == {"cores": 8, "streams": 2, "torch": 3, "torch_max": 4,
                                                          "fetch": 24, "write": 1}
    one = plan_threads(_Remote(), cores=1)
    assert (one.streams, one.torch) == (1, 1)
    gpu = plan_threads(_Remote(), cores=8, accelerator=True)  # the forward pass is on a GPU: one stream
    assert (gpu.streams, gpu.torch, gpu.to_dict()["torch_max"]) == (1, 7, 8)
    b = plan_threads(_Remote(), workers=3, torch_threads=5, cores=8)
    assert (b.fetch, b.torch, b.to_dict()["torch_max"], b.streams) == (3, 5, 5, 1)
    assert b.tuner().candidates == [5]
    assert plan_threads(_Remote(), torch_threads=2, cores=8).streams == 2  # what fits, at most two


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
    assert first[0] == 1 and sorted(first[1:3]) == [1, 2]  # warm-up, then each tried (2× apart: once)
    assert run(12).count(2) >= 9  # the faster kept, the other probed now and then
    speed[2] = 4.0  # another process now holds a core: two threads wait at every barrier
    assert run(12)[-4:].count(1) >= 3  # back to one thread after a probe or two


def test_the_tuner_tries_close_candidates_twice_and_backs_off_losing_probes() -> None:
    tuner = TorchThreadTuner([1, 2], probe_every=4, warmup=0, max_backoff=4)
    speed = {1: 10.0, 2: 11.0}  # within 25 %: one slice each is not enough to decide
    used = []
    for _ in range(4):
        k = tuner.pick()
        used.append(k)
        tuner.record(k, 8, 8 / speed[k])
    assert sorted(used) == [1, 1, 2, 2]
    speed[2] = 2.0  # two threads now 5× slower (a loaded machine): probes of 2 keep losing
    used = []
    for _ in range(80):
        k = tuner.pick()
        used.append(k)
        tuner.record(k, 8, 8 / speed[k])
    probes = [i for i, k in enumerate(used) if k == 2][2:]  # after the switch back to 1 thread
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps[:3] == [8, 16, 16]  # the wait doubles after each lost probe, up to 4 × 4
    speed[2] = 40.0  # the machine is free again: the next probe wins and probing resumes often
    used = []
    for _ in range(40):
        k = tuner.pick()
        tuner.record(k, 8, 8 / speed[k])
        used.append(k)
    assert used[-8:].count(2) >= 7


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
    assert info["threads"]["streams"] == min(2, available_cores())
    with pytest.raises(eoembed.errors.SpecError, match="torch_threads"):
        eoembed.export_batch(places(1), None, ["rcf"], tmp_path / "p", source=str(folder), torch_threads=0)
