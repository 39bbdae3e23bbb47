"""SoftCon (Wang et al. 2024) ViT-S/14 and ViT-B/14: DINOv2 backbones for 13-band S2 or 2-band S1.

Layout of the published checkpoints (``B13_vits14_softcon.pth`` …): ``patch_embed.proj`` (a
14-px convolution over the input bands), ``cls_token``, a learned ``pos_embed [1, 1 + 256, D]``
(224 px), ``mask_token`` (used only by masked pretraining, dropped), timm-named
``blocks.{i}.*`` with LayerScale (``ls1``/``ls2``, LayerNorm eps 1e-6) and the final ``norm``.
Pooled = normed class token, grid = normed patch tokens (DINOv2's ``x_norm_clstoken`` and
``x_norm_patchtokens``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import WeightsError
from .timm_vit import ViTConfig, load_timm_vit, timm_blocks
from .vit import LayerNorm

PATCH = 14
IMAGE = 224


@dataclass(frozen=True)
class SoftConConfig:
    width: int
    depth: int
    heads: int
    in_chans: int


SOFTCON_CONFIGS = {"vits14": (384, 12, 6), "vitb14": (768, 12, 12)}


class SoftConViT(nn.Module):
    """DINOv2 ViT at 224 px (16×16 tokens of 14 px, no register tokens)."""

    def __init__(self, config: SoftConConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(config.in_chans, d, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        grid = IMAGE // PATCH
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self.blocks = timm_blocks(ViTConfig(d, config.depth, config.heads, eps=1e-6, layer_scale=1e-5))
        self.norm = LayerNorm(d, eps=1e-6)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """``x [B, C, 224, 224]`` → normed class token ``[B, D]``, normed patch tokens
        ``[B, 256, D]`` (row-major) and the grid ``(16, 16)``."""
        y = self.patch_embed.proj(x)
        h, w = y.shape[-2:]
        tokens = y.flatten(2).transpose(1, 2)
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"SoftCon takes {IMAGE}×{IMAGE} px images, not {tuple(x.shape[-2:])}")
        z = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            z = block(z)
        z = self.norm(z)
        return z[:, 0], z[:, 1:], (int(h), int(w))


def softcon_config(state: Mapping[str, Tensor]) -> SoftConConfig:
    """Width, depth, heads (64-wide) and input bands of a checkpoint."""
    try:
        proj = state["patch_embed.proj.weight"]
    except KeyError as exc:
        raise WeightsError("the checkpoint has no patch_embed.proj.weight: it is not a SoftCon ViT") from exc
    width, chans = int(proj.shape[0]), int(proj.shape[1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return SoftConConfig(width, depth, max(1, width // 64), chans)


def load_softcon(state: Mapping[str, Tensor]) -> tuple[SoftConViT, dict[str, int]]:
    """A SoftCon ViT built from and filled with `state` (every key but ``mask_token`` consumed)."""
    model = SoftConViT(softcon_config(state))
    counts = load_timm_vit(model, state, drop=["mask_token"], what="SoftCon ViT")
    return model.eval(), counts
