"""CPU forward time and peak memory of the multi-sensor ViT models (DOFA, SoftCon, CROMA, Clay).

Each model runs in a fresh subprocess at its published full size, with random weights (the
forward cost does not depend on the values), on a batch of ``--batch`` images of ``--size`` px
(224 by default, as the issue asks; CROMA and Clay take any multiple of their patch, so they run
at 224 too, and once more at their native 120 / 256 px with ``--native``). Reported: seconds per
image (median of ``--repeat`` timed passes after one warm-up, ``torch.inference_mode``), the
peak resident memory of the process (``ru_maxrss``) and the parameter count.

Usage::

    .venv/bin/python benchmarks/bench_multisensor_models.py                       # all models, batch 8, 224 px
    .venv/bin/python benchmarks/bench_multisensor_models.py --models dofa-base,softcon-vits14 --threads 2

Results go to ``benchmarks/results/multisensor_models.json`` and are printed as a table. Timings depend
on the machine and on what else runs on it: report them as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("dofa-base", "dofa-large", "softcon-vits14", "softcon-vitb14", "croma-base", "croma-large", "clay-v1.5")
NATIVE = {"croma-base": 120, "croma-large": 120, "clay-v1.5": 256}


def _build(model: str, size: int) -> tuple[Any, Any]:
    """(network, callable running one batch) for `model` at full size."""
    import torch

    if model.startswith("dofa"):
        from eoembed.nn.dofa import DOFA, DOFA_CONFIGS

        net = DOFA(DOFA_CONFIGS[model.split("-")[1]])
        waves = torch.tensor([0.665, 0.56, 0.49, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19])
        return net, lambda x: net(x[:, :9], waves)
    if model.startswith("softcon"):
        from eoembed.nn.softcon import SOFTCON_CONFIGS, SoftConConfig, SoftConViT

        width, depth, heads = SOFTCON_CONFIGS[model.split("-")[1]]
        net = SoftConViT(SoftConConfig(width, depth, heads, 13))
        return net, lambda x: net(x[:, :13])
    if model.startswith("croma"):
        from eoembed.nn.croma import CROMA, CROMA_CONFIGS

        net = CROMA(CROMA_CONFIGS[model.split("-")[1]])
        net.keep_only({"s2_encoder", "s2_GAP_FFN"})  # as the optical embedder keeps it
        return net, lambda x: net(optical=x[:, :12])
    if model == "clay-v1.5":
        from eoembed.nn.clay import CLAY_CONFIGS, ClayEncoder

        net = ClayEncoder(CLAY_CONFIGS["large"])
        waves = torch.tensor([0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19])

        def run(x: torch.Tensor) -> Any:
            b = x.shape[0]
            return net(x[:, :10], waves, 10.0, torch.zeros(b, 4), torch.zeros(b, 4))

        return net, run
    raise SystemExit(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def child(model: str, size: int, batch: int, repeat: int, threads: int) -> dict[str, Any]:
    """Measure one model in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, run = _build(model, size)
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.rand(batch, 13, size, size)
    times = []
    with torch.inference_mode():
        run(x)  # warm-up
        for _ in range(repeat):
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
    return {
        "model": model, "size": size, "batch": batch, "threads": threads, "params": params,
        "s_per_image": statistics.median(times) / batch, "runs_s": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--native", action="store_true", help="also run CROMA and Clay at their native size")
    parser.add_argument("--native-only", action="store_true", help="only the native-size runs of CROMA and Clay")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.batch, args.repeat, args.threads)))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "engine"), "OMP_NUM_THREADS": str(args.threads)}
    runs = [] if args.native_only else [(m, args.size) for m in args.models.split(",")]
    if args.native or args.native_only:
        runs += [(m, NATIVE[m]) for m in args.models.split(",") if m in NATIVE]
    rows = []
    for model, size in runs:
        out = subprocess.run(
            [sys.executable, __file__, "--child", model, "--size", str(size), "--batch", str(args.batch),
             "--repeat", str(args.repeat), "--threads", str(args.threads)],
            env=env, capture_output=True, text=True, check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{model:>15} {size:4d} px  {row['s_per_image']:7.3f} s/image  peak {row['peak_rss_mib']:7.0f} MiB  "
              f"{row['params'] / 1e6:6.1f} M params", flush=True)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()}
    out_file = results / "multisensor_models.json"
    old = json.loads(out_file.read_text())["rows"] if out_file.is_file() else []
    keep = [r for r in old if (r["model"], r["size"]) not in {(r2["model"], r2["size"]) for r2 in rows}]
    out_file.write_text(json.dumps({"meta": meta, "rows": keep + rows}, indent=2))


if __name__ == "__main__":
    main()
