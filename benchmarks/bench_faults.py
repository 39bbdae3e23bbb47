"""Fault-injection benchmark: how many places a batch export embeds from a flaky STAC server.

The loopback STAC server (``tests/engine/servers/stac_server.py``, its own process) serves a small
synthetic catalogue (``tests/engine/stac_fixture.py``: one tile, ten 10 m bands and SCL as COGs) and
fails each request with probability ``--rate``, one fault kind at a time: HTTP 429, 500, 503, a
connection reset, a reply cut short, a request that times out (no answer for 2 s; the provider's
timeout is set to 1 s for that kind only, so a run does not take minutes). Every other setting is
the default (provider ``retries=3``, ``backoff=0.5``; pipeline ``retries=2``). For each kind, N places
are exported with ``rcf``, then the same command is run again (resume), and the table gives places
embedded by the first run, after the rerun, and lost (neither embedded nor recorded as failed).

Usage::

    .venv/bin/python benchmarks/bench_faults.py                  # N = 40, rate 0.15, every kind
    .venv/bin/python benchmarks/bench_faults.py --n 20 --kinds 500,short

Results go to ``benchmarks/results/faults.json`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))

KINDS = ("429", "500", "503", "reset", "short", "timeout")


def run_kind(kind: str, n: int, rate: float, seed: int) -> dict:
    import pyarrow.parquet as pq
    from eoembed import export_batch
    from eoembed.export import read_manifest
    from eoembed.specs import PointBuffer, TemporalSpec
    from stac_fixture import StacServer, build_catalogue, points

    with tempfile.TemporaryDirectory(prefix="eoembed-faults-") as tmp:
        root = build_catalogue(Path(tmp) / "cat")
        srv = StacServer(root)
        try:
            srv.faults(rate=rate, kinds=[kind], match="/", delay=2.0, seed=seed)
            places = {f"p{i}": PointBuffer(x, y, 60, crs="EPSG:32633") for i, (x, y) in enumerate(points(n))}
            opts = {"url": srv.base, "collection": "s2", **({"timeout": 1} if kind == "timeout" else {})}
            out = Path(tmp) / "out"
            t0 = time.perf_counter()
            runs, errors = [], []
            for _ in range(2):
                s = export_batch(places, TemporalSpec("2022-06-01", "2022-07-01"), "rcf", out, source="stac",
                                 source_options=opts)
                runs.append((s.ok, s.failed))
                errors += [f["error"] for f in s.failures[:3]]
            seconds = time.perf_counter() - t0
            injected = srv.injected()
        finally:
            srv.stop()
        rows = set(pq.read_table(out / "rcf" / "pooled.parquet").column("id").to_pylist())
        recorded = {r["id"] for r in read_manifest(out / "manifest.jsonl")}
    return {
        "kind": kind, "n": n, "rate": rate, "first_run_ok": runs[0][0], "first_run_failed": runs[0][1],
        "after_rerun_ok": runs[0][0] + runs[1][0], "rows": len(rows),
        "lost": len(set(places) - rows - recorded),  # neither embedded nor recorded as failed
        "faults_injected": sum(injected.values()), "seconds": round(seconds, 1), "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rate", type=float, default=0.15)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    results = [run_kind(k, args.n, args.rate, args.seed) for k in args.kinds.split(",")]
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(results, indent=2))
    print(f"{'kind':8s} {'N':>4s} {'rate':>5s} {'1st run ok':>10s} {'after rerun':>11s} {'lost':>4s} "
          f"{'faults':>6s} {'s':>6s}")
    for r in results:
        print(f"{r['kind']:8s} {r['n']:4d} {r['rate']:5.2f} {r['first_run_ok']:10d} {r['after_rerun_ok']:11d} "
              f"{r['lost']:4d} {r['faults_injected']:6d} {r['seconds']:6.1f}")


if __name__ == "__main__":
    main()
