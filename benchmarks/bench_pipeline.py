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
* peak resident memory of the e2e process (``ru_maxrss``), which must stay flat as N grows;
* ``e2e-load`` — ``e2e`` while another process keeps one core busy (a competing CPU load);
* ``stac``     — ``e2e`` from a STAC API over the same pixels (:mod:`stac_remote`: one COG per
                 band, served by ``tests/engine/servers/stac_server.py`` in its own process, every
                 answer delayed by ``--remote-latency-ms``), with the server's count of requests
                 per place by kind (search, COG HEAD, COG header, tile read) and the CPU seconds
                 of this process per place.

Every end-to-end run uses the default settings (thread budget, fetch concurrency); the forward
pass is timed with 1 torch thread and with torch's default and the faster one is "the limit" (one
stream, as a user calls ``embed``); it is also timed as two streams of half the cores each at once
(how ``export_batch`` infers on CPU), the machine's own limit for that model.

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py                     # N = 64, 512, 4096; rcf + galileo-nano
    .venv/bin/python benchmarks/bench_pipeline.py --n 64,512 --models rcf
    .venv/bin/python benchmarks/bench_pipeline.py --n 512 --models rcf,galileo-nano --modes e2e,e2e-load,stac \
        --remote-latency-ms 0,50 --repeat 3                               # the issue-12 table

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


def model_args(model: str, scratch: Path | None = None) -> dict[str, Any]:
    """Keyword arguments that select `model`: Galileo with its real weights from ../shared; a
    RemoteCLIP ViT with random weights in its checkpoint layout (written once under `scratch`),
    which costs what the real ones cost to run."""
    if model.startswith("galileo"):
        return {"weights": str(GALILEO_WEIGHTS)}
    if model.startswith("remoteclip-vit") and scratch is not None:
        import torch
        from eoembed.nn.clip import CLIP, CLIP_CONFIGS

        arch = {"remoteclip-vit-b-32": "ViT-B-32", "remoteclip-vit-l-14": "ViT-L-14"}[model]
        folder = scratch / "weights" / model
        if not folder.is_dir():
            torch.manual_seed(0)
            folder.mkdir(parents=True)
            torch.save(CLIP(CLIP_CONFIGS[arch]).state_dict(), folder / f"RemoteCLIP-{arch}.pt")
        return {"weights": str(folder)}
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


def _busy() -> subprocess.Popen:
    """A competing process that keeps one core busy until terminated."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _stac_stats(url: str, reset: bool = False) -> dict[str, int]:
    import urllib.request

    req = urllib.request.Request(url + "/_stats", method="POST" if reset else "GET",
                                 data=json.dumps({"reset": True}).encode() if reset else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def measure(mode: str, model: str, n: int, cogs_dir: Path, chunk_size: int, latency_ms: float = 0.0,
            stac_url: str | None = None, torch_threads: int | None = None) -> dict[str, Any]:
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
    kw = model_args(model, cogs_dir.parent)
    one = mode in ("e2e-b1", "seq")
    emb = get_embedder(model, **kw, **({"batch_size": 1} if one else {}))
    emb.load()
    res: dict[str, Any] = {"mode": mode, "model": model, "n": n, "latency_ms": latency_ms,
                           "loadavg_before": os.getloadavg()[0],
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
    source: Any = _provider(cogs_dir, latency_ms if mode != "stac" else 0.0)
    window = None
    if mode == "stac":
        import stac_remote
        from eoembed.providers.stac import StacProvider
        from eoembed.specs import TemporalSpec

        source, window = StacProvider(url=stac_url, collection=stac_remote.COLLECTION), TemporalSpec(*stac_remote.WINDOW)
        _stac_stats(stac_url, reset=True)
    busy = _busy() if mode == "e2e-load" else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t, c = time.perf_counter(), _cpu_s()
            s = eoembed.export_batch(places, window, [emb], Path(tmp) / "out", source=source, chunk_size=chunk_size,
                                     torch_threads=torch_threads)
            dt, dc = time.perf_counter() - t, _cpu_s() - c
            threads = json.loads((Path(tmp) / "out" / "run.json").read_text()).get("threads")
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()
    res.update(seconds=dt, per_s=n / dt, cpu_s_per_item=dc / n, ok=s.ok, failed=s.failed,
               peak_rss_mib=_peak_mib(), base_rss_mib=base, threads=threads)
    if mode == "stac":
        kinds = _stac_stats(stac_url)
        res.update(requests_per_item=sum(kinds.values()) / n, requests_by_kind={k: v / n for k, v in kinds.items()})
        source.close()

    provider = open_provider(str(cogs_dir))
    sample = list(places.values())[: min(n, 512)]
    sensor, frames = emb.sensor_for(None), emb.frames_for(None)
    obs = provider.fetch_many([provider.request(p, ALL_TIME, sensor, frames) for p in sample], workers=4)
    pooled = OutputSpec.pooled()
    emb.embed(obs[: emb.batch_size], pooled)  # warm-up
    best: tuple[float, float, int] | None = None
    for nt in sorted({1, torch.get_num_threads()}):  # "the limit": the faster thread setting
        before = torch.get_num_threads()
        torch.set_num_threads(nt)
        t, c = time.perf_counter(), _cpu_s()
        emb.embed(obs, pooled)
        dt, dc = time.perf_counter() - t, _cpu_s() - c
        torch.set_num_threads(before)
        if best is None or dt < best[0]:
            best = (dt, dc, nt)
    dt, dc, nt = best
    res.update(forward_items=len(obs), forward_per_s=len(obs) / dt, forward_cpu_s_per_item=dc / len(obs),
               forward_torch_threads=nt)
    # the machine's own limit: two forward streams at once, of half the cores each (as export_batch infers)
    import threading

    from eoembed.pipeline.budget import available_cores

    per = max(1, available_cores() // 2)

    def half(part: list[Any]) -> None:
        torch.set_num_threads(per)
        emb.embed(part, pooled)

    t, c = time.perf_counter(), _cpu_s()
    two = [threading.Thread(target=half, args=(obs[k::2],)) for k in range(2)]
    for th in two:
        th.start()
    for th in two:
        th.join()
    dt, dc = time.perf_counter() - t, _cpu_s() - c
    res.update(forward2_per_s=len(obs) / dt, forward2_cpu_s_per_item=dc / len(obs), loadavg_after=os.getloadavg()[0])
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
def _run(mode: str, model: str, n: int, cogs_dir: Path, chunk_size: int, latency_ms: float,
         stac_url: str | None = None, torch_threads: int | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", mode, "--model", model, "--n", str(n), "--cogs", str(cogs_dir),
           "--latency-ms", str(latency_ms),
           "--chunk-size", str(chunk_size)] + (["--stac-url", stac_url] if stac_url else []) \
        + (["--torch-threads", str(torch_threads)] if torch_threads else [])
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


def _median(vals: list[float]) -> float:
    vals = sorted(vals)
    return vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2


def ratios(rows: list[dict[str, Any]]) -> str:
    """The issue-12 table: medians over repeats of places/s, requests and CPU per place, and ratios."""
    lines = ["| model | N | path | places/s (median) | runs | vs local e2e | vs forward | vs 2-stream forward "
             "| requests/place | CPU ms/place | CPU vs local | streams×torch/fetch threads |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        if "per_s" not in r:
            continue
        path = r["mode"] if r["mode"] != "stac" else f"stac +{r['latency_ms']:g} ms"
        groups.setdefault((r["model"], r["n"], path), []).append(r)
    for model, n in sorted({(m, k) for m, k, _ in groups}):
        local = groups.get((model, n, "e2e"))
        loc_rate = _median([r["per_s"] for r in local]) if local else None
        loc_cpu = _median([r["cpu_s_per_item"] for r in local]) if local else None
        fwd = [r["forward_per_s"] for rs in groups.values() for r in rs
               if r["model"] == model and r["n"] == n and "forward_per_s" in r]
        fwd_rate = _median(fwd) if fwd else None
        fwd2 = [r["forward2_per_s"] for rs in groups.values() for r in rs
                if r["model"] == model and r["n"] == n and "forward2_per_s" in r]
        fwd2_rate = _median(fwd2) if fwd2 else None
        if fwd_rate:
            lines.append(f"| {model} | {n} | bare forward, one stream (best of 1 / default torch threads) "
                         f"| {fwd_rate:.1f} | {len(fwd)} | | 1.00 | | | | | |")
        if fwd2_rate:
            lines.append(f"| {model} | {n} | bare forward, two streams of half the cores | {fwd2_rate:.1f} "
                         f"| {len(fwd2)} | | {fwd2_rate / fwd_rate:.2f} | 1.00 | | | | |")
        for (m, k, path), rs in sorted(groups.items()):
            if (m, k) != (model, n):
                continue
            rate = _median([r["per_s"] for r in rs])
            cpu = _median([r["cpu_s_per_item"] for r in rs])
            req = _median([r["requests_per_item"] for r in rs]) if "requests_per_item" in rs[0] else None
            th = rs[0].get("threads") or {}
            vs2 = f"{rate / fwd2_rate:.2f}" if fwd2_rate else ""
            lines.append(
                f"| {model} | {n} | {path} | {rate:.1f} | {len(rs)} "
                f"| {rate / loc_rate:.2f} | {rate / fwd_rate:.2f} | {vs2} | {'' if req is None else f'{req:.2f}'} "
                f"| {1000 * cpu:.1f} | {cpu / loc_cpu:.2f} "
                f"| {th.get('streams', 1)}×{th.get('torch', '?')}/{th.get('fetch', '?')} |"
                if loc_rate and fwd_rate else f"| {model} | {n} | {path} | {rate:.1f} | {len(rs)} |||||||")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="64,512,4096", help="comma-separated ROI counts")
    ap.add_argument("--models", default="rcf,galileo-nano", help="comma-separated model ids")
    ap.add_argument("--modes", default="e2e,e2e-b1,seq",
                    help="comma-separated: e2e, e2e-b1, seq, e2e-load (a busy process competes), stac")
    ap.add_argument("--remote-latency-ms", default="0,50",
                    help="latencies added by the STAC server for the stac mode (comma-separated ms)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement (medians are reported)")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--one-by-one-max", type=int, default=512, help="largest N for the sequential run")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="add this delay to every local fetch, as a stand-in for a remote source")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="override the thread budget's torch threads (e.g. 2 to see what torch's default costs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--cogs", help=argparse.SUPPRESS)
    ap.add_argument("--stac-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, int(args.n), Path(args.cogs), args.chunk_size,
                                 args.latency_ms, args.stac_url, args.torch_threads)))
        return 0
    if not TILES.is_dir():
        print(f"skipped: {TILES} is absent", file=sys.stderr)
        return 0
    import stac_remote

    ns = [int(x) for x in args.n.split(",")]
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    latencies = [float(x) for x in args.remote_latency_ms.split(",") if x.strip()]
    rows: list[dict[str, Any]] = []
    notes = [f"load average at start: {os.getloadavg()}"]
    with tempfile.TemporaryDirectory() as tmp:
        cogs_dir = Path(tmp) / "cogs"
        make_cogs(cogs_dir)
        servers: dict[float, Any] = {}
        if "stac" in wanted:
            stac_remote.build_catalogue(sorted(TILES.glob("*.tif")), Path(tmp) / "stac")
            servers = {lat: stac_remote.StacServer(Path(tmp) / "stac", lat, name=f"lat{lat:g}") for lat in latencies}
        try:
            for model in [m.strip() for m in args.models.split(",") if m.strip()]:
                why = available(model)
                if why:
                    notes.append(f"{model}: skipped ({why})")
                    print(notes[-1], file=sys.stderr)
                    continue
                for n in ns:
                    runs = [(m, 0.0) for m in wanted if m != "stac" and (m != "seq" or n <= args.one_by_one_max)]
                    runs += [("stac", lat) for lat in latencies if "stac" in wanted]
                    for _ in range(max(1, args.repeat)):  # repeats interleaved, so load drifts hit every path
                        for mode, lat in runs:
                            url = servers[lat].base if mode == "stac" else None
                            r = _run(mode, model, n, cogs_dir, args.chunk_size,
                                     lat if mode == "stac" else args.latency_ms, url, args.torch_threads)
                            rows.append(r)
                            print(json.dumps(r), file=sys.stderr)
        finally:
            for srv in servers.values():
                srv.stop()
    notes.append(f"load average at end: {os.getloadavg()}")
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
    body = md + "\n\n" + ratios(rows)
    (out / f"{stem}.md").write_text(header + body + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    print(header + body)
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
