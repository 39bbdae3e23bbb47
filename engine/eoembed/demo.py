"""The offline demo: real Sentinel-2 L2A patches from BigEarthNet, embedded and previewed.

The six example patches ship inside the PyPI package ``bigearthnet-common`` (CDLA-Permissive-1.0
data); they are unpacked into the user cache on first use and never copied into this project.
"""

from __future__ import annotations

import importlib.util
import os
import tarfile
from pathlib import Path

import numpy as np
import rasterio

from .analysis import pca_rgb
from .api import get_embeddings_batch
from .errors import SpecError
from .export import write_geoparquet, write_geotiff
from .export.atomic import atomic_path
from .features import read_places
from .providers.local import LocalProvider
from .specs import BBox, OutputSpec

ARCHIVE = "BigEarthNet-S2-Example.tar.bz2"
FEATURES = Path(__file__).resolve().parents[2] / "resources" / "demo_features.geojson"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eoembed"


def demo_imagery() -> Path:
    """Folder of the unpacked BigEarthNet example patches (unpacked once into the cache)."""
    spec = importlib.util.find_spec("bigearthnet_common")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("the demo imagery comes with the package bigearthnet-common; install it: pip install 'eoembed[demo]'")
    archive = Path(next(iter(spec.submodule_search_locations))) / ARCHIVE
    if not archive.is_file():
        raise SpecError(f"{ARCHIVE} is missing from the installed bigearthnet-common; reinstall that package")
    target = cache_dir() / "bigearthnet-s2-example"
    folder = target / "BigEarthNet-S2-Example"
    stamp = target / ".complete"
    if not stamp.exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:bz2") as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths and links out of target
        stamp.write_text(str(archive.stat().st_size))
    return folder


def _stretch(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) reflectance → uint8 with a 2–98 % stretch per band."""
    out = np.zeros(rgb.shape, np.uint8)
    for i, band in enumerate(rgb):
        lo, hi = np.percentile(band, [2, 98])
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        mem = rasterio.MemoryFile()
        with mem.open(driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8") as ds:
            ds.write(rgb)
            with rasterio.open(tmp, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3,
                               dtype="uint8") as png:
                png.write(ds.read())
        mem.close()


def run_demo(out: Path, model: str = "rcf") -> dict:
    """Embed the demo places (pooled) and each patch (grid), write files and print a summary."""
    imagery = demo_imagery()
    provider = LocalProvider(imagery)
    places = read_places(FEATURES, id_field="id", buffer_m=320.0)
    out.mkdir(parents=True, exist_ok=True)

    pooled = get_embeddings_batch(model, [p.spatial for p in places], source=provider)
    vectors = np.stack([e.to_numpy() for e in pooled])
    parquet = write_geoparquet(
        out / "pooled.parquet", [p.id for p in places], [p.geometry for p in places], vectors, places[0].crs,
        model=model, meta={"model": model, "imagery": "BigEarthNet-S2-Example (bigearthnet-common)"},
    )

    scenes = {s.id: s for s in provider.scenes}
    patch_ids = sorted(scenes)
    boxes = [BBox(*scenes[i].bounds, crs=scenes[i].crs) for i in patch_ids]
    grids = get_embeddings_batch(model, boxes, source=provider, output=OutputSpec.grid())
    tiles, panels = [], []
    for pid, g in zip(patch_ids, grids):
        tiles.append(write_geotiff(g, out / "grids" / f"{pid}.tif"))
        truecolour = _patch_rgb(scenes[pid].bands)
        pca, _ = pca_rgb(g)
        pca = np.asarray(pca)
        if pca.dtype != np.uint8:
            pca = (np.clip(pca, 0, 1) * 255).astype(np.uint8)
        rep = truecolour.shape[1] // pca.shape[1]
        pca_up = np.repeat(np.repeat(pca, rep, axis=1), rep, axis=2)[:, : truecolour.shape[1], : truecolour.shape[2]]
        gap = np.full((3, truecolour.shape[1], 4), 255, np.uint8)
        panels.append(np.concatenate([truecolour, gap, pca_up], axis=2))
    sep = np.full((3, 4, panels[0].shape[2]), 255, np.uint8)
    sheet = np.concatenate([x for p in panels for x in (p, sep)][:-1], axis=1)
    preview = out / "preview.png"
    _write_png(preview, sheet)

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = unit @ unit.T
    labels = {pid: scenes[pid].meta.get("labels", []) for pid in scenes}
    print(f"eoembed demo — model {model}, {len(places)} places on {len(scenes)} real Sentinel-2 L2A patches (BigEarthNet)")
    print(f"  pooled embeddings ({vectors.shape[1]} dims): {parquet}")
    print(f"  grid GeoTIFFs: {out / 'grids'} ({len(tiles)} files, {grids[0].data.shape[1]}×{grids[0].data.shape[2]} cells of {grids[0].grid.res[0]:g} m)")
    print(f"  preview (true colour | PCA-RGB of the grid): {preview}")
    print("  most alike place for each place (cosine similarity), with BigEarthNet land-cover labels:")
    for i, p in enumerate(places):
        j = int(np.argsort(sim[i])[-2])
        pid = p.id.removesuffix("_field")
        other = places[j].id.removesuffix("_field")
        print(f"    {p.id[-12:]:>12} ~ {places[j].id[-12:]:<12} {sim[i, j]:.3f}  [{'; '.join(labels.get(pid, [])[:2])}] ~ [{'; '.join(labels.get(other, [])[:2])}]")
    return {"pooled": parquet, "grids": tiles, "preview": preview, "similarity": sim}


def _patch_rgb(bands: dict) -> np.ndarray:
    """True-colour (B04, B03, B02) uint8 image of a patch at its native 10 m grid."""
    rgb = []
    for b in ("B04", "B03", "B02"):
        path, idx = bands[b]
        with rasterio.open(path) as src:
            rgb.append(src.read(idx).astype(np.float32))
    return _stretch(np.stack(rgb))
