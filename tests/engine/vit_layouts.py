"""Seeded checkpoints in the published key layouts of the ViT models (Prithvi-EO-2.0, SatMAE,
SatMAE++, Scale-MAE), shared by the network and embedder tests.

The upstream parity figures in ``nn/test_prithvi.py`` and ``nn/test_mae.py`` were measured on
exactly these tensors (same seeds, same order), loaded into the upstream models.
"""

from __future__ import annotations

import torch
from eoembed.nn.mae import MAEConfig
from eoembed.nn.prithvi import PrithviConfig


def prithvi_shapes(cfg: PrithviConfig, frames: int) -> dict[str, tuple[int, ...]]:
    """Key → shape of a published Prithvi MAE checkpoint (encoder, plus decoder samples)."""
    d, p, hid = cfg.width, cfg.patch_size, int(cfg.width * cfg.mlp_ratio)
    n = frames * cfg.grid ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.cls_token": (1, 1, d), "encoder.pos_embed": (1, 1 + n, d),
        "encoder.patch_embed.proj.weight": (d, cfg.in_chans, 1, p, p),
        "encoder.patch_embed.proj.bias": (d,),
    }
    for i in range(cfg.depth):
        b = f"encoder.blocks.{i}."
        shapes.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
            b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "mlp.fc1.weight": (hid, d),
            b + "mlp.fc1.bias": (hid,), b + "mlp.fc2.weight": (d, hid), b + "mlp.fc2.bias": (d,),
        })
    shapes["encoder.norm.weight"] = shapes["encoder.norm.bias"] = (d,)
    if cfg.coords:
        shapes["encoder.temporal_embed_enc.scale"] = (1,)
        shapes["encoder.location_embed_enc.scale"] = (1,)
        shapes["decoder.temporal_embed_dec.scale"] = (1,)
    shapes.update({"decoder.mask_token": (1, 1, 64), "decoder.decoder_pos_embed": (1, 1 + n, 64),
                   "decoder.decoder_embed.weight": (64, d), "decoder.decoder_embed.bias": (64,)})
    return shapes


def prithvi_state(cfg: PrithviConfig, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random tensors in the published layout (norm weights near 1, scales 0.7)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in prithvi_shapes(cfg, frames).items():
        t = torch.randn(*shape, generator=g) * 0.05
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            t = t + 1.0
        if key.endswith("scale"):
            t = torch.full(shape, 0.7)
        sd[key] = t
    return sd


def mae_shapes(cfg: MAEConfig, kind: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of the published MAE checkpoint's encoder (plus decoder samples).

    `kind`: ``"satmae"`` (also SatMAE++ RGB), ``"group"`` (SatMAE++ Sentinel) or
    ``"scalemae"``.
    """
    d, p, hid = cfg.width, cfg.patch_size, 4 * cfg.width
    n = cfg.grid ** 2
    shapes: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, d)}
    if kind == "group":
        for i, g in enumerate(cfg.groups):
            shapes[f"patch_embed.{i}.proj.weight"] = (d, len(g), p, p)
            shapes[f"patch_embed.{i}.proj.bias"] = (d,)
        shapes["pos_embed"] = (1, 1 + n, d - cfg.channel_dim)
        shapes["channel_embed"] = (1, len(cfg.groups), cfg.channel_dim)
    else:
        shapes["patch_embed.proj.weight"] = (d, cfg.in_chans, p, p)
        shapes["patch_embed.proj.bias"] = (d,)
        shapes["pos_embed"] = (1, 1 + n, d)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.qkv.weight": (3 * d, d),
            b + "attn.qkv.bias": (3 * d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "mlp.fc1.weight": (hid, d),
            b + "mlp.fc1.bias": (hid,), b + "mlp.fc2.weight": (d, hid), b + "mlp.fc2.bias": (d,),
        })
    shapes["norm.weight"] = shapes["norm.bias"] = (d,)
    shapes.update({"mask_token": (1, 1, 32), "decoder_embed.weight": (32, d),
                   "decoder_norm.weight": (32,)})
    if kind == "group":
        shapes["proj_up_conv.weight"] = (40, 10, 1, 1)
        shapes["up_block1.up_conv.weight"] = (40, 40, 4, 4)
    if kind == "scalemae":
        shapes["fpn.fpn1.0.weight"] = (32, 32, 2, 2)
        shapes["mask_token_decoder"] = (1, 1, 32)
    return shapes


def mae_state(cfg: MAEConfig, kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in mae_shapes(cfg, kind).items():
        t = torch.randn(*shape, generator=g) * 0.05
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            t = t + 1.0
        sd[key] = t
    return sd
