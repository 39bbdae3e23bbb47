"""Grid embeddings as GeoTIFF (tiled, compressed, COG-friendly), one band per embedding dim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from ..embedding import Embedding, grid_dataarray
from ..errors import ExportError
from ..grid import GridSpec
from ..providers.redact import scrub
from .atomic import atomic_path

NODATA = float("nan")


def write_geotiff(embedding: Embedding, path: str | Path, *, compress: str = "deflate") -> Path:
    """Write a grid Embedding to `path` atomically; bands are named ``emb_0000``…, meta in tags."""
    if not embedding.is_grid:
        raise ExportError("only grid embeddings can be written as GeoTIFF; write pooled ones as GeoParquet")
    data = embedding.to_numpy()
    d, h, w = data.shape
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": d, "height": h, "width": w,
        "crs": CRS.from_user_input(embedding.crs), "transform": embedding.transform, "nodata": NODATA,
        "compress": compress, "predictor": 3 if compress in ("deflate", "lzw", "zstd") else 1,
        "interleave": "pixel" if d <= 4 else "band",
    }
    if h >= 16 and w >= 16:
        profile.update(tiled=True, blockxsize=_block(w), blockysize=_block(h))
    path = Path(path)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(embedding.data.coords["band"].values, start=1):
            dst.set_band_description(i, str(name))
        dst.update_tags(eoembed_meta=json.dumps(scrub(embedding.meta), default=str))
    return path


def _block(n: int) -> int:
    for b in (512, 256, 128, 64, 32, 16):
        if n >= b:
            return b
    return 16


def read_geotiff(path: str | Path) -> Embedding:
    """Read a GeoTIFF written by :func:`write_geotiff` back into a grid Embedding."""
    try:
        with rasterio.open(path) as src:
            data = src.read(out_dtype=np.float32)
            grid = GridSpec(src.crs.to_string(), Affine(*tuple(src.transform)[:6]), src.width, src.height)
            meta = json.loads(src.tags().get("eoembed_meta", "{}"))
            names = [d or f"emb_{i:04d}" for i, d in enumerate(src.descriptions)]
    except rasterio.errors.RasterioIOError as exc:
        raise ExportError(f"{path} is not a readable GeoTIFF ({exc})") from exc
    arr = grid_dataarray(data, grid)
    arr = arr.assign_coords(band=names)
    return Embedding(arr, meta)
