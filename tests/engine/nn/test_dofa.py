"""DOFA network and the wavelength-conditioned patch embedding: codes by hand, the two kernel
layouts, parity with the upstream code on seeded weights, the published key layout."""

from __future__ import annotations

import math

import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.nn.dofa import DOFA, DOFA_CONFIGS, DofaConfig, load_dofa
from eoembed.nn.timm_vit import to_timm_key
from eoembed.nn.wavelength_embed import (
    CLAY_STYLE,
    DOFA_STYLE,
    WavelengthPatchEmbed,
    wavelength_code,
)
from seeded import seeded_input, seeded_state

TINY = DofaConfig(width=128, depth=2, heads=2)

# Upstream zhu-xlab/DOFA dofa_v1.py (OFAViT, global_pool=True) with wave_dynamic_layer.py and
# util/pos_embed.py at commits a414125 / 1550cbe / 2ba9d35, timm 1.0.31 blocks, run once outside
# the repository: TINY as OFAViT(embed_dim=128, depth=2, num_heads=2, num_classes=0), weights
# seeded_state(seed=0, scale=0.02), input seeded_input((2, C, 224, 224)). max |ours − upstream|:
# pooled 0.0 and patch tokens 0.0 for S2 (C=4, seed 1) and S1 (C=2, seed 2); full size (base, nine S2
# bands, batch 1): pooled 0.0, tokens 0.0 (the same operations in the same order). Recorded (item 1):
UPSTREAM = {
    "s2": ((0.665, 0.56, 0.49, 0.842), 1, [1.491169, 1.082568, 0.596856, -0.71374], [0.208752, 0.099792, 0.042908]),
    "s1": ((3.75, 3.75), 2, [0.691042, 0.12633, 1.309361, 1.514119], [0.027706, 0.091745, 0.138944]),
}
#: tensors and parameters of upstream's encoder (num_classes=0) at full size
UPSTREAM_SIZES = {"base": (170, 111_312_128), "large": (314, 337_105_408)}


def _state(config: DofaConfig = TINY) -> dict[str, torch.Tensor]:
    """Seeded weights under the published (timm) key names."""
    shapes = {to_timm_key(k): tuple(v.shape) for k, v in DOFA(config).state_dict().items()}
    return seeded_state(shapes, 0, scale=0.02)


def test_wavelength_code_by_hand() -> None:
    code = wavelength_code(torch.tensor([665.0]), 4)
    # DOFA: omega = 1, 1/100 (denominator dim/2 = 2)
    assert code[0].tolist() == pytest.approx([math.sin(665), math.sin(6.65), math.cos(665), math.cos(6.65)], abs=1e-4)
    clay = wavelength_code(torch.tensor([0.665]), 4, "half_minus_one")
    # Clay: omega = 1, 1/10000 (denominator dim/2 - 1 = 1)
    assert clay[0].tolist() == pytest.approx([math.sin(0.665), math.sin(0.665e-4), math.cos(0.665),
                                              math.cos(0.665e-4)], abs=1e-6)


def test_kernel_layouts_differ_as_the_styles_say() -> None:
    torch.manual_seed(0)
    dofa = WavelengthPatchEmbed(8, 2, DOFA_STYLE, wave_dim=16, num_tokens=4)
    clay = WavelengthPatchEmbed(8, 2, CLAY_STYLE, wave_dim=16, num_tokens=4)
    clay.load_state_dict(dofa.state_dict())
    waves = torch.tensor([0.49, 0.56, 0.665])
    w_dofa, b_dofa = dofa.kernel(waves)
    codes = dofa.fclayer(wavelength_code(waves * 1000, 16))
    values, bias = dofa.weight_generator(codes)
    # DOFA reads the [C, D·p·p] values straight into [D, C, p, p] memory, and scales the bias
    torch.testing.assert_close(w_dofa, values.reshape(8, 3, 2, 2) * 0.01)
    torch.testing.assert_close(b_dofa, bias * 0.01)
    w_clay, b_clay = clay.kernel(waves)
    codes = clay.fclayer(wavelength_code(waves, 16, "half_minus_one"))
    values, bias = clay.weight_generator(codes)
    torch.testing.assert_close(w_clay[5, 1], values[1].reshape(8, 2, 2)[5] * 0.02)
    torch.testing.assert_close(b_clay, bias)
    # padding 1 (DOFA) turns 8 px into a 5×5 grid of stride 2; Clay's 4×4
    x = seeded_input((1, 3, 8, 8))
    assert dofa(x, waves)[1] == (5, 5) and clay(x, waves)[1] == (4, 4)


@pytest.mark.parametrize("name", ["s2", "s1"])
def test_matches_upstream_on_seeded_weights(name) -> None:
    waves, seed, pooled_want, token_want = UPSTREAM[name]
    model, counts = load_dofa(_state())
    assert counts == {"loaded": 50, "dropped": 0}
    x = seeded_input((2, len(waves), 224, 224), seed)
    with torch.no_grad():
        pooled, tokens, grid = model(x, torch.tensor(waves))
    assert grid == (14, 14) and tokens.shape == (2, 196, 128)
    torch.testing.assert_close(pooled[1, :4], torch.tensor(pooled_want), atol=2e-5, rtol=0)
    torch.testing.assert_close(tokens[1, 17, :3], torch.tensor(token_want), atol=2e-5, rtol=0)


@pytest.mark.parametrize("size", ["base", "large"])
def test_full_size_layout_matches_upstream_counts(size) -> None:
    with torch.device("meta"):
        model = DOFA(DOFA_CONFIGS[size])
    sd = model.state_dict()
    assert (len(sd), sum(v.numel() for v in sd.values())) == UPSTREAM_SIZES[size]


def test_loader_renames_norm_drops_head_and_names_bad_keys() -> None:
    state = _state()
    state["head.weight"], state["head.bias"] = torch.zeros(45, 128), torch.zeros(45)
    state["norm.weight"], state["norm.bias"] = state.pop("fc_norm.weight"), state.pop("fc_norm.bias")
    model, counts = load_dofa(state)
    assert counts == {"loaded": 50, "dropped": 2}
    torch.testing.assert_close(model.fc_norm.weight, state["norm.weight"])
    bad = _state()
    bad["blocks.1.attn.qkv.weight"] = bad.pop("blocks.1.attn.qkv.weight")[:, :64]
    with pytest.raises(WeightsError, match=r"blocks\.1\.attn\.qkv\.weight"):
        load_dofa(bad)
    bad = _state()
    del bad["patch_embed.weight_generator.bias_token"]
    with pytest.raises(WeightsError, match=r"missing patch_embed\.weight_generator\.bias_token"):
        load_dofa(bad)
    bad = _state()
    bad["decoder_embed.weight"] = torch.zeros(2, 2)
    with pytest.raises(WeightsError, match=r"unexpected decoder_embed\.weight"):
        load_dofa(bad)
