"""Measure how far one place's grid and embedding move with its CRS and its imagery source.

    PYTHONPATH=engine:tests/engine python scripts/same_ground_report.py [--points 15]

Writes the real tile 637U_59R_1_3 of ../shared/data/s2_l2a_tiles as one COG per band (origin
not on a 10 m multiple), serves it from the loopback STAC server (its own process) and, for
random 640 m squares over it, compares: the square written in EPSG:3857 with the same square in
UTM (local provider), and the STAC provider with the local provider (same COGs, place in
lon/lat). Prints grid offsets (in pixels) and cosine ranges for rcf and Galileo nano. Run it
with PYTHONPATH pointing at another engine to measure that engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=15)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from eoembed.embedders.registry import build_embedder
    from eoembed.providers.local import LocalProvider
    from eoembed.providers.stac import StacProvider
    from eoembed.specs import OutputSpec, SensorSpec
    from test_provider_stac import Server
    from test_same_ground import JUNE, _item, _lonlat, _point, _write_cogs

    tile = SHARED / "data" / "s2_l2a_tiles" / "637U_59R_1_3.tif"
    with rasterio.open(tile) as src:
        px, crs, t = src.read().astype(np.float32), src.crs.to_string(), src.transform
    models = {"rcf": build_embedder("rcf"),
              "galileo-nano": build_embedder("galileo", weights=str(SHARED / "weights" / "galileo_nano"))}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        files = _write_cogs(root / "data", "S2A_T32VNH_20200605", px, crs, t)
        item = _item("S2A_T32VNH_20200605", "2020-06-05T10:40:21Z", crs, t, px.shape[1:], files, proj=True)
        coll = {"type": "Collection", "stac_version": "1.0.0", "id": "s2", "description": "x", "license": "x",
                "links": [], "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                        "temporal": {"interval": [[None, None]]}}}
        (root / "catalog.json").write_text(json.dumps({"collections": [coll], "items": [item]}))
        server = Server(root, name="report")
        try:
            local = LocalProvider(root / "data")
            stac = StacProvider(url=server.base, collection="s2", workers=4)
            rng = np.random.default_rng(0)
            f = {"crs": crs, "transform": t}
            cos: dict[str, dict[str, list[float]]] = {m: {"3857 vs UTM": [], "STAC vs local": []} for m in models}
            offsets, sizes = [], []
            for _ in range(args.points):
                lon, lat = _lonlat(f, *rng.uniform(40, 184, size=2))
                for name, emb in models.items():
                    sensor = emb.sensor_for(SensorSpec())

                    def get(p, place, sensor=sensor):
                        return p.fetch(p.request(place, JUNE, sensor))

                    utm, merc = get(local, _point(crs, lon, lat)), get(local, _point("EPSG:3857", lon, lat))
                    lo, st = get(local, _point("EPSG:4326", lon, lat)), get(stac, _point("EPSG:4326", lon, lat))
                    vec = {k: emb.embed([o], OutputSpec.pooled())[0].to_numpy()
                           for k, o in (("utm", utm), ("merc", merc), ("lo", lo), ("st", st))}
                    c = cos[name]
                    c["3857 vs UTM"].append(_cos(vec["utm"], vec["merc"]))
                    c["STAC vs local"].append(_cos(vec["lo"], vec["st"]))
                    if name == "rcf":
                        dx = (st.grid.transform.c - lo.grid.transform.c) / 10
                        dy = (st.grid.transform.f - lo.grid.transform.f) / 10
                        offsets.append(max(abs(dx), abs(dy)) if st.grid.crs == lo.grid.crs else float("nan"))
                        sizes.append((merc.grid.width, merc.grid.height, st.grid.width, lo.grid.width))
        finally:
            server.stop()
    for name, c in cos.items():
        for k, v in c.items():
            print(f"{name:13s} {k:14s} cosine min {min(v):.6f} max {max(v):.6f}")
    off = np.array(offsets)
    print(f"STAC vs local grid offset (px): min {np.nanmin(off):.3f} max {np.nanmax(off):.3f}; "
          f"{int((off > 1e-6).sum())} of {len(off)} grids differ")
    print("grid sides (3857 place, STAC, local):", sorted(set(sizes)))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


if __name__ == "__main__":
    main()
