"""Batch export: outputs equal the direct API, faults are isolated and retried, reruns resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import eoembed
import numpy as np
import pytest
from eoembed.embedders.rcf import RCFEmbedder
from eoembed.errors import ModelError, ProviderError
from eoembed.export import load_export, read_manifest
from eoembed.pipeline import PARTS_DIR, RetryPolicy
from eoembed.providers.base import Provider
from eoembed.providers.local import LocalProvider
from eoembed.specs import OutputSpec
from export_helpers import far_place, places, write_tiles

RCF16 = ("rcf", {"features": 16})
FAST = {"backoff": 0.01}


@pytest.fixture(scope="module")
def imagery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiles(tmp_path_factory.mktemp("img") / "tiles")[0].parent


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float32 rounding (batches of different composition differ in the last ulps)."""
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def test_export_matches_direct_api_and_rerun_skips_everything(imagery: Path, tmp_path: Path) -> None:
    pl = places(23)
    calls: list[tuple[int, int]] = []
    summary = eoembed.export_batch(
        pl, None, [RCF16], tmp_path / "out", outputs="both", source=str(imagery), chunk_size=5,
        progress=lambda done, total, info: calls.append((done, total)), **FAST,
    )
    assert (summary.ok, summary.failed, summary.skipped, summary.total) == (46, 0, 0, 46)
    assert calls[-1] == (46, 46) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    # independently: the plain batch API on the same places gives the same vectors and grids
    direct = eoembed.get_embeddings_batch("rcf", list(pl.values()), source=str(imagery), model_config={"features": 16})
    res = load_export(tmp_path / "out")["models"]["rcf"]
    assert res["pooled"]["ids"] == list(pl)  # input order, ids with '/' and spaces kept as data
    _close(res["pooled"]["vectors"], np.stack([e.to_numpy() for e in direct]))
    grids = eoembed.get_embeddings_batch("rcf", list(pl.values()), source=str(imagery), output=OutputSpec.grid(),
                                         model_config={"features": 16})
    assert list(res["grids"]) == list(pl)
    for g, e in zip(res["grids"].values(), grids):
        _close(g.to_numpy(), e.to_numpy())
        assert g.transform == e.transform and g.crs == e.crs
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["status"] == "finished" and run["summary"]["ok"] == 46

    lines_before = len(_manifest_lines(tmp_path / "out"))
    again = eoembed.export_batch(pl, None, [RCF16], tmp_path / "out", outputs="both", source=str(imagery),
                                 chunk_size=5)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 46)
    assert len(_manifest_lines(tmp_path / "out")) == lines_before  # nothing recomputed


class FlakyProvider(Provider):
    """Local imagery that fails the first `transient` fetches of some places (then works)."""

    name = "flaky"

    def __init__(self, inner: LocalProvider, flaky_x: set[float], transient: int) -> None:
        self.inner, self.flaky_x, self.transient = inner, flaky_x, transient
        self.calls: Counter[float] = Counter()

    def lattices(self, spatial, sensor, temporal=None):  # noqa: ANN001, ANN201
        return self.inner.lattices(spatial, sensor, temporal)

    def fetch(self, request):  # noqa: ANN001, ANN201
        x = request.spatial.x
        self.calls[x] += 1
        if x in self.flaky_x and self.calls[x] <= self.transient:
            raise ProviderError(f"injected failure #{self.calls[x]}")
        return self.inner.fetch(request)

    def describe(self) -> dict:
        return {"provider": "flaky", "inner": self.inner.describe()}


def test_injected_provider_failures_are_retried_isolated_and_resumed(imagery: Path, tmp_path: Path) -> None:
    pl = places(8)
    pl["nowhere"] = far_place()
    flaky = [pl["p001"].x, pl["p005"].x]
    prov = FlakyProvider(LocalProvider(imagery), set(flaky), transient=2)
    s = eoembed.export_batch(pl, None, [RCF16], tmp_path / "o", source=prov, chunk_size=4, retries=2, **FAST)
    assert (s.ok, s.failed) == (8, 1)
    rec = {r["id"]: r for r in read_manifest(tmp_path / "o")}
    assert rec["p001"]["status"] == "ok" and rec["p001"]["attempts"]["fetch"] == 3  # 2 failures, then success
    assert rec["p000"]["attempts"]["fetch"] == 1
    bad = rec["nowhere"]
    assert bad["status"] == "failed" and bad["stage"] == "fetch" and bad["attempts"]["fetch"] == 3
    assert "no local imagery covers" in bad["error"]

    # fewer retries than transient failures: the item fails, and a rerun retries only what failed
    prov2 = FlakyProvider(LocalProvider(imagery), {pl["p002"].x}, transient=2)
    s2 = eoembed.export_batch(pl, None, [RCF16], tmp_path / "o2", source=prov2, retries=0, **FAST)
    assert (s2.ok, s2.failed) == (7, 2)
    s3 = eoembed.export_batch(pl, None, [RCF16], tmp_path / "o2", source=prov2, retries=0, **FAST)
    assert (s3.ok, s3.failed, s3.skipped) == (0, 2, 7)  # p002's 2nd transient failure
    s4 = eoembed.export_batch(pl, None, [RCF16], tmp_path / "o2", source=prov2, retries=0, **FAST)
    assert (s4.ok, s4.failed, s4.skipped) == (1, 1, 7)
    assert prov2.calls[pl["p000"].x] == 1  # done items are never fetched again
    ref = load_export(tmp_path / "o" / "rcf" / "pooled.parquet")
    got = load_export(tmp_path / "o2" / "rcf" / "pooled.parquet")
    assert got["ids"] == ref["ids"] == [k for k in pl if k != "nowhere"]
    _close(got["vectors"], ref["vectors"])  # batches differ: float ulps

    with pytest.raises(ProviderError, match="nowhere"):
        eoembed.export_batch(pl, None, [RCF16], tmp_path / "o3", source=str(imagery), continue_on_error=False, **FAST)


class BrokenModel(RCFEmbedder):
    """An RCF that fails on every batch containing a place at x = `bad_x` (or on all)."""

    def __init__(self, model_id: str, bad_x: float | None = None) -> None:
        super().__init__(model_id, features=16, seed=3)
        self.bad_x = bad_x
        self.batches: list[int] = []

    def embed_batch(self, observations, output):  # noqa: ANN001, ANN201
        self.batches.append(len(observations))
        if self.bad_x is None or any(abs(o.grid.transform.c - self.bad_x) < 1e-6 for o in observations):
            raise RuntimeError("injected model failure")
        return super().embed_batch(observations, output)


def test_failing_model_among_good_ones(imagery: Path, tmp_path: Path) -> None:
    pl = places(10)
    target = pl["p004"]
    left_edge = target.x - target.buffer_m
    good, broken, partly = RCFEmbedder("rcf", features=16), BrokenModel("rcf-broken"), BrokenModel("rcf-partly", left_edge)
    s = eoembed.export_batch(pl, None, [good, broken, partly], tmp_path / "o", source=str(imagery),
                             chunk_size=10, retries=1, **FAST)
    assert (s.ok, s.failed) == (10 + 9, 10 + 1)
    rec = read_manifest(tmp_path / "o")
    by = {(r["model"], r["id"]): r for r in rec}
    assert all(by[("rcf", k)]["status"] == "ok" for k in pl)
    assert all(by[("rcf-broken", k)]["stage"] == "infer" and by[("rcf-broken", k)]["attempts"]["infer"] == 2 for k in pl)
    assert "injected model failure" in by[("rcf-broken", "p000")]["error"]
    assert [k for k in pl if by[("rcf-partly", k)]["status"] != "ok"] == ["p004"]
    assert partly.batches[0] == 10  # batched first, then isolated one by one
    res = load_export(tmp_path / "o")["models"]
    assert "rcf-broken" not in res and len(res["rcf-partly"]["pooled"]["ids"]) == 9
    with pytest.raises(ModelError, match="injected model failure"):
        eoembed.export_batch(pl, None, [broken], tmp_path / "o2", source=str(imagery), retries=0,
                             continue_on_error=False)


def test_corrupted_partial_files_from_an_earlier_crash_are_repaired(imagery: Path, tmp_path: Path) -> None:
    pl = places(12)
    out = tmp_path / "o"
    kw = dict(outputs="both", source=str(imagery), chunk_size=4, **FAST)
    eoembed.export_batch(pl, None, [RCF16], out, **kw)
    ref = load_export(out)["models"]["rcf"]
    model = out / "rcf"
    # what a crash can leave: temp files of atomic writes, a cut manifest line; plus a broken part
    # file and a deleted grid (e.g. by the user)
    (model / ".pooled.parquet.1234abcd.part").write_bytes(b"PAR1 half a file")
    (model / "grids" / ".p001.tif.deadbeef.part").write_bytes(b"II*\x00")
    parts = sorted((model / PARTS_DIR).glob("*.parquet"))
    parts[1].write_bytes(parts[1].read_bytes()[:100])
    (model / "grids" / "p002.tif").unlink()
    with open(out / "manifest.jsonl", "ab") as fh:
        fh.write(b'{"fp": "abc", "status": "o')
    s = eoembed.export_batch(pl, None, [RCF16], out, **kw)
    assert s.ok == 4 + 1 and s.failed == 0  # the 4 rows of the broken part and the deleted grid
    assert not list(out.rglob("*.part"))
    assert (model / PARTS_DIR / (parts[1].name + ".corrupt")).exists()
    got = load_export(out)["models"]["rcf"]
    assert got["pooled"]["ids"] == ref["pooled"]["ids"]
    _close(got["pooled"]["vectors"], ref["pooled"]["vectors"])
    for k, g in ref["grids"].items():
        _close(got["grids"][k].to_numpy(), g.to_numpy())
    assert len(read_manifest(out)) == 24  # the garbled line was skipped, the file still parses


def test_write_failures_are_retried_then_recorded_and_redone_on_rerun(imagery: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import eoembed.pipeline as pipeline

    real = pipeline.write_geotiff
    fails = {"p001": 1, "p002": 99}  # p001: one transient failure; p002: the disk keeps failing

    def flaky_write(emb, path):  # noqa: ANN001, ANN202
        pid = emb.meta["id"]
        if fails.get(pid, 0) > 0:
            fails[pid] -= 1
            raise OSError(f"injected write failure for {pid}")
        return real(emb, path)

    monkeypatch.setattr(pipeline, "write_geotiff", flaky_write)
    pl = places(4)
    s = eoembed.export_batch(pl, None, [RCF16], tmp_path / "o", outputs="grid", source=str(imagery), retries=2, **FAST)
    assert (s.ok, s.failed) == (3, 1)
    rec = {r["id"]: r for r in read_manifest(tmp_path / "o")}
    assert rec["p001"]["status"] == "ok" and rec["p001"]["attempts"]["write"] == 2
    assert rec["p002"]["stage"] == "write" and rec["p002"]["attempts"]["write"] == 3
    assert "injected write failure" in rec["p002"]["error"]
    assert not (tmp_path / "o" / "rcf" / "grids" / "p002.tif").exists()
    fails["p002"] = 0
    s2 = eoembed.export_batch(pl, None, [RCF16], tmp_path / "o", outputs="grid", source=str(imagery), **FAST)
    assert (s2.ok, s2.failed, s2.skipped) == (1, 0, 3)
    assert list(load_export(tmp_path / "o" / "rcf" / "grids.nc")) == list(pl)


def test_retry_policy_backoff_grows_with_jitter_and_is_bounded() -> None:
    p = RetryPolicy(retries=3, backoff=0.1, max_wait=0.5)
    waits = [[p.wait(k) for k in range(4)] for _ in range(200)]
    for k in range(3):
        vals = [w[k] for w in waits]
        assert 0.05 * 2**k - 1e-9 <= min(vals) and max(vals) <= min(0.5, 0.15 * 2**k) + 1e-9
        assert len(set(vals)) > 100  # jittered
    assert max(w[3] for w in waits) <= 0.5
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("try again")
        return "ok"

    assert RetryPolicy(retries=2, backoff=0.001).call(flaky) == ("ok", 3)
    with pytest.raises(eoembed.SpecError):
        RetryPolicy(retries=5, backoff=0.001).call(lambda: (_ for _ in ()).throw(eoembed.SpecError("bad")))


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import eoembed
    from eoembed.embedders.rcf import RCFEmbedder
    sys.path.insert(0, sys.argv[3])
    from export_helpers import places

    class SlowRCF(RCFEmbedder):
        def embed_batch(self, observations, output):
            time.sleep(0.15)
            return super().embed_batch(observations, output)

    model = SlowRCF("rcf", features=16)
    eoembed.export_batch(places(60), None, [model], sys.argv[2], outputs="both", source=sys.argv[1],
                         chunk_size=4, backoff=0.01)
""")


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_result(imagery: Path, tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    out = tmp_path / "killed"
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(imagery), str(out), here], env=env)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            m = out / "manifest.jsonl"
            if m.exists() and m.read_text().count("\n") >= 40:  # some chunks of both outputs done
                break
            if proc.poll() is not None:
                pytest.fail("the export finished before it could be killed")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = _manifest_lines(out)
    assert 0 < len(first) < 120 and not (out / "rcf" / "pooled.parquet").exists()

    rerun = subprocess.run([sys.executable, str(script), str(imagery), str(out), here], env=env, timeout=120)
    assert rerun.returncode == 0
    lines = _manifest_lines(out)
    ok_per_fp = Counter(r["fp"] for r in lines if r["status"] == "ok")
    assert len(ok_per_fp) == 120 and set(ok_per_fp.values()) == {1}  # nothing done was recomputed
    assert {r["fp"] for r in first} <= set(ok_per_fp)

    ref_out = tmp_path / "uninterrupted"
    eoembed.export_batch(places(60), None, [RCF16], ref_out, outputs="both", source=str(imagery), chunk_size=4)
    got, ref = load_export(out)["models"]["rcf"], load_export(ref_out)["models"]["rcf"]
    assert got["pooled"]["ids"] == ref["pooled"]["ids"]
    _close(got["pooled"]["vectors"], ref["pooled"]["vectors"])
    assert list(got["grids"]) == list(ref["grids"])
    for k in ref["grids"]:
        _close(got["grids"][k].to_numpy(), ref["grids"][k].to_numpy())
        assert got["grids"][k].transform == ref["grids"][k].transform


def _write_points(path: Path, pl: dict) -> Path:
    feats = [{"type": "Feature", "properties": {"name": k}, "geometry": {"type": "Point", "coordinates": [p.x, p.y]}}
             for k, p in pl.items()]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats,
                                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}}))
    return path


def test_cli_export_writes_outputs_and_reports_bad_input(imagery: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from eoembed.cli import main

    pl = places(6)
    src = _write_points(tmp_path / "pts.geojson", pl)
    args = ["export", "--input", str(src), "--id-field", "name", "--imagery", str(imagery), "--models", "rcf",
            "--buffer", "40", "--out", str(tmp_path / "o"), "--chunk-size", "4", "--output", "both", "-q"]
    assert main(args) == 0
    assert "12 done, 0 failed, 0 skipped" in capsys.readouterr().out
    res = load_export(tmp_path / "o")["models"]["rcf"]
    assert res["pooled"]["ids"] == list(pl) and len(res["grids"]) == 6
    assert main(args) == 0
    assert "0 done, 0 failed, 12 skipped" in capsys.readouterr().out
    assert main([*args[:-7], "--out", str(tmp_path / "o2"), "--chunk-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--chunk-size must be at least 1" in err and "Traceback" not in err
    assert main([*args[:7], "--models", "nope", *args[9:]]) == 2
    assert "unknown model" in capsys.readouterr().err
