"""Bytes read and wall time per place for AlphaEarth COG reads and Tessera Zarr reads (640 m
and 10 km places).

    PYTHONPATH=engine python benchmarks/bench_products.py

AlphaEarth: a synthetic 2048×2048-px, 64-band int8 tile in the bucket layout (tiled 256²,
deflate). Tessera: a 2048×2048-px store in the published chunking (256² × 128 chunks in one
2048² shard). Both are served by the loopback file server of the tests (its own process);
each place is read once (AlphaEarth's index already cached) and the bytes the server sent are
summed from its request log.
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
    tessera_store(root / "data" / "tessera.zarr")
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
            print(f"alphaearth {label}: {got} bytes read of a {size}-byte tile ({100 * got / size:.1f} %), "
                  f"{wall:.2f} s, {e.meta['pixels']} pixels")
        store_bytes = sum(f.stat().st_size for f in (root / "data" / "tessera.zarr").rglob("*") if f.is_file())
        for label, half in (("640 m", 320.0), ("10 km", 5000.0)):
            place = PointBuffer(x0 + 10240, y0 - 10240, half, crs="EPSG:32632")
            mark = server.mark()
            t0 = time.perf_counter()
            e = api.get_embedding("tessera", place, TemporalSpec.year(2022),
                                  model_config={"store": server.base + "/data/tessera.zarr"})
            wall = time.perf_counter() - t0
            got = sum(r["bytes"] for r in server.since(mark))
            print(f"tessera {label}: {got} bytes read of a {store_bytes}-byte store "
                  f"({100 * got / store_bytes:.1f} %), {wall:.2f} s, {e.meta['pixels']} pixels")
    finally:
        server.stop()


def tessera_store(path: Path, n: int = 2048, x0: float = 600000.0, y0: float = 5000000.0) -> None:
    """A Tessera store (group 32N) with the published chunking, filled with known int8 × scale."""
    import zarr

    rng = np.random.default_rng(1)
    g = zarr.open_group(str(path), mode="w", zarr_format=3).create_group("32N")
    g.attrs.update({"proj:code": "EPSG:32632", "spatial:transform": [10, 0, x0, 0, -10, y0]})
    emb = g.create_array("embeddings", shape=(1, 128, n, n), dtype="int8", chunks=(1, 128, 256, 256),
                         shards=(1, 128, n, n), dimension_names=("time", "band", "y", "x"))
    emb[:] = np.repeat(np.repeat(rng.integers(-127, 128, (1, 128, n // 16, n // 16), dtype=np.int8), 16, 2), 16, 3)
    sc = g.create_array("scales", shape=(1, n, n), dtype="float32", chunks=(1, 256, 256), shards=(1, n, n),
                        fill_value=float("nan"), dimension_names=("time", "y", "x"))
    sc[:] = rng.uniform(0.001, 0.01, (1, n, n)).astype(np.float32)
    g.create_array("time", shape=(1,), dtype="int32")[:] = [2022]


if __name__ == "__main__":
    main()
