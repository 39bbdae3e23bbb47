"""CROMA network: ALiBi by hand, parity with the upstream code on seeded weights, the published
key layout (full size, on the meta device) and loader errors that name the offending part."""

from __future__ import annotations

import math

import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.nn.croma import CROMA, CROMA_CONFIGS, CromaConfig, alibi_2d, alibi_slopes, load_croma
from seeded import seeded_input, seeded_state

TINY = CromaConfig(dim=64, depth=2)

# Upstream antofuller/CROMA use_croma.py at commit 59505a6 (ViT, BaseTransformerCrossAttn,
# get_2dalibi and the GAP_FFN heads, assembled as PretrainedCROMA.forward does), run once outside
# the repository with seeded_state(seed=0) weights of TINY and seeded_input((2, C, 32, 32)) images
# (SAR seed 1, optical seed 2). max |ours − upstream| over every output: SAR_encodings 9.5e-7,
# SAR_GAP 3.6e-7, optical_encodings 9.5e-7, optical_GAP 4.8e-7, joint_encodings 1.2e-6,
# joint_GAP 3.6e-7. Full size (base, 120 px, batch 1, weights at scale 0.02): SAR_GAP 3.6e-7,
# optical_GAP 3.6e-7, joint_GAP 7.2e-7, optical_encodings 2.9e-6, joint_encodings 2.9e-6.
# Recorded values (item 1):
UPSTREAM = {
    "SAR_encodings": ([-0.984684, 0.028437, 0.404054], (1, 5)),
    "optical_encodings": ([-0.639717, 1.906691, 0.248157], (1, 5)),
    "joint_encodings": ([-1.163745, -0.072175, -1.530217], (1, 5)),
    "optical_GAP": ([0.785907, -0.086754, 0.99197], (1,)),
    "SAR_GAP": ([0.588949, -0.051483, -0.014748], (1,)),
    "joint_GAP": ([-1.038695, -0.10485, -1.28078], (1,)),
}
#: number of tensors and of parameters in upstream's five parts at full size
UPSTREAM_SIZES = {"base": (328, 194_365_440), "large": (634, 672_557_056)}


def _checkpoint(config: CromaConfig, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    shapes = {k: tuple(v.shape) for k, v in CROMA(config).state_dict().items()}
    flat = seeded_state(shapes, seed)
    parts = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")
    return {p: {k[len(p) + 1:]: v for k, v in flat.items() if k.startswith(p + ".")} for p in parts}


def test_alibi_slopes_and_distances_by_hand() -> None:
    slopes = alibi_slopes(16)
    assert slopes[0] == pytest.approx(2 ** -0.5) and slopes[-1] == pytest.approx(2 ** -8)
    assert alibi_slopes(8) == pytest.approx([2.0 ** -(i + 1) for i in range(8)])
    assert alibi_slopes(12)[8:] == pytest.approx([2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5])
    bias = alibi_2d(16, 2, 3)
    assert bias.shape == (16, 6, 6)
    # patch (0, 0) to patch (1, 2) is sqrt(5) apart; row-major index 5
    assert float(bias[0, 0, 5]) == pytest.approx(-math.sqrt(5) * 2 ** -0.5, rel=1e-6)
    assert float(bias[15, 5, 0]) == pytest.approx(-math.sqrt(5) * 2 ** -8, rel=1e-6)
    assert torch.all(torch.diagonal(bias, dim1=1, dim2=2) == 0)


def test_matches_upstream_on_seeded_weights() -> None:
    model = load_croma(_checkpoint(TINY))
    with torch.no_grad():
        out = model(seeded_input((2, 2, 32, 32), 1), seeded_input((2, 12, 32, 32), 2))
    for key, (want, index) in UPSTREAM.items():
        got = out[key][index][:3]
        torch.testing.assert_close(got, torch.tensor(want), atol=2e-5, rtol=0, msg=key)
    assert out["joint_encodings"].shape == (2, 16, 64)


def test_any_grid_works_and_patches_are_row_major() -> None:
    model = load_croma(_checkpoint(TINY))
    x = seeded_input((1, 12, 16, 24), 3)
    with torch.no_grad():
        tokens = model(optical=x)["optical_encodings"]
        shifted = model(optical=x[..., 8:])["optical_encodings"]
    assert tokens.shape == (1, 6, 64)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(optical=x[..., :20])
    assert not torch.allclose(tokens[0, 1:3], shifted[0, 0:2])  # ALiBi sees the new neighbours


@pytest.mark.parametrize("size", ["base", "large"])
def test_full_size_layout_matches_upstream_counts(size) -> None:
    with torch.device("meta"):
        model = CROMA(CROMA_CONFIGS[size])
    sd = model.state_dict()
    assert (len(sd), sum(v.numel() for v in sd.values())) == UPSTREAM_SIZES[size]
    depth = CROMA_CONFIGS[size].depth
    assert f"s2_encoder.transformer.layers.{depth - 1}.1.net.3.weight" in sd
    assert f"joint_encoder.layers.{depth // 2 - 1}.1.to_v.weight" in sd
    assert "s1_GAP_FFN.3.bias" in sd and "s1_encoder.transformer.norm_out.weight" in sd


def test_loader_names_a_missing_part_and_a_wrong_key() -> None:
    ckpt = _checkpoint(TINY)
    ckpt.pop("joint_encoder")
    with pytest.raises(WeightsError, match="joint_encoder"):
        load_croma(ckpt)
    ckpt = _checkpoint(TINY)
    ckpt["s2_encoder"]["transformer.layers.0.0.to_qkv.bias"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"unexpected s2_encoder\.transformer\.layers\.0\.0\.to_qkv\.bias"):
        load_croma(ckpt)
    ckpt = _checkpoint(TINY)
    del ckpt["s1_GAP_FFN"]["1.weight"]
    with pytest.raises(WeightsError, match=r"missing s1_GAP_FFN\.1\.weight"):
        load_croma(ckpt)
