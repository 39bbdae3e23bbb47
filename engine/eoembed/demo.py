"""The offline demo: real Sentinel-2 L2A patches from BigEarthNet, embedded and previewed.

The six example patches ship inside the PyPI package ``bigearthnet-common`` (CDLA-Permissive-1.0
data); they are unpacked into the user cache on first use and never copied into this project.
"""

from __future__ import annotations

import importlib.util
import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

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
            tar.extractall(target, members=_safe_members(tar, target))
        stamp.write_text(str(archive.stat().st_size))
    return folder


def _safe_members(tar: tarfile.TarFile, target: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders that stay inside `target` (no links, devices or ../ escapes)."""
    root = target.resolve()
    members = []
    for m in tar.getmembers():
        dest = (root / m.name).resolve()
        if not (m.isfile() or m.isdir()) or (dest != root and root not in dest.parents):
            raise SpecError(f"{ARCHIVE} holds an unsafe entry {m.name!r}; reinstall bigearthnet-common")
        members.append(m)
    return members


def _labels(labels: list[str], width: int = 34) -> str:
    text = "; ".join(labels)
    return text if len(text) <= width else text[: width - 1] + "…"


def _stretch(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) reflectance → uint8 with a 2–98 % stretch per band."""
    out = np.zeros(rgb.shape, np.uint8)
    for i, band in enumerate(rgb):
        lo, hi = np.percentile(band, [2, 98])
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return out


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a preview has no place
        with rasterio.open(tmp, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3,
                           dtype="uint8") as png:
            png.write(rgb)


def run_demo(out: Path, model: str = "rcf") -> dict:
    """Embed the demo places (pooled) and each patch (grid), write files and print a summary."""
    return _run_demo(out, model)


def _run_demo(out: Path, model: str) -> dict:
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

    # Similarity of features centred on the places' mean: RCF features are all positive, so raw
    # cosines crowd near 1; centring shows which places are alike relative to the others.
    centred = vectors - vectors.mean(axis=0)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    labels = {pid: scenes[pid].meta.get("labels", []) for pid in scenes}
    short = {p.id: "_".join(p.id.split("_")[-2:]) if not p.id.endswith("_field") else "_".join(p.id.split("_")[-3:]) for p in places}
    print(f"eoembed demo — model {model}, {len(places)} places on {len(scenes)} real Sentinel-2 L2A patches (BigEarthNet)")
    print(f"  pooled embeddings ({vectors.shape[1]} dims): {parquet}")
    cells = grids[0].data.shape
    print(f"  grid GeoTIFFs: {out / 'grids'} ({len(tiles)} files, {cells[1]}×{cells[2]} cells of {grids[0].grid.res[0]:g} m)")
    print(f"  preview (true colour | PCA-RGB of the grid, one row per patch): {preview}")
    print("  most alike place for each place (centred cosine similarity) and BigEarthNet labels:")
    for i, p in enumerate(places):
        j = int(np.argsort(sim[i])[-2])
        mine = labels.get(p.id.removesuffix("_field"), [])
        theirs = labels.get(places[j].id.removesuffix("_field"), [])
        print(f"    {short[p.id]:>11} ~ {short[places[j].id]:<11} {sim[i, j]:+.2f}   {_labels(mine)}  ~  {_labels(theirs)}")
    return {"pooled": parquet, "grids": tiles, "preview": preview, "similarity": sim}


def _patch_rgb(bands: dict) -> np.ndarray:
    """True-colour (B04, B03, B02) uint8 image of a patch at its native 10 m grid."""
    rgb = []
    for b in ("B04", "B03", "B02"):
        path, idx = bands[b]
        with rasterio.open(path) as src:
            rgb.append(src.read(idx).astype(np.float32))
    return _stretch(np.stack(rgb))
