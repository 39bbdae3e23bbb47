"""Presto encoder: exact blocks, masking, normalisation, and the real released weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eoembed.nn.presto import (
    ADD_BY,
    BAND_GROUPS,
    DIVIDE_BY,
    DW_MISSING,
    PRESTO_BANDS,
    RAW_BANDS,
    Block,
    PrestoConfig,
    PrestoEncoder,
    months_per_step,
    normalize,
)
from eoembed.weights import load_checkpoint

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
PRESTO = SHARED / "weights" / "presto"
TILES_DIR = SHARED / "data" / "s2_l2a_tiles"
needs_presto = pytest.mark.skipif(not (PRESTO / "default_model.pt").is_file(),
                                  reason="shared Presto weights absent")
needs_tiles = pytest.mark.skipif(not TILES_DIR.is_dir(), reason="shared S2 tiles absent")

TILE_MONTHS = {"282D_485L_3_3": 7, "38D_378R_2_3": 6, "433D_629L_3_1": 4,
               "609U_541L_3_0": 1, "637U_59R_1_3": 10}
# S1, ERA5 and SRTM absent: only Sentinel-2 (and the NDVI made from it) is fed
S2_ONLY_MASK = torch.tensor([1.0 if PRESTO_BANDS[i] in ("VV", "VH", "temperature_2m",
                                                         "total_precipitation", "elevation",
                                                         "slope") else 0.0 for i in range(17)])

TINY = PrestoConfig(embedding_size=16, depth=2, num_heads=4, mlp_ratio=2, max_sequence_length=6)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def _tiny_inputs(b=4, t=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, t, 17, generator=gen)
    dw = torch.randint(0, DW_MISSING + 1, (b, t), generator=gen)  # classes 0-8 and missing
    dw[:, 0] = 2  # keep the dynamic-world pattern mixed but never all missing
    latlons = torch.rand(b, 2, generator=gen) * torch.tensor([180.0, 360.0]) - torch.tensor(
        [90.0, 180.0])
    return x, dw, latlons



def test_block_matches_hand_written_attention():
    dim, heads = 16, 4
    block = _randomised(Block(dim, heads, mlp_ratio=2))
    x = torch.randn(2, 6, dim, generator=torch.Generator().manual_seed(3))
    key_mask = torch.tensor([[True] * 6, [True, True, False, True, False, False]])

    def ln(v, mod):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * mod.weight + mod.bias

    a = block.attn
    qkv = torch.einsum("bnd,ed->bne", ln(x, block.norm1), a.qkv.weight) + a.qkv.bias
    q, k, v = (qkv[..., i * dim:(i + 1) * dim].reshape(2, 6, heads, dim // heads)
               for i in range(3))
    scores = torch.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(dim // heads)
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    attn = torch.einsum("bhqk,bkhc->bqhc", scores.softmax(-1), v).reshape(2, 6, dim)
    x1 = x + attn @ a.proj.weight.T + a.proj.bias
    hidden = ln(x1, block.norm2) @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    expected = x1 + hidden @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
    with torch.no_grad():
        torch.testing.assert_close(block(x, key_mask), expected, atol=1e-5, rtol=1e-5)


def test_encoder_matches_hand_built_token_sequence():
    """One pixel, two steps, only S2_RGB and SRTM present: build the 4 tokens by hand."""
    model = _randomised(PrestoEncoder(TINY))
    x = torch.rand(1, 2, 17, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(1, 2, 17)
    mask[:, :, 2:5] = 0  # S2_RGB at both steps
    mask[:, 0, 14:16] = 0  # SRTM (read from the first step only)
    dw = torch.full((1, 2), DW_MISSING)
    latlon = torch.tensor([[45.0, 10.0]])
    q, h = 4, 8  # month and channel quarter widths, positional half
    lat, lon = math.radians(45.0), math.radians(10.0)
    unit = torch.tensor([[math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon),
                          math.sin(lat)]])
    months = torch.tensor([11, 0])  # start month 11 wraps to January
    rgb, srtm = list(BAND_GROUPS).index("S2_RGB"), list(BAND_GROUPS).index("SRTM")
    ch = model.channel_embed.weight
    tokens = [model.latlon_embed(unit)[0]]
    for step in range(2):
        pos = torch.tensor([p / 1000 ** (2 * (j // 2) / h) for j in range(h) for p in [step]])
        pos = torch.where(torch.arange(h) % 2 == 0, pos.sin(), pos.cos())
        angle = months[step] * 2 * math.pi / 12
        month = torch.cat([torch.full((q // 2,), math.sin(angle)),
                           torch.full((q // 2,), math.cos(angle))])
        lin = model.eo_patch_embed["S2_RGB"]
        tokens.append(lin(x[0, step, 2:5]) + torch.cat([month, ch[rgb], pos]))
    lin = model.eo_patch_embed["SRTM"]
    tokens.append(lin(x[0, 0, 14:16]) + torch.cat([torch.zeros(q), ch[srtm], torch.zeros(h)]))
    seq = torch.stack(tokens)[None]
    with torch.no_grad():
        for block in model.blocks:
            seq = block(seq)
        expected = model.norm(seq.mean(dim=1))
        got = model(x, dw, latlon, 11, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_masked_bands_and_missing_dynamic_world_do_not_matter():
    model = _randomised(PrestoEncoder(TINY))
    x, dw, latlons = _tiny_inputs()
    dw[:] = DW_MISSING
    mask = S2_ONLY_MASK.expand(4, 3, 17)
    noisy = x.clone()
    noisy[..., S2_ONLY_MASK.bool()] = torch.randn_like(noisy[..., S2_ONLY_MASK.bool()]) * 50
    with torch.inference_mode():
        base = model(x, dw, latlons, 2, mask)
        other = model(noisy, dw, latlons, 2, mask)
        unmasked = model(noisy, dw, latlons, 2)
    assert torch.equal(base, other)
    assert not torch.allclose(base, unmasked, atol=1e-3)


def test_per_item_masks_equal_running_each_item_alone_and_determinism():
    model = _randomised(PrestoEncoder(TINY))
    x, dw, latlons = _tiny_inputs()
    mask = S2_ONLY_MASK.expand(4, 3, 17).clone()
    mask[0, 1, 2:5] = 1
    mask[2, :, 16] = 1
    start = torch.tensor([0, 5, 11, 3])
    with torch.inference_mode():
        batch = model(x, dw, latlons, start, mask)
        assert torch.equal(batch, model(x, dw, latlons, start, mask))
        for i in range(4):
            alone = model(x[i:i + 1], dw[i:i + 1], latlons[i:i + 1], start[i:i + 1],
                          mask[i:i + 1])
            torch.testing.assert_close(alone, batch[i:i + 1], atol=1e-5, rtol=1e-5)


def test_months_follow_the_start_month_and_wrap():
    assert months_per_step(10, 2, 4).tolist() == [[10, 11, 0, 1]] * 2
    assert months_per_step(torch.tensor([0, 11]), 2, 2).tolist() == [[0, 1], [11, 0]]
    with pytest.raises(ValueError, match="0 \\(January\\)"):
        months_per_step(12, 1, 1)


def test_normalize_matches_formula_drops_b9_and_recomputes_ndvi():
    raw = torch.zeros(2, 18)
    raw[0] = torch.arange(18, dtype=torch.float32) * 100 + 7
    raw[1, RAW_BANDS.index("B4")], raw[1, RAW_BANDS.index("B8")] = 1000.0, 3000.0
    raw[1, RAW_BANDS.index("NDVI")] = 123.0  # ignored: recomputed
    out = normalize(raw)
    assert out.shape == (2, 17)
    kept = [i for i, b in enumerate(RAW_BANDS) if b not in ("B9", "NDVI")]
    expected = [(raw[0, i].item() + ADD_BY[i]) / DIVIDE_BY[i] for i in kept]
    torch.testing.assert_close(out[0, :16], torch.tensor(expected))
    assert out[1, PRESTO_BANDS.index("NDVI")] == pytest.approx(0.5)
    assert out[1, PRESTO_BANDS.index("VV")] == pytest.approx(1.0)  # 0 dB + 25 over 25


@pytest.fixture(scope="module")
def presto() -> PrestoEncoder:
    if not (PRESTO / "default_model.pt").is_file():
        pytest.skip("shared Presto weights absent")
    checkpoint = load_checkpoint(PRESTO / "default_model.pt")
    return PrestoEncoder.from_pretrained(
        checkpoint, json.loads((PRESTO / "default.json").read_text()))


@needs_presto
def test_real_weights_load_strictly_and_fixed_tables_match(presto):
    checkpoint = load_checkpoint(PRESTO / "default_model.pt")
    encoder_keys = {k[len("encoder."):] for k in checkpoint if k.startswith("encoder.")}
    assert set(presto.state_dict()) == encoder_keys
    fresh = PrestoEncoder(PrestoConfig.from_json(PRESTO / "default.json"))
    torch.testing.assert_close(fresh.pos_embed, checkpoint["encoder.pos_embed"], atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(fresh.month_embed.weight, checkpoint["encoder.month_embed.weight"],
                               atol=1e-6, rtol=0)


def _tile_pixels(name: str, size: int = 64, step: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step-th pixel of the top-left size² of a shared tile: normalised [N, 1, 17] and
    lat/lon [N, 2] of the pixel centres."""
    rasterio = pytest.importorskip("rasterio")
    from pyproj import Transformer

    with rasterio.open(TILES_DIR / f"{name}.tif") as src:
        bands = src.read(window=((0, size), (0, size))).astype(np.float32)[:, ::step, ::step]
        t, crs = src.transform, src.crs
    rows, cols = np.mgrid[0:size:step, 0:size:step]
    xs, ys = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs.ravel(),
                                                                               ys.ravel())
    raw = np.zeros((rows.size, 18), np.float32)
    # file bands B01,B02,…,B8A,B09,B11,B12: B02..B12 fill RAW_BANDS slots B2..B12 (B9 included)
    raw[:, 2:13] = bands[1:12].reshape(11, -1).T
    latlon = torch.from_numpy(np.stack([lat, lon], axis=1).astype(np.float32))
    return normalize(torch.from_numpy(raw))[:, None], latlon


# Upstream (nasaharvest/presto single_file_presto.py, commit 13173d0, float64 numpy
# normalisation) on the same pixels (every 2nd row and column of the top-left 64x64): tile mean
# of the pixel embeddings [:4] and pixel (0, 0) [:4].
UPSTREAM_TILE_MEAN = [[-1.001466, -2.850162, -0.819652, 1.562019],
                      [-0.17127, -4.296972, 1.435713, -0.103454],
                      [0.805759, -2.270657, 1.151699, 2.224019],
                      [-0.176043, -3.003597, -0.378233, 0.857709],
                      [-1.048017, -3.690368, 0.349041, 0.896644]]
UPSTREAM_PIXEL_0 = [[-1.030306, -2.874688, -0.801269, 1.55183],
                    [-0.397007, -4.381365, 1.477702, -0.031685],
                    [0.556169, -2.266798, 1.095569, 1.988052],
                    [-0.190421, -3.886707, -0.317034, 0.673693],
                    [-1.033238, -4.498063, 0.131678, 1.804813]]


def _print_matrix(title, names, cos):
    print(f"\n{title}")
    print("\n".join(f"{n:>14} " + " ".join(f"{v:.3f}" for v in row) for n, row in zip(names, cos)))


@needs_presto
@needs_tiles
def test_real_tiles_match_upstream_and_pixels_group_by_tile(presto):
    names = sorted(TILE_MONTHS)
    per_tile, per_tile_fixed_place = [], []
    with torch.inference_mode():
        for name in names:
            x, latlon = _tile_pixels(name)
            n = x.shape[0]
            dw = torch.full((n, 1), DW_MISSING)
            mask = S2_ONLY_MASK.expand(n, 1, 17)
            month = TILE_MONTHS[name] - 1
            per_tile.append(presto(x, dw, latlon, month, mask))
            per_tile_fixed_place.append(presto(x, dw, torch.zeros_like(latlon), month, mask))
    means = torch.stack([e.mean(0) for e in per_tile])
    torch.testing.assert_close(means[:, :4], torch.tensor(UPSTREAM_TILE_MEAN), atol=2e-4,
                               rtol=0)
    torch.testing.assert_close(torch.stack([e[0, :4] for e in per_tile]),
                               torch.tensor(UPSTREAM_PIXEL_0), atol=2e-4, rtol=0)

    unit = F.normalize(means, dim=1)
    _print_matrix("Presto tile-mean cosine similarity (32x32 pixels sampled from the top-left "
                  "64x64, S2 only, true location)", names, (unit @ unit.T).numpy())
    fixed = F.normalize(torch.stack([e.mean(0) for e in per_tile_fixed_place]), dim=1)
    _print_matrix("... with every pixel placed at 0°N 0°E (spectra and month only)", names,
                  (fixed @ fixed.T).numpy())

    # spectra alone (same place for all): a tile's pixels resemble each other more than
    # pixels of other tiles, and a nearest-centroid rule recovers the tile of each pixel
    emb = F.normalize(torch.cat(per_tile_fixed_place), dim=1)
    labels = torch.arange(len(names)).repeat_interleave(per_tile[0].shape[0])
    even = torch.arange(len(emb)) % 2 == 0
    centroids = F.normalize(torch.stack([emb[even & (labels == i)].mean(0)
                                         for i in range(len(names))]), dim=1)
    accuracy = ((emb[~even] @ centroids.T).argmax(1) == labels[~even]).float().mean()
    print(f"nearest-centroid tile accuracy from spectra alone: {accuracy:.3f}")
    assert accuracy > 0.9
    # and the location token matters: the same pixels at their true place embed differently
    assert F.cosine_similarity(means, torch.stack([e.mean(0) for e in per_tile_fixed_place])
                               ).max() < 0.99
