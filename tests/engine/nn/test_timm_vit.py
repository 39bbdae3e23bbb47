"""The timm-layout loader and the extended ViT block.

The block is checked against the timm ``Block`` computation written out here step by step
(LayerNorm, fused qkv, softmax attention, exact GELU MLP, LayerScale) with timm-named tensors.
Run once against timm 1.0.31 itself (``Block(64, 4, qkv_bias∈{True, False}, init_values∈{None,
1e-5, 0.3}, eps=1e-6)``, two blocks, weights N(0, 0.2)): max |diff| 0.0 in all four cases.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from eoembed.errors import WeightsError
from eoembed.nn.timm_vit import (
    ViTConfig,
    from_timm_key,
    load_timm_vit,
    map_timm_state,
    timm_blocks,
    to_timm_key,
)
from eoembed.nn.vit import LayerNorm
from torch import nn


def _timm_state(cfg: ViTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in timm's key layout for `cfg` (blocks + final norm + class token)."""
    g = torch.Generator().manual_seed(seed)
    w, hid = cfg.width, int(cfg.width * cfg.mlp_ratio)
    sd = {"cls_token": torch.randn(1, 1, w, generator=g)}
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        shapes = {"norm1.weight": (w,), "norm1.bias": (w,), "attn.qkv.weight": (3 * w, w),
                  "attn.proj.weight": (w, w), "attn.proj.bias": (w,), "norm2.weight": (w,),
                  "norm2.bias": (w,), "mlp.fc1.weight": (hid, w), "mlp.fc1.bias": (hid,),
                  "mlp.fc2.weight": (w, hid), "mlp.fc2.bias": (w,)}
        if cfg.qkv_bias:
            shapes["attn.qkv.bias"] = (3 * w,)
        if cfg.layer_scale is not None:
            shapes["ls1.gamma"] = shapes["ls2.gamma"] = (w,)
        for k, s in shapes.items():
            sd[p + k] = torch.randn(*s, generator=g) * 0.2 + (1.0 if k.startswith("norm") and
                                                             k.endswith("weight") else 0.0)
    sd["norm.weight"] = torch.randn(w, generator=g) * 0.1 + 1
    sd["norm.bias"] = torch.randn(w, generator=g) * 0.1
    return sd


class _Trunk(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.blocks = timm_blocks(cfg)
        self.norm = LayerNorm(cfg.width, eps=cfg.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def _reference(sd: dict[str, torch.Tensor], cfg: ViTConfig, x: torch.Tensor) -> torch.Tensor:
    """timm's Block forward, written out with the checkpoint's own key names."""
    heads, w = cfg.heads, cfg.width
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (w,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], cfg.eps)
        qkv = h @ sd[p + "attn.qkv.weight"].T + sd.get(p + "attn.qkv.bias", 0.0)
        b, n, _ = x.shape
        q, k, v = qkv.reshape(b, n, 3, heads, w // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (w // heads) ** 0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, w) @ sd[p + "attn.proj.weight"].T
        y = y + sd[p + "attn.proj.bias"]
        x = x + y * sd.get(p + "ls1.gamma", 1.0)
        h = F.layer_norm(x, (w,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], cfg.eps)
        y = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        y = y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + y * sd.get(p + "ls2.gamma", 1.0)
    return F.layer_norm(x, (w,), sd["norm.weight"], sd["norm.bias"], cfg.eps)


@pytest.mark.parametrize("qkv_bias,layer_scale,eps", [(True, None, 1e-6), (False, None, 1e-5),
                                                      (True, 0.5, 1e-6)])
def test_timm_checkpoint_gives_the_timm_computation(qkv_bias, layer_scale, eps):
    cfg = ViTConfig(48, 2, 3, eps=eps, qkv_bias=qkv_bias, layer_scale=layer_scale)
    sd = _timm_state(cfg)
    model = _Trunk(cfg).eval()
    info = load_timm_vit(model, sd)
    assert info == {"loaded": len(sd), "dropped": 0}
    assert ("blocks.0.attn.in_proj_bias" in model.state_dict()) == qkv_bias
    x = torch.randn(2, 7, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(sd, cfg, x), atol=2e-5, rtol=1e-5)


def test_key_map_round_trips_and_leaves_other_keys():
    for timm_key, ours in [("blocks.3.norm1.weight", "blocks.3.ln_1.weight"),
                           ("blocks.0.attn.qkv.bias", "blocks.0.attn.in_proj_bias"),
                           ("blocks.11.attn.proj.weight", "blocks.11.attn.out_proj.weight"),
                           ("blocks.2.ls2.gamma", "blocks.2.ls_2.gamma"),
                           ("blocks.1.mlp.fc2.bias", "blocks.1.mlp.c_proj.bias")]:
        assert from_timm_key(timm_key) == ours
        assert to_timm_key(ours) == timm_key
    for key in ("norm.weight", "cls_token", "patch_embed.proj.weight", "blocks_extra.norm1.x"):
        assert from_timm_key(key) == key
    assert from_timm_key("enc.layers.0.norm1.bias", "enc.layers.") == "enc.layers.0.ln_1.bias"


def test_prefix_and_drop_patterns_consume_every_key():
    cfg = ViTConfig(32, 1, 2)
    sd = {f"encoder.{k}": v for k, v in _timm_state(cfg).items()}
    sd["encoder.pos_embed"] = torch.zeros(1, 5, 32)
    sd["decoder.blocks.0.norm1.weight"] = torch.ones(16)
    sd["mask_token"] = torch.zeros(1, 1, 16)
    model = _Trunk(cfg)
    info = load_timm_vit(model, sd, prefix="encoder.",
                         drop=("decoder.*", "mask_token", "encoder.pos_embed"))
    assert info == {"loaded": len(sd) - 3, "dropped": 3}
    with pytest.raises(WeightsError, match=r"unexpected decoder\.blocks\.0\.norm1\.weight"):
        load_timm_vit(model, sd, prefix="encoder.", drop=("mask_token", "encoder.pos_embed"))


def test_wrong_and_missing_keys_name_themselves_in_checkpoint_spelling():
    cfg = ViTConfig(32, 2, 2)
    model = _Trunk(cfg)
    sd = _timm_state(cfg)
    del sd["blocks.1.attn.qkv.weight"]
    sd["blocks.1.attn.qkv_weight_typo"] = torch.zeros(96, 32)
    with pytest.raises(WeightsError) as err:
        map_timm_state(model, sd, what="tiny ViT")
    msg = str(err.value)
    assert "missing blocks.1.attn.qkv.weight" in msg
    assert "unexpected blocks.1.attn.qkv_weight_typo" in msg
    assert "tiny ViT" in msg
    sd = _timm_state(cfg)
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(64, 32)
    with pytest.raises(WeightsError, match=r"blocks\.0\.mlp\.fc1\.weight: checkpoint \(64, 32\) "
                                           r"vs model \(128, 32\)"):
        map_timm_state(model, sd)


def test_rename_maps_model_specific_names_and_reports_them_back():
    cfg = ViTConfig(32, 1, 2)
    sd = _timm_state(cfg)
    sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    model = _Trunk(cfg)
    rename = {"fc_norm.weight": "norm.weight", "fc_norm.bias": "norm.bias"}
    load_timm_vit(model, sd, rename=rename)
    torch.testing.assert_close(model.norm.weight.detach(), sd["fc_norm.weight"])
    del sd["fc_norm.bias"]
    with pytest.raises(WeightsError, match=r"missing fc_norm\.bias"):
        map_timm_state(model, sd, rename=rename)
