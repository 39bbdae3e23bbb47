"""A small synthetic STAC catalogue (4-band COGs) served by ``servers/stac_server.py``.

Used by the fault-injection and secret-scan tests, which need many places and fast reads
rather than real pixels: every item is one 64 × 64 px UTM scene, ten 10 m bands (those RCF
reads) and SCL, one COG each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds

SERVER = Path(__file__).parent / "servers" / "stac_server.py"
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_000_000.0)
SIZE = 64


def build_catalogue(root: Path, dates: tuple[str, ...] = ("2022-06-10",), seed: int = 0) -> Path:
    """COGs and ``catalog.json`` for one tile seen on `dates`; returns `root`."""
    rng = np.random.default_rng(seed)
    (root / "data").mkdir(parents=True, exist_ok=True)
    x0, y0 = ORIGIN
    w, s, e, n = transform_bounds(CRS, "EPSG:4326", x0, y0 - 10 * SIZE, x0 + 10 * SIZE, y0, densify_pts=21)
    items = []
    for k, day in enumerate(dates):
        iid = f"S2A_33TVM_{day.replace('-', '')}_L2A"
        assets = {}
        for b in (*BANDS, "SCL"):
            arr = (np.full((SIZE, SIZE), 4, "uint8") if b == "SCL"
                   else rng.integers(300, 4000, (SIZE, SIZE)).astype("uint16"))
            name = f"{iid}_{b}.tif"
            with rasterio.open(root / "data" / name, "w", driver="COG", width=SIZE, height=SIZE, count=1,
                               dtype=arr.dtype.name, crs=CRS, transform=Affine(10, 0, x0, 0, -10, y0),
                               blocksize=64, nodata=None if b == "SCL" else 0) as dst:
                dst.write(arr[None])
            assets[b if b != "SCL" else "scl"] = {"href": "{base}/data/" + name, "type": "image/tiff",
                                                  "eo:bands": [{"name": b}] if b != "SCL" else []}
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "s2", "bbox": [w, s, e, n],
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"datetime": f"{day}T10:00:00Z", "eo:cloud_cover": 5.0 + k, "platform": "sentinel-2a",
                           "s2:processing_baseline": "02.14"},
            "assets": assets, "links": [],
        })
    collections = [{"type": "Collection", "stac_version": "1.0.0", "id": "s2", "description": "test",
                    "license": "CC-BY-SA-4.0", "links": [],
                    "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}]
    (root / "catalog.json").write_text(json.dumps({"collections": collections, "items": items}))
    return root


def points(n: int) -> list[tuple[float, float]]:
    """`n` distinct place centres (UTM 33N) inside the tile, on a 40 m lattice."""
    x0, y0 = ORIGIN
    side = int(np.ceil(np.sqrt(n)))
    return [(x0 + 80 + 40 * (i % side), y0 - 80 - 40 * (i // side)) for i in range(n)]


class StacServer:
    """The STAC server in its own process: base URL, request log, fault injection."""

    def __init__(self, root: Path, name: str = "server") -> None:
        self.log = root / f"{name}-requests.jsonl"
        ready = root / f"{name}-port"
        for p in (self.log, ready):
            p.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--root", str(root), "--log", str(self.log),
                                      "--ready", str(ready)])
        t0 = time.time()
        while not ready.exists():
            if self.proc.poll() is not None or time.time() - t0 > 20:
                raise RuntimeError("the STAC test server did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{int(ready.read_text())}"

    def faults(self, **body) -> dict:
        """POST ``body`` to ``/_faults`` (see the server's docstring); returns its answer."""
        req = urllib.request.Request(self.base + "/_faults", method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=5).read())

    def injected(self) -> dict[str, int]:
        return json.loads(urllib.request.urlopen(self.base + "/_faults", timeout=5).read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
