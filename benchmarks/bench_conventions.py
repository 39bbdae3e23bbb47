"""How much eoembed's embeddings differ from what rs-embed's conventions would give, measured.

On each real Sentinel-2 L2A tile in ``../shared/data/s2_l2a_tiles`` (centre of the tile):

* ``footprint`` — ``PointBuffer(lon, lat, 640)`` as eoembed reads it (a 1280 m ground square on
  the tile's UTM pixels) against the ground area rs-embed samples for the same numbers: ±640 units
  of EPSG:3857, i.e. a square of 1280·k ground metres, k ≈ cos(lat). Both read through eoembed's
  local provider on 10 m ground pixels (the second as ``BBox(..., crs="EPSG:3857")``), so only the
  footprint differs.
* ``galileo inputs`` — Galileo-nano with its published per-band statistics (eoembed) against the
  same pixels scaled by 1/10000 only (an un-standardised input path).

Reported: the ground side of each square (geodesic), cosine similarity and relative L2 distance
of the pooled embeddings. Usage::

    .venv/bin/python benchmarks/bench_conventions.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import eoembed
import numpy as np
import rasterio
from eoembed.embedders.registry import build_embedder
from eoembed.specs import BBox, PointBuffer, TemporalSpec
from pyproj import Geod, Transformer

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
WINDOW = TemporalSpec.year(2022)
HALF = 640.0


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _ground_side(bbox_3857: BBox) -> float:
    to_deg = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    y = (bbox_3857.miny + bbox_3857.maxy) / 2
    (w, e), (sw, se) = to_deg.transform([bbox_3857.minx, bbox_3857.maxx], [y, y])
    return Geod(ellps="WGS84").inv(w, sw, e, se)[2]


def main() -> None:
    tiles = sorted((SHARED / "data" / "s2_l2a_tiles").glob("*.tif"))
    rcf = build_embedder("rcf")
    nano = SHARED / "weights" / "galileo_nano"
    galileo = build_embedder("galileo-nano", weights=str(nano))
    raw = build_embedder("galileo-nano", weights=str(nano))
    raw.load()
    raw._norm_mean = [5000.0] * len(raw._norm_mean)  # (x − (m − 2s)) / 4s = x / 10000
    raw._norm_std = [2500.0] * len(raw._norm_std)
    rows = []
    for tile in tiles:
        with rasterio.open(tile) as src:
            cx, cy = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
            lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
        x, y = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)
        ours = PointBuffer(lon=lon, lat=lat, buffer_m=HALF)
        theirs = BBox(x - HALF, y - HALF, x + HALF, y + HALF, crs="EPSG:3857")
        row = {"tile": tile.name, "lat": round(lat, 3), "ground_side_m": {
            "eoembed": 2 * HALF, "epsg3857": round(_ground_side(theirs), 1)}}
        for name, emb in (("rcf", rcf), ("galileo-nano", galileo)):
            a = eoembed.get_embedding(emb, ours, WINDOW, source=str(tile)).to_numpy()
            b = eoembed.get_embedding(emb, theirs, WINDOW, source=str(tile)).to_numpy()
            row[f"footprint_{name}"] = {"cosine": round(_cos(a, b), 4), "rel_l2": round(_rel(a, b), 4)}
        a = eoembed.get_embedding(galileo, ours, WINDOW, source=str(tile)).to_numpy()
        b = eoembed.get_embedding(raw, ours, WINDOW, source=str(tile)).to_numpy()
        row["galileo_inputs"] = {"cosine": round(_cos(a, b), 4), "rel_l2": round(_rel(a, b), 4)}
        rows.append(row)
        print(json.dumps(row))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "conventions.json").write_text(json.dumps(rows, indent=1))
    lats = [abs(r["lat"]) for r in rows]
    print(f"cos(lat) over the tiles: {', '.join(f'{math.cos(math.radians(v)):.3f}' for v in lats)}")


if __name__ == "__main__":
    main()
