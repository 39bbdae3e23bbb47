"""SatMAE, SatMAE++ (RGB and Sentinel group-channel) and Scale-MAE encoders: upstream parity on
tiny configurations, the published key layouts at full size (meta device), strict loading.

Upstream references, run once outside the repository (timm 1.0.31, torchvision stubbed) on the
seeded checkpoints of :func:`vit_layouts.mae_state` and the inputs built below, encoder at mask ratio 0 with the shuffled tokens put
back in grid order:

- SatMAE ``models_mae.MaskedAutoencoderViT.forward_encoder`` (sustainlab-group/SatMAE
  e31c11fa1bef6f9a9aa3eb49e8637c8b8952ba5e; its timm-0.3 ``Block(qk_scale=None)`` call adapted):
  tokens max |diff| 8.9e-7, pooled 1.2e-7;
- SatMAE++ ``models_mae.MaskedAutoencoderViT`` and
  ``models_mae_group_channels.MaskedAutoencoderGroupChannelViT.forward_encoder``
  (techmn/satmae_pp ee173bf50247d3dac16e25077095363001106cb9): RGB tokens 9.5e-7, pooled 1.5e-7;
  group-channel tokens 9.5e-7, pooled 1.2e-7;
- Scale-MAE ``mae/models_mae.MaskedAutoencoderViT.forward_encoder(x, 0.0, input_res)``
  (bair-climate-initiative/scale-mae 89280d830037ff27c20459cdab03e01e633e29bb), input_res
  (1.0, 2.5): tokens 1.2e-6, pooled 2.4e-7.

The same run built each upstream model at full size (ViT-L/16 224 px; group-channel ViT-L/8
96 px): its encoder keys and shapes equal :func:`vit_layouts.mae_shapes`, and everything else in it
matches :data:`eoembed.nn.mae.MAE_DROP`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.nn.mae import MAE_DROP, GroupChannelViT, MAEConfig, MAEViT, load_mae
from eoembed.nn.timm_vit import map_timm_state
from vit_layouts import mae_shapes, mae_state

S2_GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
RGB_TINY = MAEConfig(width=64, depth=2, heads=4, img_size=48, patch_size=16)
GROUP_TINY = MAEConfig(width=64, depth=2, heads=4, img_size=24, patch_size=8, in_chans=10,
                       channel_dim=16, groups=S2_GROUPS)
RGB_FULL = MAEConfig()
GROUP_FULL = MAEConfig(img_size=96, patch_size=8, in_chans=10, groups=S2_GROUPS)


def tiny_input(cfg: MAEConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)


RES = torch.tensor([1.0, 2.5])

# upstream outputs on mae_state(cfg, kind) and tiny_input(cfg): mean of the patch tokens
# [:, :4] and patch token 4 [:, :4] (grid row 1, column 1; group-channel: group 0)
UPSTREAM = {
    "satmae": ([[0.23355, 0.030107, -0.784373, 0.091571],
                [0.117158, -0.575057, -0.345981, -0.547211]],
               [[0.452342, 0.802431, 0.359454, -0.161969],
                [-0.372416, -2.662974, -1.250847, 0.331721]]),
    "group": ([[0.404436, -0.06601, -0.489918, -0.337814],
               [0.107892, -0.009695, -0.001886, -0.142313]],
              [[1.391463, -0.07222, -0.39587, -0.251141],
               [0.350153, -1.424457, 1.85515, 1.252957]]),
    "scalemae": ([[0.23355, 0.030107, -0.784373, 0.091572],
                  [-0.357169, -0.588475, -0.164427, -0.404505]],
                 [[0.452341, 0.802431, 0.359454, -0.16197],
                  [-0.52602, -2.285736, -0.929396, 0.497004]]),
}


def _build(kind: str) -> tuple[torch.nn.Module, MAEConfig]:
    if kind == "group":
        return GroupChannelViT(GROUP_TINY).eval(), GROUP_TINY
    return MAEViT(RGB_TINY, resolution_pos=kind == "scalemae").eval(), RGB_TINY


@pytest.mark.parametrize("kind", ["satmae", "group", "scalemae"])
def test_tiny_encoders_match_upstream_outputs(kind):
    model, cfg = _build(kind)
    info = load_mae(model, mae_state(cfg, kind))
    assert info["loaded"] == len(model.state_dict())
    x = tiny_input(cfg)
    with torch.no_grad():
        out, grid = model(x, RES) if kind == "scalemae" else model(x)
    assert grid == (3, 3)
    pooled, token4 = UPSTREAM[kind]
    torch.testing.assert_close(out[:, 1:].mean(1)[:, :4], torch.tensor(pooled), atol=2e-5, rtol=0)
    torch.testing.assert_close(out[:, 1 + 4, :4], torch.tensor(token4), atol=2e-5, rtol=0)


def test_scalemae_resolution_ratio_changes_positions_only():
    model, cfg = _build("scalemae")
    load_mae(model, mae_state(cfg, "scalemae"))
    x = tiny_input(cfg)[:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        out, _ = model(x, torch.tensor([1.0, 1.0]))
        scaled, _ = model(x, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(out[0], out[1])
    assert (scaled[1] - scaled[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="input_res"):
        model(x)


@pytest.mark.parametrize("kind,cfg", [("satmae", RGB_FULL), ("scalemae", RGB_FULL),
                                      ("group", GROUP_FULL)])
def test_full_size_key_layout(kind, cfg):
    with torch.device("meta"):
        model = GroupChannelViT(cfg) if kind == "group" else MAEViT(cfg)
        state = {k: torch.empty(s) for k, s in mae_shapes(cfg, kind).items()}
    mapped = map_timm_state(model, state, drop=MAE_DROP)
    assert len(mapped) == len(model.state_dict())
    n_params = sum(v.numel() for v in mapped.values())
    # encoder parameter counts of upstream's MAEs built at full size
    assert n_params == {"satmae": 303_099_904, "scalemae": 303_099_904,
                        "group": 302_970_880}[kind]


def test_unknown_and_missing_keys_name_themselves():
    model, cfg = _build("group")
    sd = mae_state(cfg, "group")
    sd["patch_embed.3.proj.weight"] = torch.zeros(64, 2, 8, 8)
    with pytest.raises(WeightsError, match=r"unexpected patch_embed\.3\.proj\.weight"):
        load_mae(model, sd)
    sd = mae_state(replace(RGB_TINY, depth=1), "satmae")
    with pytest.raises(WeightsError, match=r"missing blocks\.1\.norm1\.weight"):
        load_mae(MAEViT(RGB_TINY), sd)
