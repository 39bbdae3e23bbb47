"""AnySat's S2 path: encodings and iRPE buckets by hand, patching order, the upstream key layout,
and the real TreeSatAI-TS series (output grids per patch size, date-order invariance)."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.nn.anysat import (
    DEMO_S2_MEAN,
    DEMO_S2_STD,
    AnySatS2,
    CrossRPEAttention,
    MasterQueryAttention,
    RPESelfAttention,
    anysat_config,
    anysat_state_dict,
    irpe_buckets,
    load_anysat,
    sincos_1d,
    sincos_2d,
    temporal_encoding,
)
from eoembed.weights import load_checkpoint

SERIES = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "s2_timeseries" / "Abies_alba_1_1005_WEFL_NLF.h5"
SMALL = {"dim": 64, "depth": 1, "heads": 4}


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)


@pytest.fixture(scope="module")
def series() -> tuple[torch.Tensor, torch.Tensor]:
    """The real series normalised with the demo constants: ``(1, 146, 10, 6, 6)`` and days."""
    h5py = pytest.importorskip("h5py")
    if not SERIES.is_file():
        pytest.skip("../shared/data/s2_timeseries is not present")
    with h5py.File(SERIES, "r") as f:
        data = torch.from_numpy(f["sen-2-data"][:])
        names = [n.decode() for n in f["sen-2-products"][:]]
    days = torch.tensor([datetime.strptime(n.split("_")[2][:8], "%Y%m%d").timetuple().tm_yday for n in names])
    mean = torch.tensor(DEMO_S2_MEAN)[:, None, None]
    std = torch.tensor(DEMO_S2_STD)[:, None, None]
    return ((data - mean) / std)[None], days[None]


@pytest.fixture(scope="module")
def model() -> AnySatS2:
    m = AnySatS2(**SMALL).eval()
    _randomise(m, seed=1)
    return m


def test_temporal_encoding_follows_the_ltae_formula() -> None:
    days = torch.tensor([[0, 17, 366]])
    enc = temporal_encoding(days, dim=6, period=367, repeat=2)
    assert enc.shape == (1, 3, 12)
    for t, day in enumerate((0, 17, 366)):
        for c in range(6):
            angle = day / 367 ** (2 * (c // 2) / 6)
            want = math.sin(angle) if c % 2 == 0 else math.cos(angle)
            assert enc[0, t, c].item() == pytest.approx(want, abs=1e-5)
            assert enc[0, t, c + 6].item() == pytest.approx(want, abs=1e-5)


def test_sincos_2d_puts_columns_in_the_first_half_and_rows_in_the_second() -> None:
    emb = sincos_2d(8, 2, spacing=10.0)
    assert emb.shape == (1, 5, 8)
    assert torch.equal(emb[0, 0], torch.zeros(8))  # class token
    cell_row0_col1 = emb[0, 2]
    torch.testing.assert_close(cell_row0_col1[:4], sincos_1d(4, torch.tensor([10.0]))[0])
    torch.testing.assert_close(cell_row0_col1[4:], sincos_1d(4, torch.tensor([0.0]))[0])
    omega = [1.0, 0.01]  # 1 / 10000^(k / 2) for k = 0, 1
    torch.testing.assert_close(sincos_1d(4, torch.tensor([10.0]))[0],
                               torch.tensor([math.sin(10 * omega[0]), math.sin(10 * omega[1]),
                                             math.cos(10 * omega[0]), math.cos(10 * omega[1])]))


def test_irpe_buckets_follow_the_piecewise_euclidean_function() -> None:
    # one row of five cells: distances 0..4 from the first cell
    ids = irpe_buckets(1, 5)
    # rounded distance d ≤ 1.9 keeps d; beyond, round(1.9 + ln(d/1.9)/ln(8)·1.9) capped at 3;
    # 3 is added, and the class token has bucket 7
    assert ids[1, 1:].tolist() == [3, 4, 5, 5, 6]
    assert ids[0].tolist() == [7] * 6 and ids[:, 0].tolist() == [7] * 6
    # 2-D: the diagonal neighbour is √2 → 1 away, the knight's move √5 → 2
    ids = irpe_buckets(3, 3)
    assert ids[1 + 0, 1 + 4].item() == 4 and ids[1 + 0, 1 + 5].item() == 5
    for d in range(5, 40):
        squashed = min(round(1.9 + math.log(d / 1.9) / math.log(8) * 1.9), 3.8)
        assert int(squashed) + 3 == irpe_buckets(1, d + 1)[1, d + 1].item()


def test_master_query_attention_matches_a_loop_over_heads() -> None:
    torch.manual_seed(3)
    att = MasterQueryAttention(heads=2, d_k=3, d_in=4)
    _randomise(att, seed=4)
    v = torch.randn(5, 7, 4)
    pad = torch.zeros(5, 7, dtype=torch.bool)
    pad[:, 5:] = True
    got = att(v, pad)
    for n in range(5):
        parts = []
        for h in range(2):
            k = (v[n] @ att.fc1_k.weight.T + att.fc1_k.bias)[:, 3 * h : 3 * h + 3]
            w = torch.softmax((k @ att.Q[h]) / math.sqrt(3) - 1e3 * pad[n].float(), dim=0)
            parts.append(w @ v[n][:, 2 * h : 2 * h + 2])
        torch.testing.assert_close(got[n], torch.cat(parts).detach(), atol=1e-6, rtol=1e-5)


def _rpe_bias(q0: torch.Tensor, weight: torch.Tensor, side: int) -> torch.Tensor:
    """Bias (L, L) by hand: query i of head 0 dotted with the table column of bucket(i, j)."""
    ids = irpe_buckets(side, side)
    n = q0.shape[0]
    return torch.stack([torch.stack([q0[i] @ weight[0, :, ids[i, j]] for j in range(n)]) for i in range(n)])


def test_rpe_self_attention_matches_a_hand_computation() -> None:
    att = RPESelfAttention(dim=4, heads=2)
    _randomise(att, seed=6)
    x = torch.randn(2, 5, 4)  # class token + 2×2 grid
    got = att(x)
    for b in range(2):
        qkv = x[b] @ att.qkv.weight.T + att.qkv.bias
        q, k, v = qkv[:, :4] / math.sqrt(2), qkv[:, 4:8], qkv[:, 8:]
        bias = _rpe_bias(q[:, :2], att.rpe_k.lookup_table_weight, 2)  # scaled queries, head 0
        heads = [torch.softmax(q[:, 2 * h : 2 * h + 2] @ k[:, 2 * h : 2 * h + 2].T + bias, -1) @ v[:, 2 * h : 2 * h + 2]
                 for h in range(2)]
        want = torch.cat(heads, -1) @ att.proj.weight.T + att.proj.bias
        torch.testing.assert_close(got[b], want.detach(), atol=1e-5, rtol=1e-5)


def test_cross_attention_queries_are_learned_plus_position_and_rpe_uses_raw_queries() -> None:
    att = CrossRPEAttention(dim=4, heads=2)
    _randomise(att, seed=7)
    x = torch.randn(1, 5, 4)
    got = att(x, scale=3)
    q = att.q_learned[0] + sincos_2d(4, 2, 3.0)[0]  # (5, 4)
    k = x[0] @ att.wk.weight.T + att.wk.bias
    v = x[0] @ att.wv.weight.T + att.wv.bias
    bias = _rpe_bias(q[:, :2], att.rpe_k.lookup_table_weight, 2)  # unscaled queries, head 0
    heads = [torch.softmax(q[:, 2 * h : 2 * h + 2] @ k[:, 2 * h : 2 * h + 2].T / math.sqrt(2) + bias, -1)
             @ v[:, 2 * h : 2 * h + 2] for h in range(2)]
    want = torch.cat(heads, -1) @ att.proj.weight.T + att.proj.bias
    torch.testing.assert_close(got[0], want.detach(), atol=1e-5, rtol=1e-5)


def test_projector_groups_pixels_into_patches_row_major() -> None:
    m = AnySatS2(**SMALL)

    def pixel_ids(x: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        return torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(b, 2, h, w)

    m.projector_s2.patch_embed.forward = pixel_ids  # type: ignore[method-assign]
    tokens = m.projector_s2(torch.zeros(1, 3, 10, 6, 6), torch.zeros(1, 3), scale=3)
    assert tokens.shape == (4, 9, 2)
    for p in range(4):
        for k in range(9):
            row, col = (p // 2) * 3 + k // 3, (p % 2) * 3 + k % 3
            assert tokens[p, k, 0].item() == row * 6 + col


@pytest.mark.parametrize(("patch_m", "side"), [(10, 6), (20, 3), (30, 2), (60, 1)])
def test_real_series_gives_the_documented_grid_per_patch_size(series, model, patch_m: int, side: int) -> None:
    x, days = series
    with torch.no_grad():
        out = model(x, days, patch_m)
    assert out["tile"].shape == (1, 64)
    assert out["patch"].shape == (1, side, side, 64)
    torch.testing.assert_close(out["grid"], out["patch"].permute(0, 3, 1, 2))
    assert torch.isfinite(out["patch"]).all()


def test_real_series_output_ignores_frame_order_but_not_dates(series, model) -> None:
    x, days = series
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(5))
    proj = model.projector_s2
    with torch.no_grad():
        # the L-TAE projector: frames travel with their dates, so order is irrelevant …
        p = proj(x, days, 2)
        torch.testing.assert_close(proj(x[:, perm], days[:, perm], 2), p, atol=1e-5, rtol=1e-5)
        # … while other dates, or frames moved to other dates, change it clearly
        assert (proj(x, days + 60, 2) - p).abs().max() > 1e-2
        assert (proj(x[:, perm], days, 2) - p).abs().max() > 1e-3
        # and so does the whole model (random weights damp the change downstream)
        a = model(x, days, 20)
        b = model(x[:, perm], days[:, perm], 20)
        c = model(x, days + 60, 20)
    torch.testing.assert_close(b["patch"], a["patch"], atol=3e-6, rtol=1e-5)
    torch.testing.assert_close(b["tile"], a["tile"], atol=3e-6, rtol=1e-5)
    assert (c["patch"] - a["patch"]).abs().max() > 1e-4


def test_upstream_checkpoint_loads_strictly_and_reports_other_modalities(tmp_path, series, model) -> None:
    sd = dict(model.state_dict())
    sd["projector_aerial.patch_embed.proj.weight"] = torch.zeros(2, 4, 10, 10)
    sd["projector_s1-asc.pad_parameter"] = torch.tensor(0.0)
    path = tmp_path / "AnySat.pth"
    torch.save({"state_dict": sd}, path)
    fresh = AnySatS2(**SMALL).eval()
    ignored = load_anysat(fresh, load_checkpoint(path))
    assert ignored == ["projector_aerial.", "projector_s1-asc."]
    x, days = series
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, days, 30)["tile"], model(x, days, 30)["tile"])


def test_key_layout_is_upstreams_inner_module() -> None:
    keys = set(AnySatS2(**SMALL).state_dict())
    for k in ("cls_token", "projector_s2.pad_parameter", "projector_s2.patch_embed.inconv.0.weight",
              "projector_s2.patch_embed.inconv.17.bias", "projector_s2.patch_embed.in_norm.weight",
              "projector_s2.patch_embed.attention_heads.Q", "projector_s2.patch_embed.attention_heads.fc1_k.weight",
              "projector_s2.patch_embed.mlp.1.weight", "projector_s2.patch_embed.out_norm.bias",
              "spatial_encoder.cls_token", "spatial_encoder.predictor_blocks.0.attn.rpe_k.lookup_table_weight",
              "spatial_encoder.predictor_norm.weight", "blocks.0.attn.qkv.weight", "blocks.1.attn.q_learned",
              "blocks.1.attn.wk.bias", "blocks.1.attn.rpe_k.lookup_table_weight", "blocks.1.mlp.fc2.weight"):
        assert k in keys, k
    assert AnySatS2(**SMALL).state_dict()["blocks.1.attn.rpe_k.lookup_table_weight"].shape == (1, 16, 8)


def test_missing_s2_projector_or_bad_patch_size_fails_clearly(model) -> None:
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("projector_s2.")}
    with pytest.raises(WeightsError, match="projector_s2"):
        anysat_state_dict({"state_dict": sd})
    sd = dict(model.state_dict())
    del sd["blocks.0.norm1.weight"]
    with pytest.raises(WeightsError, match="blocks.0.norm1.weight"):
        load_anysat(AnySatS2(**SMALL), {"state_dict": sd})
    x = torch.zeros(1, 2, 10, 6, 6)
    for bad in (0, 15, -10):
        with pytest.raises(ValueError, match="multiple of 10"):
            model(x, torch.zeros(1, 2), bad)
    with pytest.raises(ValueError, match="square"):
        model(torch.zeros(1, 2, 10, 6, 4), torch.zeros(1, 2), 10)


def test_demo_constants_are_in_the_units_of_the_series(series) -> None:
    x, _ = series
    per_band = x[0].permute(1, 0, 2, 3).reshape(10, -1)
    assert np.all(np.abs(per_band.mean(1).numpy()) < 1.0)  # z-scores, not raw reflectance


def test_configuration_is_read_back_from_the_checkpoint_shapes() -> None:
    sd = AnySatS2(dim=64, depth=2, heads=2, ltae_heads=8, ltae_d_k=4, spatial_depth=1).state_dict()
    assert anysat_config(sd) == {"dim": 64, "depth": 2, "heads": 2, "ltae_heads": 8, "ltae_d_k": 4,
                                 "in_channels": 10, "spatial_depth": 1}
