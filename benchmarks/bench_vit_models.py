"""Forward time and peak memory of the ViT-family networks (Prithvi-EO-2.0, SatMAE, SatMAE++,
Scale-MAE) at their published sizes, on the CPU (or another device).

Each model runs in a fresh subprocess: the network is built at full size with random weights (the
forward cost does not depend on the values; no checkpoint is needed), one warm-up batch of 1, then
``--repeat`` timed forward passes of a batch of ``--batch`` images at the model's input size
(224 px; 96 px for the SatMAE++ S2 model) under ``torch.inference_mode``. Reported per model:
seconds per image (best of the repeats), parameters, and the process's peak resident memory
(``ru_maxrss``, which includes the weights and Python/torch themselves).

Usage::

    .venv/bin/python benchmarks/bench_vit_models.py                       # every model, batch 8
    .venv/bin/python benchmarks/bench_vit_models.py --models prithvi-tiny-tl,satmae --threads 2

Results go to ``benchmarks/results/vit_models.json`` and are printed as a table. The numbers
depend on the machine and on what else runs on it: report them as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("prithvi-tiny-tl", "prithvi-100m-tl", "prithvi-300m-tl", "prithvi-600m-tl", "satmae",
          "satmaepp-rgb", "satmaepp-s2", "scalemae")

_CHILD = r"""
import json, resource, sys, time
import torch
name, batch, repeat, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from eoembed.nn.mae import GroupChannelViT, MAEConfig, MAEViT
from eoembed.nn.prithvi import PRESETS, PrithviEncoder
torch.manual_seed(0)
if name.startswith("prithvi-"):
    cfg = PRESETS[name[len("prithvi-"):]]
    model = PrithviEncoder(cfg)
    size = 224
    def run(n):
        x = torch.randn(n, 6, 1, size, size, device=device)
        tc = torch.tensor([[[2021.0, 180.0]]] * n, device=device) if cfg.coords else None
        lc = torch.tensor([[47.0, 8.0]] * n, device=device) if cfg.coords else None
        return model(x, tc, lc)
elif name == "satmaepp-s2":
    model = GroupChannelViT(MAEConfig(img_size=96, patch_size=8, in_chans=10,
                                      groups=((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))))
    size = 96
    def run(n):
        return model(torch.randn(n, 10, size, size, device=device))
else:
    model = MAEViT(MAEConfig(), resolution_pos=name == "scalemae")
    size = 224
    def run(n):
        x = torch.randn(n, 3, size, size, device=device)
        return model(x, torch.ones(n)) if name == "scalemae" else model(x)
model = model.eval().to(device)
params = sum(p.numel() for p in model.parameters())
times = []
with torch.inference_mode():
    run(1)
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
print(json.dumps({"model": name, "image_px": size, "batch": batch, "params": params,
                  "s_per_image": min(times) / batch,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(ROOT / "engine") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = []
    for name in args.models.split(","):
        proc = subprocess.run([sys.executable, "-c", _CHILD, name, str(args.batch),
                               str(args.repeat), args.device], env=env, capture_output=True,
                              text=True, check=False)
        if proc.returncode:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['model']:>16}  {row['image_px']:>3} px  {row['params'] / 1e6:7.1f} M params  "
              f"{row['s_per_image']:8.3f} s/image  peak {row['peak_rss_mb']:8.0f} MB", flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "threads": args.threads, "device": args.device,
            "batch": args.batch, "repeat": args.repeat}
    (out / "vit_models.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
