"""Looking at embedding grids in plain numpy: cosine similarity, k-means classes, PCA colours.

This runs in QGIS's own Python (which ships numpy), so it needs no engine. Every function takes
a ``(D, H, W)`` float array (NaN where there is no data) and returns a ``(H, W)`` or
``(3, H, W)`` array on the same cells. The numbers match :mod:`eoembed.analysis`.
"""

from __future__ import annotations

import numpy as np


class GridMathError(ValueError):
    """The computation cannot be done on these values; one sentence for the user."""


def valid_cells(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` True where every band of the cell is finite."""
    return np.isfinite(values).all(axis=0)


def check_reference(reference: np.ndarray, dim: int, name: str = "the reference") -> np.ndarray:
    """`reference` as a float64 ``(D,)`` vector with a direction, or GridMathError."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if ref.shape != (dim,):
        raise GridMathError(f"{name} has {ref.size} values but the grid has {dim} bands; use the same model")
    if not np.isfinite(ref).all():
        raise GridMathError(f"{name} has no data (NaN); pick a cell that has values")
    if not np.linalg.norm(ref) > 0:
        raise GridMathError(f"{name} is the zero vector, which has no direction to compare with")
    return ref


def cosine_similarity(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity ``(H, W)`` of every cell to `reference` in [-1, 1]; NaN without data."""
    d = values.shape[0]
    ref = check_reference(reference, d)
    flat = values.reshape(d, -1).astype(np.float64)
    ok = np.isfinite(flat).all(axis=0)
    norms = np.linalg.norm(np.where(np.isfinite(flat), flat, 0.0), axis=0)
    ok &= norms > 0
    sim = np.full(flat.shape[1], np.nan)
    sim[ok] = (ref @ flat[:, ok]) / (norms[ok] * np.linalg.norm(ref))
    return np.clip(sim, -1.0, 1.0).reshape(values.shape[1:])


def mean_vector(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean vector of the cells where `mask` is True and the grid has data."""
    use = mask & valid_cells(values)
    if not use.any():
        raise GridMathError("the reference covers no grid cell with data; draw it inside the embedding raster")
    return values[:, use].astype(np.float64).mean(axis=1)


def _sq_dist(x: np.ndarray, centers: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    d = x_sq[:, None] - 2.0 * (x @ centers.T) + (centers**2).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def _seed_centres(x: np.ndarray, k: int, rng: np.random.Generator, x_sq: np.ndarray) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to D(x)²."""
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(x.shape[0])]
    closest = _sq_dist(x, centers[:1], x_sq)[:, 0]
    for i in range(1, k):
        total = closest.sum()
        if not total > 0:
            raise GridMathError(f"k={k} is more than the {i} distinct cells with data; choose a smaller k")
        centers[i] = x[rng.choice(x.shape[0], p=closest / total)]
        closest = np.minimum(closest, _sq_dist(x, centers[i:i + 1], x_sq)[:, 0])
    return centers


def kmeans(values: np.ndarray, k: int, seed: int = 0, iters: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Class numbers ``(H, W)`` 0..k-1 (largest class first; NaN without data), Lloyd + k-means++."""
    valid = valid_cells(values)
    x = values[:, valid].T.astype(np.float64)
    if k < 1:
        raise GridMathError(f"k={k} must be at least 1")
    if x.shape[0] < k:
        raise GridMathError(f"k={k} is more than the {x.shape[0]} cells with data; choose a smaller k")
    rng = np.random.default_rng(seed)
    x_sq = (x**2).sum(axis=1)
    centers = _seed_centres(x, k, rng, x_sq)
    labels = np.full(x.shape[0], -1)
    for _ in range(max(1, iters)):
        dist = _sq_dist(x, centers, x_sq)
        new = dist.argmin(axis=1)
        new_centers = centers.copy()
        for j in range(k):
            members = new == j
            if members.any():
                new_centers[j] = x[members].mean(axis=0)
            else:  # an empty class takes the cell farthest from its centre
                far = dist[np.arange(x.shape[0]), new].argmax()
                new_centers[j] = x[far]
                new[far] = j
        shift = np.abs(new_centers - centers).max()
        centers = new_centers
        stable = np.array_equal(new, labels)
        labels = new
        if stable or shift <= tol:
            break
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    rank = np.empty(k, int)
    rank[order] = np.arange(k)
    out = np.full(valid.shape, np.nan)
    out[valid] = rank[labels]
    return out


def pca_rgb(values: np.ndarray, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """The first three principal components as ``(3, H, W)`` uint8 1..255 (2–98 % stretch), 0 = no data.

    Component signs are fixed (largest loading positive), so reruns give the same colours.
    """
    valid = valid_cells(values)
    d = values.shape[0]
    x = values[:, valid].T.astype(np.float64)
    if x.shape[0] < 2:
        raise GridMathError("a PCA view needs at least two grid cells with data")
    fit = x if x.shape[0] <= sample else x[np.random.default_rng(seed).choice(x.shape[0], sample, replace=False)]
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = np.zeros((3, d))
    axes[:min(3, len(vt))] = vt[:3]
    big = np.abs(axes).argmax(axis=1)
    axes *= np.where(axes[np.arange(3), big] < 0, -1.0, 1.0)[:, None]
    scores = (x - mean) @ axes.T
    lo, hi = np.percentile(scores, 2, axis=0), np.percentile(scores, 98, axis=0)
    scaled = (scores - lo) / np.where(hi > lo, hi - lo, 1.0)
    out = np.zeros((3, *valid.shape), np.uint8)
    out[:, valid] = (1 + np.clip(scaled, 0.0, 1.0) * 254).round().astype(np.uint8).T
    return out
