"""The remote path of the benchmark: a STAC API over COGs of the real tiles, served from 127.0.0.1.

:func:`build_catalogue` writes, for each real Sentinel-2 tile in ``../shared``, one single-band
COG per band (12 bands and a clear ``SCL``, 10 m, 64 px blocks, DEFLATE — the pixels and tiling
of the local benchmark COGs) and a STAC item for it, as Earth Search lays them out. The tile's
origin is snapped to the 60 m lattice, as real Sentinel-2 tiles are, so 10 m grids read the
COGs without resampling. :class:`StacServer` runs ``tests/engine/servers/stac_server.py`` in its
own process, optionally adding a fixed latency to every answer, and reports the requests it
answered by kind (search, COG header, tile read, ...).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "engine" / "servers" / "stac_server.py"
LAYOUT = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
COLLECTION = "sentinel-2-l2a"
#: the items' dates all lie in this window (start included, end excluded)
WINDOW = ("2024-01-01", "2025-01-01")


def build_catalogue(tiles: list[Path], root: Path, block: int = 64) -> dict[str, Any]:
    """COGs and ``catalog.json`` under `root`; returns ``{tile stem: (crs, snapped bounds)}``."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    items, facts = [], {}
    for k, path in enumerate(sorted(tiles)):
        with rasterio.open(path) as src:
            px = src.read()
            crs = src.crs.to_string()
            t = src.transform
        x0, y0 = round(t.c / 60) * 60, round(t.f / 60) * 60
        h, w = px.shape[1:]
        assets = {}
        for b, arr in zip(LAYOUT + ("SCL",), list(px) + [np.full((h, w), 4, np.uint8)]):
            name = f"{path.stem}_{b}.tif"
            profile = {"driver": "COG", "width": w, "height": h, "count": 1, "dtype": arr.dtype.name, "crs": crs,
                       "transform": Affine(10, 0, x0, 0, -10, y0), "blocksize": block, "compress": "deflate",
                       "nodata": 0 if b != "SCL" else None}
            with rasterio.open(data / name, "w", **profile) as dst:
                dst.write(arr[None])
            assets[b] = {"href": "{base}/data/" + name, "roles": ["data"],
                         "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                         "eo:bands": [{"name": b}] if b != "SCL" else []}
        bounds = (x0, y0 - 10 * h, x0 + 10 * w, y0)
        west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": f"S2A_{path.stem}_L2A", "collection": COLLECTION,
            "bbox": [west, south, east, north],
            "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                             [west, north], [west, south]]]},
            "properties": {"datetime": f"2024-0{k % 9 + 1}-15T10:40:21Z", "eo:cloud_cover": 2.0,
                           "platform": "sentinel-2a", "s2:processing_baseline": "02.14",
                           "s2:datatake_id": f"DT-{k}"},
            "assets": assets, "links": [],
        })
        facts[path.stem] = (crs, bounds)
    collection = {"type": "Collection", "stac_version": "1.0.0", "id": COLLECTION, "description": "benchmark",
                  "license": "CC-BY-SA-4.0", "links": [],
                  "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}
    (root / "catalog.json").write_text(json.dumps({"collections": [collection], "items": items}))
    return facts


class StacServer:
    """``stac_server.py`` in its own process over `root`, each answer delayed by `latency_ms`."""

    def __init__(self, root: Path, latency_ms: float = 0.0, name: str = "bench") -> None:
        self.log = root / f"{name}-requests.jsonl"
        ready = root / f"{name}-port"
        for p in (self.log, ready):
            p.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--root", str(root), "--log", str(self.log),
                                      "--ready", str(ready), "--latency-ms", str(latency_ms)])
        t0 = time.time()
        while not ready.exists():
            if self.proc.poll() is not None or time.time() - t0 > 30:
                raise RuntimeError("the benchmark STAC server did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{int(ready.read_text())}"

    def stats(self, reset: bool = False) -> dict[str, int]:
        """Requests answered so far, by kind (and a fresh count from now on when `reset`)."""
        req = urllib.request.Request(self.base + "/_stats", method="POST" if reset else "GET",
                                     data=json.dumps({"reset": True}).encode() if reset else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self) -> StacServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
