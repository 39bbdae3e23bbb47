"""Galileo encoder: exact blocks, flexible patches, masking, and the real nano weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eoembed.nn.galileo import (
    NORM_MEAN_13,
    NORM_STD_13,
    SPACE_TIME_BANDS,
    SPACE_TIME_GROUPS,
    Block,
    FlexiPatchEmbed,
    GalileoConfig,
    GalileoEncoder,
    load_normalization,
    ndvi,
    normalize_space_time,
    sincos_2d,
)
from eoembed.weights import load_checkpoint

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
NANO = SHARED / "weights" / "galileo_nano"
TILES_DIR = SHARED / "data" / "s2_l2a_tiles"
needs_nano = pytest.mark.skipif(not (NANO / "encoder.pt").is_file(),
                                reason="shared Galileo nano weights absent")
needs_tiles = pytest.mark.skipif(not TILES_DIR.is_dir(), reason="shared S2 tiles absent")

# acquisition month of each shared tile (shared/README.md), 1 = January
TILE_MONTHS = {"282D_485L_3_3": 7, "38D_378R_2_3": 6, "433D_629L_3_1": 4,
               "609U_541L_3_0": 1, "637U_59R_1_3": 10}
SNOW = "609U_541L_3_0"
# 12-band files B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12 → B2..B8A, B11, B12
S2_OF_FILE = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
S1_ONLY = torch.tensor([True] + [False] * 6)  # mask Sentinel-1, keep the S2 groups and NDVI

TINY = GalileoConfig(embedding_size=16, depth=2, num_heads=4, mlp_ratio=2,
                     max_sequence_length=6, max_patch_size=4)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def _tiny_inputs(b=3, size=8, t=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, size, size, t, len(SPACE_TIME_BANDS), generator=gen)
    months = torch.randint(0, 12, (b, t), generator=gen)
    return x, months


# --------------------------------------------------------------------------- building blocks


def test_block_matches_hand_written_attention():
    torch.manual_seed(0)
    dim, heads = 16, 4
    block = _randomised(Block(dim, heads, mlp_ratio=2))
    x = torch.randn(2, 5, dim)
    key_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])

    def ln(v, mod):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * mod.weight + mod.bias

    a = block.attn
    y = ln(x, block.norm1)
    q = torch.einsum("bnd,ed->bne", y, a.q.weight) + a.q.bias
    k = torch.einsum("bnd,ed->bne", y, a.k.weight) + a.k.bias
    v = torch.einsum("bnd,ed->bne", y, a.v.weight) + a.v.bias
    split = lambda z: z.reshape(2, 5, heads, dim // heads)  # noqa: E731
    scores = torch.einsum("bqhc,bkhc->bhqk", split(q), split(k)) / math.sqrt(dim // heads)
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    attn = torch.einsum("bhqk,bkhc->bqhc", scores.softmax(-1), split(v)).reshape(2, 5, dim)
    x1 = x + torch.einsum("bnd,ed->bne", attn, a.proj.weight) + a.proj.bias
    hidden = ln(x1, block.norm2) @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    expected = x1 + hidden @ block.mlp.fc2.weight.T + block.mlp.fc2.bias

    with torch.no_grad():
        got = block(x, key_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_spatial_encoding_first_half_columns_second_half_rows():
    dim, ratio = 32, 4.0
    emb = sincos_2d(dim, 2, 3, ratio)
    omega = torch.tensor([1 / 10000 ** (i / 16 / 2) for i in range(8)])
    for i in range(2):
        for j in range(3):
            col, row = j * ratio * omega, i * ratio * omega
            expected = torch.cat([col.sin(), col.cos(), row.sin(), row.cos()])
            torch.testing.assert_close(emb[i, j], expected, atol=1e-6, rtol=0)


def test_flexi_patch_full_size_uses_stored_kernel():
    embed = _randomised(FlexiPatchEmbed(3, 8, max_patch_size=8))
    assert embed.kernel(8) is embed.proj.weight
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(embed(x, 8), F.conv2d(x, embed.proj.weight, embed.proj.bias,
                                                     stride=8))


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 6, 7])
def test_flexi_patch_resized_kernel_sees_resized_patch_like_the_original(p):
    """FlexiViT's invariant: for any 8x8 patch in the span of the resize's adjoint, the token of
    its bicubic resize to p x p with the resized kernel equals the token of the 8x8 patch."""
    embed = _randomised(FlexiPatchEmbed(2, 6, max_patch_size=8), seed=p)

    def resize(u):
        return F.interpolate(u, size=(p, p), mode="bicubic", antialias=True)

    z = torch.randn(1, 2, p, p)
    u = torch.zeros(1, 2, 8, 8, requires_grad=True)
    (patch,) = torch.autograd.grad((resize(u) * z).sum(), u)  # patch = resize-adjoint(z)
    with torch.no_grad():
        full = embed(patch, 8)
        small = embed(resize(patch), p)
    assert small.shape == full.shape == (1, 6, 1, 1)
    torch.testing.assert_close(small, full, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- encoder behaviour


def test_forward_shapes_and_determinism():
    model = _randomised(GalileoEncoder(TINY))
    x, months = _tiny_inputs()
    with torch.inference_mode():
        tokens, mask = model(x, months, 2, S1_ONLY)
        again, _ = model(x, months, 2, S1_ONLY)
        pooled, grid = model.embed(x, months, 2, S1_ONLY)
        alone, grid_alone = model.embed(x[1:2], months[1:2], 2, S1_ONLY)
    assert tokens.shape == (3, 4, 4, 2, 7, 16) and mask.shape == (3, 4, 4, 2, 7)
    assert torch.equal(tokens, again)
    assert torch.all(tokens[mask] == 0) and mask[..., 0].all() and not mask[..., 1:].any()
    assert pooled.shape == (3, 16) and grid.shape == (3, 16, 4, 4)
    torch.testing.assert_close(alone, pooled[1:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grid_alone, grid[1:2], atol=1e-5, rtol=1e-5)
    # pooled is the mean of the visible output tokens, grid the per-patch mean
    visible = tokens[0][~mask[0]]
    torch.testing.assert_close(pooled[0], visible.mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grid[0, :, 1, 2], tokens[0, 1, 2, :, 1:].reshape(-1, 16).mean(0),
                               atol=1e-6, rtol=1e-5)


def test_masked_inputs_do_not_change_visible_outputs():
    model = _randomised(GalileoEncoder(TINY))
    x, months = _tiny_inputs()
    noisy = x.clone()
    noisy[..., 0:2] = torch.randn_like(noisy[..., 0:2]) * 100  # the masked S1 bands
    with torch.inference_mode():
        base = model.embed(x, months, 2, S1_ONLY)
        other = model.embed(noisy, months, 2, S1_ONLY)
        unmasked = model.embed(noisy, months, 2)
    for a, b in zip(base, other):
        assert torch.equal(a, b)
    assert not torch.allclose(unmasked[0], base[0], atol=1e-3)


def test_per_item_masks_equal_running_each_item_alone():
    """Different masks across the batch take the padded path; each item must come out as if it
    had been encoded alone (where the mask pattern is uniform)."""
    model = _randomised(GalileoEncoder(TINY))
    x, months = _tiny_inputs()
    mask = S1_ONLY.expand(3, 4, 4, 2, 7).clone()
    mask[0, :2, :, :, 1:4] = True  # item 0: S2 RGB/red-edge/NIR missing in the top half
    mask[2, :, :, 1, :] = True  # item 2: second frame missing entirely
    mask[2, 3, 3] = True  # ... and one patch missing everywhere
    x_garbage = x.clone()
    x_garbage[2, 6:, 6:] = 1e6  # the pixels of that patch: must not leak anywhere
    with torch.inference_mode():
        pooled, grid = model.embed(x_garbage, months, 2, mask)
        for i in range(3):
            p_i, g_i = model.embed(x[i:i + 1], months[i:i + 1], 2, mask[i:i + 1])
            torch.testing.assert_close(pooled[i:i + 1], p_i, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(g_i, grid[i:i + 1], atol=1e-5, rtol=1e-5,
                                       equal_nan=True)
    assert torch.isnan(grid[2, :, 3, 3]).all()
    assert not torch.isnan(grid[2, :, :3]).any() and not torch.isnan(grid[:2]).any()


def test_months_and_patch_positions_matter():
    model = _randomised(GalileoEncoder(TINY))
    x, months = _tiny_inputs()
    with torch.inference_mode():
        base = model.embed(x, months, 2, S1_ONLY)[0]
        shifted = model.embed(x, (months + 3) % 12, 2, S1_ONLY)[0]
        coarse = model.embed(x, months, 2, S1_ONLY, input_resolution_m=20.0)[0]
    assert not torch.allclose(base, shifted, atol=1e-4)
    assert not torch.allclose(base, coarse, atol=1e-4)


def test_invalid_inputs_raise():
    model = GalileoEncoder(TINY)
    x, months = _tiny_inputs()
    with pytest.raises(ValueError, match="multiple of patch size"):
        model(x, months, 3)
    with pytest.raises(ValueError, match="patch_size must be in"):
        model(x, months, 8)
    with pytest.raises(ValueError, match="13 bands"):
        model(x[..., :12], months, 2)


# --------------------------------------------------------------------------- preprocessing


def test_normalisation_formula_and_ndvi():
    raw = torch.zeros(2, len(SPACE_TIME_BANDS))
    raw[0] = torch.tensor(NORM_MEAN_13)
    raw[1, 4], raw[1, 8] = 1000.0, 3000.0  # B4, B8
    raw[1, 12] = ndvi(raw[1, 8], raw[1, 4])
    out = normalize_space_time(raw)
    # the mean maps to the middle of [mean - 2 std, mean + 2 std]
    torch.testing.assert_close(out[0, :12], torch.full((12,), 0.5))
    assert out[0, 12] == pytest.approx(NORM_MEAN_13[12])  # NDVI passes through
    b4 = SPACE_TIME_BANDS.index("B4")
    expected = (1000.0 - (NORM_MEAN_13[b4] - 2 * NORM_STD_13[b4])) / (4 * NORM_STD_13[b4])
    assert out[1, b4] == pytest.approx(expected, rel=1e-5)
    assert out[1, 12] == pytest.approx(0.5)
    assert ndvi(torch.tensor(0.0), torch.tensor(0.0)) == 0


@needs_nano
def test_module_constants_equal_published_normalisation():
    mean, std = load_normalization(NANO / "normalization.json")
    assert mean == pytest.approx(NORM_MEAN_13, rel=0, abs=0)
    assert std == pytest.approx(NORM_STD_13, rel=0, abs=0)


# --------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def nano() -> GalileoEncoder:
    if not (NANO / "encoder.pt").is_file():
        pytest.skip("shared Galileo nano weights absent")
    state = load_checkpoint(NANO / "encoder.pt")
    return GalileoEncoder.from_pretrained(state, json.loads((NANO / "config.json").read_text()))


@needs_nano
def test_real_nano_weights_load_strictly_and_fixed_tables_match(nano):
    state = load_checkpoint(NANO / "encoder.pt")
    assert len(state) == 106
    assert set(nano.state_dict()) == set(state)
    assert 1.0e6 < sum(v.numel() for v in state.values()) < 1.1e6
    fresh = GalileoEncoder(GalileoConfig.from_json(NANO / "config.json"))
    # our sin/cos timestep and month tables reproduce the ones stored in the checkpoint
    torch.testing.assert_close(fresh.pos_embed, state["pos_embed"], atol=1e-6, rtol=0)
    torch.testing.assert_close(fresh.month_embed.weight, state["month_embed.weight"],
                               atol=1e-6, rtol=0)
    # keys with a stray ".backbone" (as some releases have) load the same
    renamed = {k.replace("blocks.0.", "blocks.0.backbone."): v for k, v in state.items()}
    GalileoEncoder.from_pretrained(renamed, GalileoConfig.from_json(NANO / "config.json"))


def _tile_batch(size: int = 64) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Top-left size² crops of the shared tiles as normalised [B, H, W, 1, 13] + months."""
    rasterio = pytest.importorskip("rasterio")
    names, frames = sorted(TILE_MONTHS), []
    for name in names:
        with rasterio.open(TILES_DIR / f"{name}.tif") as src:
            s2 = src.read(window=((0, size), (0, size))).astype(np.float32)[S2_OF_FILE]
        s2_t = torch.from_numpy(s2).permute(1, 2, 0)
        x = torch.zeros(size, size, len(SPACE_TIME_BANDS))
        x[..., 2:12] = s2_t
        x[..., 12] = ndvi(s2_t[..., 6], s2_t[..., 2])
        frames.append(x)
    months = torch.tensor([[TILE_MONTHS[n] - 1] for n in names])
    return names, normalize_space_time(torch.stack(frames)[:, :, :, None]), months


# Reference outputs of the upstream implementation (nasaharvest/galileo single_file_galileo.py,
# commit 0f0b5b9, float64 numpy preprocessing) on the same crops: pooled[:, :4] and the grid
# cell at row 2, column 5, channels :3.
UPSTREAM_POOLED = [[0.041982, -0.060719, 0.202102, -0.011002],
                   [0.017877, 0.056039, 0.206175, 0.058733],
                   [0.112559, -0.017714, 0.198187, 0.031532],
                   [-0.035484, -0.041993, 0.202625, 0.076866],
                   [0.042489, -0.018626, 0.246389, 0.00874]]
UPSTREAM_GRID_2_5 = [[0.084891, -0.086998, 0.155898],
                     [0.055915, 0.034829, 0.189003],
                     [0.162044, 0.002114, 0.175173],
                     [0.020608, -0.042282, 0.144728],
                     [0.042262, -0.06213, 0.17794]]


@needs_nano
@needs_tiles
def test_real_tiles_match_upstream_and_snow_is_the_outlier(nano):
    names, x, months = _tile_batch()
    with torch.inference_mode():
        pooled, grid = nano.embed(x, months, 8, S1_ONLY)
    assert pooled.shape == (5, 128) and grid.shape == (5, 128, 8, 8)
    torch.testing.assert_close(pooled[:, :4], torch.tensor(UPSTREAM_POOLED), atol=1e-4, rtol=0)
    torch.testing.assert_close(grid[:, :3, 2, 5], torch.tensor(UPSTREAM_GRID_2_5), atol=1e-4,
                               rtol=0)

    unit = F.normalize(pooled, dim=1)
    cos = (unit @ unit.T).numpy()
    print("\nGalileo nano pooled cosine similarity (64x64 top-left crops, patch 8, S1 masked)")
    print("\n".join(f"{n:>14} " + " ".join(f"{v:.3f}" for v in row)
                    for n, row in zip(names, cos)))
    snow = names.index(SNOW)
    others = [i for i in range(len(names)) if i != snow]
    snow_vs_others = cos[snow, others]
    among = cos[np.ix_(others, others)][np.triu_indices(len(others), 1)]
    assert snow_vs_others.max() < among.min()
    assert snow_vs_others.min() > 0.65 and snow_vs_others.max() < 0.80
    assert among.min() > 0.80 and among.max() < 0.95


@needs_nano
def test_real_weights_every_patch_size_runs(nano):
    with torch.inference_mode():
        for p in range(1, 9):
            x, months = _tiny_inputs(b=1, size=2 * p, t=1)
            pooled, grid = nano.embed(x, months, p, S1_ONLY)
            assert grid.shape == (1, 128, 2, 2)
            assert torch.isfinite(pooled).all() and torch.isfinite(grid).all()


def test_groups_cover_the_13_bands_once():
    seen = sorted(i for idx in SPACE_TIME_GROUPS.values() for i in idx)
    assert seen == list(range(len(SPACE_TIME_BANDS)))
