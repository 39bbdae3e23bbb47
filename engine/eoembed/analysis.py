"""Looking at grid embeddings: cosine similarity, PCA colours, k-means classes, text queries.

Pure numpy on :class:`~eoembed.Embedding` grids (no torch, no Qt), so the QGIS plugin can call
these in-process on rasters it reads back. Every map these functions return is a single-band
grid on the input's own pixels (same CRS and transform), NaN where the input has no data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
import shapely.wkt
from pyproj import Transformer

from .embedding import Embedding, grid_dataarray
from .errors import SpecError
from .grid import burn_mask
from .specs import parse_crs


def _check_grid(grid: Embedding, name: str = "grid") -> tuple[np.ndarray, np.ndarray]:
    """Values ``(D, H, W)`` float64 and the valid mask ``(H, W)`` (every band finite)."""
    if not isinstance(grid, Embedding) or not grid.is_grid:
        raise SpecError(f"{name} must be a grid Embedding (OutputSpec.grid() or read_geotiff), not a pooled vector")
    values = grid.to_numpy().astype(np.float64)
    valid = np.isfinite(values).all(axis=0)
    return values, valid


def _single_band(grid: Embedding, values: np.ndarray, band: str, analysis: dict[str, Any]) -> Embedding:
    """A one-band Embedding on `grid`'s pixels, carrying its provenance plus `analysis`."""
    arr = grid_dataarray(values[None].astype(np.float32), grid.grid)
    arr = arr.assign_coords(band=[band])
    meta = {**grid.meta, "analysis": analysis}
    return Embedding(arr, meta)


def _vector(reference: Any, dim: int, name: str = "reference") -> np.ndarray:
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (dim,):
        raise SpecError(f"{name} has {ref.size} values but the grid has {dim} bands; use a vector of the same model")
    if not np.isfinite(ref).all():
        raise SpecError(f"{name} has NaN or infinite values; pick a cell that has data")
    if not np.linalg.norm(ref) > 0:
        raise SpecError(f"{name} is the zero vector, which has no direction to compare with")
    return ref


def cosine_similarity_map(grid: Embedding, reference: np.ndarray) -> Embedding:
    """Cosine similarity of every cell's vector to `reference` ``(D,)``, in ``[-1, 1]``.

    One band named ``similarity``; NaN where the grid has no data or a zero vector.
    """
    values, valid = _check_grid(grid)
    d = values.shape[0]
    ref = _vector(reference, d)
    flat = values.reshape(d, -1)
    norms = np.linalg.norm(np.where(np.isfinite(flat), flat, 0.0), axis=0)
    ok = valid.reshape(-1) & (norms > 0)
    sim = np.full(flat.shape[1], np.nan)
    sim[ok] = (ref @ flat[:, ok]) / (norms[ok] * np.linalg.norm(ref))
    sim = np.clip(sim, -1.0, 1.0).reshape(valid.shape)
    return _single_band(grid, sim, "similarity", {"kind": "cosine_similarity"})


def _to_grid_crs(grid: Embedding, crs: Any | None) -> Transformer | None:
    if crs is None:
        return None
    src, dst = parse_crs(crs), parse_crs(grid.crs, "grid.crs")
    return None if src == dst else Transformer.from_crs(src, dst, always_xy=True)


def reference_at(grid: Embedding, x: float, y: float, crs: Any | None = None) -> np.ndarray:
    """The vector ``(D,)`` of the cell that contains the map coordinate ``(x, y)``.

    `crs` is the coordinate's CRS (default: the grid's). Raises SpecError when the point lies
    outside the grid or on a cell without data.
    """
    values, valid = _check_grid(grid)
    tr = _to_grid_crs(grid, crs)
    gx, gy = tr.transform(x, y) if tr is not None else (float(x), float(y))
    col_f, row_f = ~grid.transform * (gx, gy)
    if not (np.isfinite(col_f) and np.isfinite(row_f)):
        raise SpecError(f"the point ({x}, {y}) cannot be placed on the grid in {grid.crs}")
    col, row = int(np.floor(col_f)), int(np.floor(row_f))
    h, w = valid.shape
    if not (0 <= row < h and 0 <= col < w):
        b = grid.grid.bounds
        raise SpecError(
            f"the point ({gx:.2f}, {gy:.2f}) in {grid.crs} is outside the grid "
            f"(x {b[0]:.2f}..{b[2]:.2f}, y {b[1]:.2f}..{b[3]:.2f}); click inside the embedding raster"
        )
    if not valid[row, col]:
        raise SpecError(f"the grid cell at ({gx:.2f}, {gy:.2f}) has no data; pick a cell that has values")
    return values[:, row, col].astype(np.float32)


def reference_in(grid: Embedding, geometry: shapely.Geometry | str, crs: Any | None = None) -> np.ndarray:
    """The mean vector ``(D,)`` of the cells whose centres lie inside `geometry` (shapely or WKT).

    A point gives the vector of the cell containing it (like :func:`reference_at`); a polygon
    too thin to hold a cell centre uses every cell it touches. Cells without data are ignored.
    """
    values, valid = _check_grid(grid)
    geom = shapely.wkt.loads(geometry) if isinstance(geometry, str) else geometry
    if geom is None or geom.is_empty:
        raise SpecError("the reference geometry is empty; give a point or polygon inside the grid")
    tr = _to_grid_crs(grid, crs)
    if tr is not None:
        geom = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    if geom.geom_type == "Point":
        return reference_at(grid, geom.x, geom.y)
    g = grid.grid
    inside = burn_mask(geom, g, all_touched=False)
    if not (inside & valid).any():
        inside = burn_mask(geom, g, all_touched=True)
    use = inside & valid
    if not use.any():
        raise SpecError(
            f"the reference geometry covers no grid cell with data in {grid.crs}; "
            "draw it inside the embedding raster"
        )
    return values[:, use].mean(axis=1).astype(np.float32)


def _stretch(scores: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map each row of `scores` ``(n, N)`` to 0..255 between its low and high percentiles."""
    lo, hi = np.percentile(scores, percentiles, axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    scaled = (scores - lo[:, None]) / span[:, None]
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def pca_rgb(
    grid: Embedding,
    n: int = 3,
    *,
    percentiles: tuple[float, float] = (2.0, 98.0),
    stretch: bool = True,
    sample: int | None = 200_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` principal components of the grid's cells, for viewing as RGB.

    Returns ``(image, explained)``: `image` is ``(n, H, W)`` uint8 stretched between the given
    percentiles of each component (0 on cells without data), or float64 scores (NaN there) with
    ``stretch=False``; `explained` is each component's share of the total variance ``(n,)``.
    Component signs are fixed so the largest loading is positive, so colours are repeatable.
    On grids with more than `sample` cells, the components (not the projection) are fitted on
    a seeded random sample of that many cells.
    """
    values, valid = _check_grid(grid)
    d = values.shape[0]
    if not 1 <= n <= d:
        raise SpecError(f"n={n} must be between 1 and the number of bands ({d})")
    x = values[:, valid].T  # (N, D)
    if x.shape[0] < 2:
        raise SpecError("PCA needs at least two grid cells with data")
    fit = x
    if sample is not None and x.shape[0] > sample:
        fit = x[np.random.default_rng(seed).choice(x.shape[0], sample, replace=False)]
    mean = fit.mean(axis=0)
    fit = fit - mean
    x = x - mean
    cov = (fit.T @ fit) / (fit.shape[0] - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    comps = evecs[:, :n]
    big = np.abs(comps).argmax(axis=0)
    comps = comps * np.sign(comps[big, np.arange(n)])
    total = evals.sum()
    explained = evals[:n] / total if total > 0 else np.zeros(n)
    scores = (x @ comps).T  # (n, N)
    h, w = valid.shape
    if stretch:
        image = np.zeros((n, h, w), np.uint8)
        image[:, valid] = _stretch(scores, percentiles)
    else:
        image = np.full((n, h, w), np.nan)
        image[:, valid] = scores
    return image, explained


def _sq_dist(x: np.ndarray, centers: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(N, k)``."""
    d = x_sq[:, None] - 2.0 * (x @ centers.T) + (centers**2).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, x_sq: np.ndarray) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn ∝ D(x)²."""
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(x.shape[0])]
    closest = _sq_dist(x, centers[:1], x_sq)[:, 0]
    for i in range(1, k):
        total = closest.sum()
        if not total > 0:
            raise SpecError(f"k={k} is more than the {i} distinct cells with data; choose a smaller k")
        idx = rng.choice(x.shape[0], p=closest / total)
        centers[i] = x[idx]
        closest = np.minimum(closest, _sq_dist(x, centers[i : i + 1], x_sq)[:, 0])
    return centers


def kmeans(grid: Embedding, k: int, seed: int = 0, iters: int = 100, tol: float = 1e-6) -> Embedding:
    """Classify the grid's cells into `k` clusters (Lloyd's k-means, k-means++ seeding).

    Deterministic for a given `seed`. One band named ``cluster`` with labels ``0..k-1``
    (float32 values, NaN on cells without data), ordered by cluster size, largest first.
    `meta["analysis"]` holds the centres' inertia and the iterations used.
    """
    values, valid = _check_grid(grid)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise SpecError(f"k={k!r} must be a whole number of clusters ≥ 1")
    x = values[:, valid].T
    if x.shape[0] < k:
        raise SpecError(f"k={k} is more than the {x.shape[0]} cells with data; choose a smaller k")
    rng = np.random.default_rng(seed)
    x_sq = (x**2).sum(axis=1)
    centers = _kmeans_pp(x, int(k), rng, x_sq)
    labels = np.full(x.shape[0], -1)
    it = 0
    while it < max(1, int(iters)):
        it += 1
        dist = _sq_dist(x, centers, x_sq)
        new = dist.argmin(axis=1)
        new_centers = centers.copy()
        for j in range(int(k)):
            members = new == j
            if members.any():
                new_centers[j] = x[members].mean(axis=0)
            else:  # an empty cluster takes the point farthest from its centre
                far = dist[np.arange(x.shape[0]), new].argmax()
                new_centers[j] = x[far]
                new[far] = j
        shift = np.abs(new_centers - centers).max()
        centers = new_centers
        stable = np.array_equal(new, labels)
        labels = new
        if stable or shift <= tol:
            break
    inertia = float(_sq_dist(x, centers, x_sq)[np.arange(x.shape[0]), labels].sum())
    sizes = np.bincount(labels, minlength=int(k))
    order = np.lexsort((np.arange(int(k)), -sizes))  # largest first, ties by index
    rank = np.empty(int(k), int)
    rank[order] = np.arange(int(k))
    out = np.full(valid.shape, np.nan)
    out[valid] = rank[labels]
    info = {"kind": "kmeans", "k": int(k), "seed": int(seed), "iterations": it, "inertia": inertia,
            "sizes": sizes[order].tolist()}
    return _single_band(grid, out, "cluster", info)


def text_similarity_map(model: str, grid: Embedding, text: str | Sequence[str], **kwargs: Any) -> Embedding:
    """Cosine similarity of every cell to the text embedding of `text` by the CLIP `model`.

    The grid must come from the same model (checked against ``grid.meta["model"]`` when known).
    Several texts are averaged (prompt ensembling). Raises CapabilityError for models without a
    text encoder; `kwargs` (device, weights, model_config) go to :func:`eoembed.embed_text`.
    """
    from .api import embed_text  # api imports the model registry; keep this module light

    made_by = grid.meta.get("model") if isinstance(grid, Embedding) else None
    if made_by and made_by != model:
        raise SpecError(
            f"the grid was made by {made_by!r} but the text query uses {model!r}; "
            "text and image embeddings must come from the same CLIP model"
        )
    vectors = np.asarray(embed_text(model, text, **kwargs), dtype=np.float64)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    result = cosine_similarity_map(grid, vectors.mean(axis=0))
    texts = [text] if isinstance(text, str) else list(text)
    result.meta["analysis"] = {"kind": "text_similarity", "texts": texts}
    return result


__all__ = [
    "cosine_similarity_map",
    "kmeans",
    "pca_rgb",
    "reference_at",
    "reference_in",
    "text_similarity_map",
]
