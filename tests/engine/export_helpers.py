"""Synthetic imagery and places shared by the batch-export tests (written with rasterio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from eoembed.specs import PointBuffer

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 4_600_000.0)  # top-left corner of the first tile
TILE_PX = 64
RES = 10.0


def write_tiles(folder: Path, n_tiles: int = 2, seed: int = 0) -> list[Path]:
    """`n_tiles` side-by-side 12-band S2-like GeoTIFFs (int16, 10 m, UTM 33N, dated 2022-06-0x)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n_tiles):
        x0 = ORIGIN[0] + k * TILE_PX * RES
        data = rng.integers(200, 4000, size=(12, TILE_PX, TILE_PX)).astype(np.int16)
        path = folder / f"tile{k}.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=TILE_PX, height=TILE_PX, count=12, dtype="int16",
            crs=CRS, transform=Affine(RES, 0, x0, 0, -RES, ORIGIN[1]), nodata=0,
        ) as dst:
            dst.write(data)
            dst.update_tags(datetime=f"2022-06-0{k + 1}T10:00:00")
        paths.append(path)
    return paths


def places(n: int, n_tiles: int = 2, buffer_m: float = 40.0) -> dict[str, PointBuffer]:
    """`n` square places (8×8 px) on a lattice inside the tiles, ids with awkward characters."""
    out = {}
    per_row = 5 * n_tiles
    for i in range(n):
        r, c = divmod(i, per_row)
        x = ORIGIN[0] + 60 + c * 120 + (r % 2) * 10
        y = ORIGIN[1] - 60 - (r % 5) * 120
        out[f"field {i}/a" if i % 7 == 3 else f"p{i:03d}"] = PointBuffer(x, y, buffer_m, crs=CRS)
    return out


def far_place() -> PointBuffer:
    """A place no tile covers (its fetch always fails)."""
    return PointBuffer(ORIGIN[0] + 50_000, ORIGIN[1] - 50_000, 40.0, crs=CRS)
