"""Batch-export benchmark: end-to-end embeddings/s from local COGs versus the pure model forward.

For N ROIs (64 × 64 px crops of real Sentinel-2 L2A tiles from ``../shared``, turned into COGs in
a temporary folder) and each model, in a fresh subprocess per measurement:

* ``e2e``      — :func:`eoembed.export_batch` (plan, fetch, infer, write GeoParquet/NPZ, manifest),
                 model weights loaded beforehand, batched inference;
* ``e2e-b1``   — the same pipeline with inference batches of 1 (isolates what batching brings);
* ``seq``      — the way point-by-point tools work: for each place fetch, then infer (batch 1),
                 nothing overlapped, one file written at the end (only for N ≤ 512);
* ``forward``  — after each run, in the same process: the embedder's ``embed`` on already fetched
                 observations of (up to 512 of) the same ROIs, batched (and one by one after the
                 one-by-one run); the ratio e2e / forward is given on wall time and on CPU seconds;
* peak resident memory of the e2e process (``ru_maxrss``), which must stay flat as N grows.

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py                     # N = 64, 512, 4096; rcf + galileo-nano
    .venv/bin/python benchmarks/bench_pipeline.py --n 64,512 --models rcf

Results go to ``benchmarks/results/pipeline.json`` and ``pipeline.md`` and are printed as a table.
The numbers depend on the machine and on what else runs on it: report them as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
TILES = SHARED / "data" / "s2_l2a_tiles"
GALILEO_WEIGHTS = SHARED / "weights" / "galileo_nano"
CROP_PX = 64


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def make_cogs(folder: Path) -> list[Path]:
    """Cloud-optimised GeoTIFF copies of the real 12-band tiles (band names in descriptions)."""
    import rasterio
    from eoembed.sensors import S2_STACK_LAYOUTS
    from rasterio.shutil import copy as rio_copy

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src_path in sorted(TILES.glob("*.tif")):
        tmp = folder / f"{src_path.stem}.named.tif"
        with rasterio.open(src_path) as src:
            profile = {**src.profile, "driver": "GTiff"}
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(src.read())
                for i, b in enumerate(S2_STACK_LAYOUTS[src.count], start=1):
                    dst.set_band_description(i, b)
        dst_path = folder / f"{src_path.stem}.tif"
        rio_copy(tmp, dst_path, driver="COG", compress="DEFLATE", blocksize=64)
        tmp.unlink()
        out.append(dst_path)
    return out


def make_places(cogs: list[Path], n: int, seed: int = 0) -> dict[str, Any]:
    """`n` ROIs of CROP_PX × CROP_PX pixels at random spots inside the tiles, in each tile's CRS."""
    import numpy as np
    import rasterio
    from eoembed.specs import PointBuffer

    rng = np.random.default_rng(seed)
    tiles = []
    for p in cogs:
        with rasterio.open(p) as src:
            tiles.append((src.bounds, src.crs.to_string(), src.res[0]))
    places = {}
    for i in range(n):
        (left, bottom, right, top), crs, res = tiles[i % len(tiles)]
        half = CROP_PX * res / 2
        x = rng.uniform(left + half, right - half)
        y = rng.uniform(bottom + half, top - half)
        places[f"roi{i:05d}"] = PointBuffer(float(x), float(y), half, crs=crs)
    return places


def model_args(model: str) -> dict[str, Any]:
    """Keyword arguments that select `model` with its real weights (Galileo from ../shared)."""
    if model.startswith("galileo"):
        return {"weights": str(GALILEO_WEIGHTS)}
    return {}


# ---------------------------------------------------------------------------------------------
# one measurement (runs in its own process)
# ---------------------------------------------------------------------------------------------
def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _provider(cogs_dir: Path, latency_ms: float) -> Any:
    """The local COGs, optionally behind a fixed per-fetch delay that stands in for a remote
    source (a STAC/COG range request or an Earth Engine call)."""
    from eoembed.providers import Provider, open_provider

    local = open_provider(str(cogs_dir))
    if latency_ms <= 0:
        return local

    class Remote(Provider):
        name = "local+latency"

        def lattices(self, spatial, sensor, temporal=None):  # noqa: ANN001, ANN202
            return local.lattices(spatial, sensor, temporal)

        def fetch(self, request):  # noqa: ANN001, ANN202
            time.sleep(latency_ms / 1000.0)
            return local.fetch(request)

        def describe(self) -> dict[str, Any]:
            return {"provider": self.name, "latency_ms": latency_ms}

    return Remote()


def measure(mode: str, model: str, n: int, cogs_dir: Path, chunk_size: int, latency_ms: float = 0.0) -> dict[str, Any]:
    """One measurement in this process: the end-to-end export, then the pure forward pass on the
    same kind of tensors (already fetched observations of up to 512 of the same ROIs).

    Wall time and CPU time (all threads of this process) are both recorded: the machine is shared,
    so CPU seconds per embedding are the steadier basis for the ratio.
    """
    import eoembed
    import torch
    from eoembed.api import ALL_TIME
    from eoembed.embedders.registry import get_embedder
    from eoembed.providers import open_provider
    from eoembed.specs import OutputSpec

    cogs = sorted(cogs_dir.glob("*.tif"))
    places = make_places(cogs, n)
    kw = model_args(model)
    one = mode in ("e2e-b1", "seq")
    emb = get_embedder(model, **kw, **({"batch_size": 1} if one else {}))
    emb.load()
    res: dict[str, Any] = {"mode": mode, "model": model, "n": n, "latency_ms": latency_ms,
                           "torch_threads": torch.get_num_threads(),
                           "batch_size": emb.batch_size, "dim": emb.describe().dim}
    base = _peak_mib()
    if mode == "seq":  # one place at a time, nothing overlapped: fetch, infer, next (then one write)
        import numpy as np

        provider = _provider(cogs_dir, latency_ms)
        t, c = time.perf_counter(), _cpu_s()
        vecs = [eoembed.get_embedding(emb, p, source=provider).to_numpy() for p in places.values()]
        with tempfile.TemporaryDirectory() as tmp:
            from eoembed.export import write_npz

            write_npz(Path(tmp) / "seq.npz", list(places), np.stack(vecs))
        dt, dc = time.perf_counter() - t, _cpu_s() - c
        res.update(seconds=dt, per_s=n / dt, cpu_s_per_item=dc / n, peak_rss_mib=_peak_mib(), base_rss_mib=base)
        return res
    with tempfile.TemporaryDirectory() as tmp:
        t, c = time.perf_counter(), _cpu_s()
        s = eoembed.export_batch(
            places, None, [emb], Path(tmp) / "out", source=_provider(cogs_dir, latency_ms),
            chunk_size=chunk_size, workers=16 if latency_ms > 0 else 4,
        )
        dt, dc = time.perf_counter() - t, _cpu_s() - c
    res.update(seconds=dt, per_s=n / dt, cpu_s_per_item=dc / n, ok=s.ok, failed=s.failed,
               peak_rss_mib=_peak_mib(), base_rss_mib=base)

    provider = open_provider(str(cogs_dir))
    sample = list(places.values())[: min(n, 512)]
    sensor, frames = emb.sensor_for(None), emb.frames_for(None)
    obs = provider.fetch_many([provider.request(p, ALL_TIME, sensor, frames) for p in sample], workers=4)
    pooled = OutputSpec.pooled()
    emb.embed(obs[: emb.batch_size], pooled)  # warm-up
    t, c = time.perf_counter(), _cpu_s()
    emb.embed(obs, pooled)
    dt, dc = time.perf_counter() - t, _cpu_s() - c
    res.update(forward_items=len(obs), forward_per_s=len(obs) / dt, forward_cpu_s_per_item=dc / len(obs))
    if one:  # batched vs one-by-one forward on the same tensors, alternated so load drifts hit both
        batched = get_embedder(model, **kw)
        batched.load()
        sub = obs[:128]
        rates: dict[str, list[float]] = {"batched": [], "one": []}
        for _ in range(3):
            for name, e in (("batched", batched), ("one", emb)):
                t = time.perf_counter()
                e.embed(sub, pooled)
                rates[name].append(len(sub) / (time.perf_counter() - t))
        res.update(ab_batched_per_s=sorted(rates["batched"])[1], ab_one_per_s=sorted(rates["one"])[1],
                   ab_batch_size=batched.batch_size)
    return res


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _run(mode: str, model: str, n: int, cogs_dir: Path, chunk_size: int, latency_ms: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", mode, "--model", model, "--n", str(n), "--cogs", str(cogs_dir),
           "--latency-ms", str(latency_ms),
           "--chunk-size", str(chunk_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"mode": mode, "model": model, "n": n, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}


def available(model: str) -> str | None:
    """None when `model` can run here, else why not."""
    from eoembed.api import list_models

    if model not in list_models():
        return f"{model} is not registered in eoembed (its embedder is not there yet)"
    if model.startswith("galileo") and not GALILEO_WEIGHTS.is_dir():
        return f"{GALILEO_WEIGHTS} is absent"
    return None


def table(rows: list[dict[str, Any]]) -> str:
    by = {(r["model"], r["n"], r["mode"]): r for r in rows}
    lines = [
        "| model | N | e2e emb/s | forward emb/s | e2e/forward (wall) | e2e/forward (CPU s) "
        "| e2e batch-1 emb/s | sequential emb/s | best e2e / sequential "
        "| forward batched/1-by-1 (same tensors) | peak RSS MiB (after load) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, n in sorted({(r["model"], r["n"]) for r in rows}):
        e, o = by.get((model, n, "e2e"), {}), by.get((model, n, "e2e-b1"), {})
        q = by.get((model, n, "seq"), {})
        if "per_s" not in e:
            lines.append(f"| {model} | {n} | {e.get('error', 'not run')[:60]} ||||||||||")
            continue
        one = f"{o['per_s']:.1f}" if "per_s" in o else "—"
        seq = f"{q['per_s']:.1f}" if "per_s" in q else "—"
        best = max(e["per_s"], o.get("per_s", 0.0))
        speed = f"{best / q['per_s']:.1f}×" if "per_s" in q else "—"
        fone = (f"{o['ab_batched_per_s']:.1f} / {o['ab_one_per_s']:.1f}" if "ab_one_per_s" in o else "—")
        lines.append(
            f"| {model} | {n} | {e['per_s']:.1f} | {e['forward_per_s']:.1f} | {e['per_s'] / e['forward_per_s']:.2f} | "
            f"{e['forward_cpu_s_per_item'] / e['cpu_s_per_item']:.2f} | {one} | {seq} | {speed} | {fone} | "
            f"{e['peak_rss_mib']:.0f} ({e['base_rss_mib']:.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="64,512,4096", help="comma-separated ROI counts")
    ap.add_argument("--models", default="rcf,galileo-nano", help="comma-separated model ids")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--one-by-one-max", type=int, default=512, help="largest N for the sequential run")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="add this delay to every fetch, as a remote source would (e2e then uses 16 fetch threads)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--cogs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, int(args.n), Path(args.cogs), args.chunk_size,
                                 args.latency_ms)))
        return 0
    if not TILES.is_dir():
        print(f"skipped: {TILES} is absent", file=sys.stderr)
        return 0
    ns = [int(x) for x in args.n.split(",")]
    rows: list[dict[str, Any]] = []
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        cogs_dir = Path(tmp) / "cogs"
        make_cogs(cogs_dir)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            why = available(model)
            if why:
                notes.append(f"{model}: skipped ({why})")
                print(notes[-1], file=sys.stderr)
                continue
            for n in ns:
                modes = ["e2e", "e2e-b1"] + (["seq"] if n <= args.one_by_one_max else [])
                for mode in modes:
                    r = _run(mode, model, n, cogs_dir, args.chunk_size, args.latency_ms)
                    rows.append(r)
                    print(json.dumps(r), file=sys.stderr)
    md = table(rows) if rows else "(no measurements)"
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "crop_px": CROP_PX,
            "chunk_size": args.chunk_size, "latency_ms": args.latency_ms, "notes": notes}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pipeline" if args.latency_ms <= 0 else f"pipeline_latency{args.latency_ms:g}ms"
    (out / f"{stem}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    lat = f", +{args.latency_ms:g} ms per fetch" if args.latency_ms > 0 else ""
    header = f"Batch export benchmark — {info['date']}, {info['machine']}, {CROP_PX}×{CROP_PX} px ROIs{lat}\n\n"
    (out / f"{stem}.md").write_text(header + md + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    print(header + md)
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
