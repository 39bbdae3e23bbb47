"""Bytes read and wall time per place for AlphaEarth COG reads (640 m and 10 km places).

    PYTHONPATH=engine python benchmarks/bench_products.py

A synthetic 2048×2048-px, 64-band int8 tile in the bucket layout (tiled 256², deflate) is served
by the loopback file server of the tests (its own process); each place is read once, cold
(index already cached), and the bytes the server sent are summed from its request log.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.warp import transform_bounds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engine"))
from eoembed import api  # noqa: E402
from eoembed.specs import PointBuffer, TemporalSpec  # noqa: E402
from test_provider_stac import Server  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp())
    (root / "catalog.json").write_text(json.dumps({"collections": [], "items": []}))
    n, x0, y0 = 2048, 600000.0, 5000000.0
    t = Affine(10, 0, x0, 0, -10, y0)
    rng = np.random.default_rng(0)
    blocks = rng.integers(-127, 128, (64, n // 8, n // 8)).astype(np.int8)
    data = np.repeat(np.repeat(blocks, 8, 1), 8, 2)
    rel = "2022/32N/bench-0000000000-0000000000.tiff"
    path = root / "data" / "aef" / rel
    path.parent.mkdir(parents=True)
    with rasterio.open(path, "w", driver="GTiff", dtype="int8", count=64, width=n, height=n, crs="EPSG:32632",
                       transform=t, nodata=-128, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", interleave="pixel") as dst:
        dst.write(data)
    fp = shapely.box(*transform_bounds("EPSG:32632", "EPSG:4326", x0, y0 - n * 10, x0 + n * 10, y0))
    with open(root / "data" / "aef" / "aef_index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["WKT", "path", "year", "utm_zone"])
        w.writeheader()
        w.writerow({"WKT": fp.wkt, "path": rel, "year": 2022, "utm_zone": "32N"})
    server = Server(root, name="bench")
    cfg = {"route": "cog", "layout": "bucket", "url": server.base + "/data/aef"}
    size = path.stat().st_size
    try:
        api.get_embedding("alphaearth", PointBuffer(x0 + 100, y0 - 100, 50, crs="EPSG:32632"),
                          TemporalSpec.year(2022), model_config=cfg)  # index download
        for label, half in (("640 m", 320.0), ("10 km", 5000.0)):
            place = PointBuffer(x0 + 10240, y0 - 10240, half, crs="EPSG:32632")
            mark = server.mark()
            t0 = time.perf_counter()
            e = api.get_embedding("alphaearth", place, TemporalSpec.year(2022), model_config=cfg)
            wall = time.perf_counter() - t0
            got = sum(r["bytes"] for r in server.since(mark))
            print(f"{label}: {got} bytes read of a {size}-byte tile ({100 * got / size:.1f} %), "
                  f"{wall:.2f} s, {e.meta['pixels']} pixels")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
