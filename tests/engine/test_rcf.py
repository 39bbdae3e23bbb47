"""RCF / MOSAIKS features against an independent re-implementation, and their determinism."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
import torch
from affine import Affine
from eoembed.embedders.rcf import RCFEmbedder
from eoembed.errors import ModelError, SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.providers.base import make_observation
from eoembed.specs import OutputSpec

BANDS = ("B02", "B03")
# Published per-band statistics the model card documents (reflectance × 10000).
MEAN = np.array([1395.3, 1338.4], np.float64)
STD = np.array([917.7, 913.3], np.float64)
POOLED, GRID = OutputSpec.pooled(), OutputSpec.grid()


def _obs(values: np.ndarray, valid: np.ndarray | None = None, roi: np.ndarray | None = None):
    c, h, w = values.shape
    grid = GridSpec("EPSG:32633", Affine(10, 0, 500_000, 0, -10, 5_000_000), w, h)
    valid = np.ones((1, h, w), bool) if valid is None else valid[None]
    return make_observation(values[None], valid, grid, BANDS[:c], [date(2022, 6, 1)], roi)


def _rcf(**kw) -> RCFEmbedder:
    kw.setdefault("features", 8)
    kw.setdefault("bands", BANDS)
    return RCFEmbedder(**kw)


def _gaussian_filters(seed: int, n: int, c: int, k: int) -> np.ndarray:
    """The documented recipe: seeded standard normal draws scaled by 1/sqrt(c·k·k)."""
    w = torch.randn(n, c, k, k, generator=torch.Generator().manual_seed(seed)).numpy()
    return w.astype(np.float64) / math.sqrt(c * k * k)


def _features_by_hand(img: np.ndarray, valid: np.ndarray, filters: np.ndarray, bias: float) -> np.ndarray:
    """(C, H, W) image → (2K, H, W) features with explicit loops: standardise, zero-pad, correlate."""
    c, h, w = img.shape
    n, _, k, _ = filters.shape
    z = (img.astype(np.float64) - MEAN[:c, None, None]) / STD[:c, None, None] * valid
    p = k // 2
    zp = np.pad(z, ((0, 0), (p, p), (p, p)))
    r = np.zeros((n, h, w))
    for f in range(n):
        for y in range(h):
            for x in range(w):
                r[f, y, x] = np.sum(zp[:, y : y + k, x : x + k] * filters[f])
    return np.concatenate([np.maximum(r - bias, 0), np.maximum(-r - bias, 0)])


def _image(h: int = 5, w: int = 6, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 4000, size=(2, h, w)).astype(np.float32)


def test_pooled_vector_equals_a_hand_computation():
    img = _image()
    valid = np.ones((5, 6), bool)
    valid[2, 3] = False  # invalid pixels sit at the band mean and are left out of the pool
    emb = _rcf(seed=3, bias=0.5)
    vec = emb.embed([_obs(img, valid)], POOLED)[0].to_numpy()
    feats = _features_by_hand(img, valid, _gaussian_filters(3, 4, 2, 3), 0.5)
    want = feats[:, valid].mean(axis=1)
    assert vec.shape == (8,)
    np.testing.assert_allclose(vec, want, rtol=1e-5, atol=1e-6)
    assert (want > 0).any()  # not a trivially zero comparison
    vmax = emb.embed([_obs(img, valid)], OutputSpec.pooled("max"))[0].to_numpy()
    np.testing.assert_allclose(vmax, feats[:, valid].max(axis=1), rtol=1e-5, atol=1e-6)


def test_grid_cells_average_grid_cell_pixels_and_carry_the_transform():
    img = _image(10, 9)
    emb = _rcf(seed=0, grid_cell=4)
    out = emb.embed([_obs(img)], GRID)[0]
    feats = _features_by_hand(img, np.ones((10, 9)), _gaussian_filters(0, 4, 2, 3), 1.0)
    assert out.data.shape == (8, 3, 3)  # ceil(10/4) × ceil(9/4)
    for cy in range(3):
        for cx in range(3):
            block = feats[:, 4 * cy : 4 * cy + 4, 4 * cx : 4 * cx + 4]  # edge cells are clipped
            np.testing.assert_allclose(out.to_numpy()[:, cy, cx], block.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert out.transform == Affine(40, 0, 500_000, 0, -40, 5_000_000)
    assert out.crs == "EPSG:32633"
    np.testing.assert_array_equal(out.data.x.values, [500_020, 500_060, 500_100])
    np.testing.assert_array_equal(out.data.y.values, [4_999_980, 4_999_940, 4_999_900])


def test_same_seed_gives_identical_vectors_and_another_seed_does_not():
    obs = _obs(_image())
    a = _rcf(seed=7).embed([obs], POOLED)[0].to_numpy()
    b = _rcf(seed=7).embed([obs], POOLED)[0].to_numpy()
    c = _rcf(seed=8).embed([obs], POOLED)[0].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_gaussian_filters_have_unit_response_variance_statistics():
    emb = RCFEmbedder(features=4096, seed=0)  # 2048 filters × 10 bands × 3 × 3
    emb.load()
    w = emb._filters.numpy()
    assert w.shape == (2048, 10, 3, 3)
    # i.i.d. N(0, 1/90): the sample mean and std of 184 320 draws are within a few standard errors
    assert abs(w.mean()) < 4 / math.sqrt(w.size) / math.sqrt(90)
    assert w.std() == pytest.approx(1 / math.sqrt(90), rel=0.01)
    # each filter's response to unit-variance white noise then has variance ≈ 1
    z = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(1))
    r = torch.nn.functional.conv2d(z, emb._filters)
    assert float(r.var()) == pytest.approx(1.0, rel=0.05)


def test_batch_equals_one_at_a_time():
    obs = [_obs(_image(seed=s)) for s in range(3)]
    emb = _rcf(seed=1)
    batch = np.stack([e.to_numpy() for e in emb.embed(obs, POOLED)])
    single = np.stack([emb.embed([o], POOLED)[0].to_numpy() for o in obs])
    np.testing.assert_allclose(batch, single, rtol=1e-6, atol=1e-7)


def test_masked_pooling_uses_only_pixels_inside_the_place():
    # kernel 1 makes features pointwise, so the left half's pool is the feature of its value
    img = np.empty((2, 6, 8), np.float32)
    img[:, :, :4] = np.array([500.0, 2500.0])[:, None, None]
    img[:, :, 4:] = np.array([3000.0, 100.0])[:, None, None]
    left = np.zeros((6, 8), bool)
    left[:, :4] = True
    emb = _rcf(kernel_size=1, seed=2, bias=0.1)
    masked = emb.embed([_obs(img, roi=left)], POOLED)[0].to_numpy()
    only_left = emb.embed([_obs(img[:, :, :4])], POOLED)[0].to_numpy()
    whole = emb.embed([_obs(img)], POOLED)[0].to_numpy()
    np.testing.assert_allclose(masked, only_left, rtol=1e-6)
    assert not np.allclose(masked, whole)
    z = (np.array([500.0, 2500.0]) - MEAN) / STD
    r = _gaussian_filters(2, 4, 2, 1)[:, :, 0, 0] @ z
    np.testing.assert_allclose(masked, np.concatenate([np.maximum(r - 0.1, 0), np.maximum(-r - 0.1, 0)]),
                               rtol=1e-5, atol=1e-6)


def test_large_place_in_stripes_equals_a_direct_computation():
    h = w = 740  # 547 600 px: more than the 8 × 256² that one batched pass takes
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 4000, size=(2, h, w)).astype(np.float32)
    valid = rng.random((h, w)) > 0.05
    roi = np.zeros((h, w), bool)
    roi[100:650, 37:700] = True
    emb = _rcf(seed=4, grid_cell=4)
    obs = _obs(img, valid, roi)
    emb.load()
    filters = torch.from_numpy(_gaussian_filters(4, 4, 2, 3).astype(np.float32))
    z = (torch.from_numpy(img)[None] - torch.tensor(MEAN, dtype=torch.float32).view(1, 2, 1, 1)) / torch.tensor(
        STD, dtype=torch.float32).view(1, 2, 1, 1) * torch.from_numpy(valid)[None, None]
    r = torch.nn.functional.conv2d(z, filters, padding=1)
    feats = torch.cat([torch.relu(r - 1), torch.relu(-r - 1)], 1)[0].numpy()
    m = roi & valid
    mean = emb.embed([obs], POOLED)[0].to_numpy()
    np.testing.assert_allclose(mean, feats[:, m].mean(axis=1), rtol=1e-4, atol=1e-6)
    vmax = emb.embed([obs], OutputSpec.pooled("max"))[0].to_numpy()
    np.testing.assert_allclose(vmax, feats[:, m].max(axis=1), rtol=1e-5)
    grid = emb.embed([obs], GRID)[0]
    want = feats.reshape(8, h // 4, 4, w // 4, 4).mean(axis=(2, 4))
    assert grid.data.shape == (8, 185, 185)
    np.testing.assert_allclose(grid.to_numpy(), want, rtol=1e-4, atol=1e-6)


def test_empirical_filters_fit_deterministically_and_roundtrip_through_a_file(tmp_path):
    obs = [_obs(_image(12, 12, seed=s)) for s in range(2)]
    a = _rcf(mode="empirical", seed=5)
    va = a.embed(obs, POOLED)
    b = _rcf(mode="empirical", seed=5)
    vb = b.embed(obs, POOLED)
    np.testing.assert_array_equal(va[0].to_numpy(), vb[0].to_numpy())
    assert a.weights_info["source"] == "empirical"
    path = a.save_filters(tmp_path / "filters.npz")
    c = _rcf(mode="empirical", seed=99, weights=str(path))  # the file decides, not the seed
    vc = c.embed(obs, POOLED)
    np.testing.assert_array_equal(vc[1].to_numpy(), va[1].to_numpy())
    assert c.weights_info["sha256"] == a.weights_info["sha256"]
    # a file for other bands or sizes is refused with the shapes in the message
    with pytest.raises(WeightsError, match="features/kernel_size/bands"):
        _rcf(mode="empirical", features=16, weights=str(path)).load()
    with pytest.raises(WeightsError, match="could not be read"):
        _rcf(weights=str(tmp_path / "missing.npz")).load()


def test_empirical_filters_are_whitened_patches():
    # The stored filter Wᵀ W p applied to a patch q equals <W q, W p>: check against an
    # independent whitening of the same sampled patches (covariance + eps·max eigenvalue).
    obs = [_obs(_image(12, 12, seed=9))]
    emb = _rcf(mode="empirical", seed=0, kernel_size=1)
    emb.fit(obs)
    f = emb._filters.numpy()[:, :, 0, 0].astype(np.float64)  # (4, 2)
    img = obs[0].values()[0].astype(np.float64)
    z = ((img - MEAN[:, None, None]) / STD[:, None, None]).reshape(2, -1).T  # (144, 2)
    perm = torch.randperm(144, generator=torch.Generator().manual_seed(0)).numpy()
    sample = z[perm[: max(4, 40)]]
    cov = np.cov(sample.T)
    evals, evecs = np.linalg.eigh(cov)
    wh = evecs @ np.diag(1 / np.sqrt(evals + 1e-2 * evals.max())) @ evecs.T
    np.testing.assert_allclose(f, sample[:4] @ wh.T @ wh, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("h, w, have", [(2, 3, 0), (3, 4, 2)])
def test_empirical_fit_needs_enough_patches(h, w, have):
    with pytest.raises(ModelError, match=f"needs at least 8 patches of 3×3 px to fit, the imagery gives {have}"):
        _rcf(mode="empirical", features=16).embed([_obs(_image(h, w))], POOLED)


def test_describe_loads_nothing_and_reports_the_config():
    emb = _rcf(seed=11)
    card = emb.describe()
    assert emb._filters is None
    assert (card.id, card.dim, card.bands, card.outputs) == ("rcf", 8, BANDS, ("pooled", "grid"))
    assert card.config["seed"] == 11 and card.grid_cell_px == 4
    np.testing.assert_allclose(card.preprocessing["mean"], MEAN)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"mode": "learned"}, "mode="), ({"features": 7}, "even"), ({"features": 0}, "even"),
     ({"features": 16386}, "16384"), ({"kernel_size": 2}, "kernel_size"), ({"grid_cell": 0}, "grid_cell"),
     ({"grid_cell": 65}, "grid_cell"), ({"bias": math.inf}, "bias"), ({"bands": ("B99",)}, "B99"),
     ({"batch_size": 0}, "batch_size")],
)
def test_bad_configuration_is_a_spec_error(kwargs, word):
    with pytest.raises(SpecError, match=word):
        RCFEmbedder(**kwargs)
