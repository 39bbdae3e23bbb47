"""Peak memory of a batch export as the number of places grows (planning, manifest, final merge).

Each N runs in a fresh process: RCF (64 features) over N places of 8 × 8 px whose pixels come
from a provider that returns a constant observation at once, so that fetching costs nothing and
what grows with N is the pipeline's own bookkeeping; the input places themselves are counted
separately (RSS after building them). Prints peak RSS per N and the slope per place.

    .venv/bin/python benchmarks/bench_memory.py --n 1000,10000,100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(n: int) -> dict[str, float]:
    import eoembed
    import numpy as np
    from eoembed.providers.base import Provider, make_observation
    from eoembed.specs import PointBuffer

    class Constant(Provider):
        name = "constant"

        def fetch(self, req):  # noqa: ANN001, ANN202
            g = req.grid
            v = np.full((1, len(req.sensor.bands), g.height, g.width), 1000.0, np.float32)
            return make_observation(v, np.ones((1, g.height, g.width), bool), g, req.sensor.bands,
                                    [req.temporal.start])

    places = {f"p{i:07d}": PointBuffer(500000.0 + (i % 1000) * 100, 5000000.0 + (i // 1000) * 100, 40.0,
                                       crs="EPSG:32632") for i in range(n)}
    base = _rss_mib()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        s = eoembed.export_batch(places, None, [("rcf", {"features": 64})], Path(d) / "o", source=Constant(),
                                 chunk_size=1024)
    return {"n": n, "ok": s.ok, "seconds": time.perf_counter() - t, "peak_rss_mib": _rss_mib(),
            "places_rss_mib": base}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="1000,10000,100000")
    ap.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    rows = []
    for n in [int(x) for x in args.n.split(",")]:
        proc = subprocess.run([sys.executable, __file__, "--measure", str(n)], capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        rows.append(json.loads(line[-1]) if line else {"n": n, "error": proc.stderr.strip()[-300:]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print("| places | peak RSS MiB | of which input places | seconds |\n|---:|---:|---:|---:|")
    for r in rows:
        if "peak_rss_mib" in r:
            print(f"| {r['n']} | {r['peak_rss_mib']:.0f} | {r['places_rss_mib']:.0f} | {r['seconds']:.1f} |")
    ok = [r for r in rows if "peak_rss_mib" in r]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["n"] - a["n"]) * 1024
        print(f"\nslope: {slope:.2f} KiB per place; 1M places ≈ {a['peak_rss_mib'] + slope * (1e6 - a['n']) / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
