"""Prithvi-EO-2.0 encoder: upstream parity on a tiny configuration, the published key layout of
every size (shapes only, on the meta device), and strict loading.

Upstream reference: terratorch ``terratorch/models/backbones/prithvi_mae.py`` at IBM/terratorch
commit 85467a9fbbaf567e7ce4541758c09a548a7bace5, ``PrithviMAE(...).encoder.forward_features``,
run once outside the repository (timm 1.0.31) on the seeded checkpoint
(:func:`vit_layouts.prithvi_state`) and the inputs built below;
the same run built upstream's model at every published size on the meta device and found its
encoder keys and shapes equal to :func:`vit_layouts.prithvi_shapes`.
Measured then, max |diff| eoembed vs upstream:

- this tiny TL configuration (width 48, depth 2, 64 px, 2 frames): tokens 1.7e-5, pooled 1.4e-5;
- tiny-TL at full depth (192 × 12, 224 px, 1 frame): tokens 2.0e-5, pooled 9.4e-6;
- TL at width 128, 4 frames: tokens 1.5e-5; non-TL, 2 frames: 0.0 (bit-identical);
- 600M-style patch 14: tokens 2.1e-5; 160-px input (bicubic table resize): tokens 1.9e-5.

The TL differences come from the sin-cos of the year (≈2020 rad): upstream computes it in
float32, eoembed in float64.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.nn.prithvi import PRESETS, PrithviConfig, PrithviEncoder, load_prithvi
from eoembed.nn.timm_vit import map_timm_state
from vit_layouts import prithvi_shapes, prithvi_state

TINY = PrithviConfig(48, 2, 3, num_frames=2, coords=True, img_size=64)
FRAMES = 2


def tiny_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, FRAMES, 64, 64, generator=g)
    tc = torch.tensor([[[2020.0, 45.0], [2020.0, 75.0]], [[2023.0, 300.0], [2023.0, 330.0]]])
    lc = torch.tensor([[48.1, 11.5], [-33.9, 151.2]])
    return x, tc, lc


# upstream outputs (see the module docstring) on prithvi_state(TINY, 2) and tiny_inputs():
# mean of the patch tokens [:, :4], and token 5 (frame 0, row 1, column 1) [:, :4]
UPSTREAM_POOLED = [[-0.698224, 0.397573, -0.325152, -0.272221],
                   [-0.436991, 0.074844, -0.41373, -0.118146]]
UPSTREAM_TOKEN5 = [[-0.516081, -0.499924, 0.832672, 0.917636],
                   [-1.563409, -0.748019, 0.254166, 0.511329]]
UPSTREAM_CLS = [[-0.628797, 0.81559, -0.690646, 0.454896],
                [-0.360366, -0.176039, 0.179714, -0.315608]]


def test_tiny_tl_matches_upstream_outputs():
    model = PrithviEncoder(TINY).eval()
    info = load_prithvi(model, prithvi_state(TINY, FRAMES))
    assert info["dropped"] == 6  # stored pos_embed, the decoder samples
    x, tc, lc = tiny_inputs()
    with torch.no_grad():
        out, grid = model(x, tc, lc)
    assert grid == (FRAMES, 4, 4) and out.shape == (2, 1 + 32, 48)
    torch.testing.assert_close(out[:, 1:].mean(1)[:, :4], torch.tensor(UPSTREAM_POOLED), atol=5e-5,
                               rtol=0)
    torch.testing.assert_close(out[:, 1 + 5, :4], torch.tensor(UPSTREAM_TOKEN5), atol=5e-5, rtol=0)
    torch.testing.assert_close(out[:, 0, :4], torch.tensor(UPSTREAM_CLS), atol=5e-5, rtol=0)
    # the side inputs matter: another day of year changes every patch token
    with torch.no_grad():
        moved, _ = model(x, tc + torch.tensor([0.0, 100.0]), lc)
    assert (moved[:, 1:] - out[:, 1:]).abs().amax(-1).min() > 1e-3


def test_stored_position_table_is_recomputed_not_read():
    sd = prithvi_state(TINY, FRAMES)
    a, b = PrithviEncoder(TINY).eval(), PrithviEncoder(TINY).eval()
    load_prithvi(a, sd)
    load_prithvi(b, {**sd, "encoder.pos_embed": torch.randn_like(sd["encoder.pos_embed"])})
    x, tc, lc = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(a(x, tc, lc)[0], b(x, tc, lc)[0], atol=0, rtol=0)


@pytest.mark.parametrize("variant", list(PRESETS))
def test_every_published_size_has_the_published_key_layout(variant):
    cfg = PRESETS[variant]
    with torch.device("meta"):
        model = PrithviEncoder(cfg)
        state = {k: torch.empty(s) for k, s in prithvi_shapes(cfg, cfg.num_frames).items()}
    mapped = map_timm_state(model, state, prefix="encoder.",
                            drop=("decoder.*", "encoder.pos_embed"), what=variant)
    assert len(mapped) == len(model.state_dict())
    n_params = sum(v.numel() for v in mapped.values())
    # encoder parameter counts of upstream's PrithviMAE built at each size (meta device)
    expected = {"tiny-tl": 5_634_050, "100m-tl": 86_237_186, "300m": 303_886_336,
                "300m-tl": 303_886_338, "600m": 631_188_480, "600m-tl": 631_188_482}[variant]
    assert n_params == expected


def test_wrong_variant_and_missing_key_name_themselves():
    non_tl = replace(TINY, coords=False)
    with pytest.raises(WeightsError, match="unexpected encoder.temporal_embed_enc.scale"):
        load_prithvi(PrithviEncoder(non_tl), prithvi_state(TINY, FRAMES))
    sd = prithvi_state(TINY, FRAMES)
    del sd["encoder.blocks.1.mlp.fc2.bias"]
    with pytest.raises(WeightsError, match=r"missing encoder\.blocks\.1\.mlp\.fc2\.bias"):
        load_prithvi(PrithviEncoder(TINY), sd)
    old = {k.replace("encoder.blocks", "encoder._timm_module.blocks"): v
           for k, v in prithvi_state(TINY, FRAMES).items()}
    load_prithvi(PrithviEncoder(TINY), old)  # the legacy infix is accepted
