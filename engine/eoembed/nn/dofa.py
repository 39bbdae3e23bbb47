"""DOFA (Xiong et al. 2024): a timm ViT whose patch embedding is generated from band wavelengths.

Layout of the published checkpoints (``DOFA_ViT_{base,large}_e100.pth``): ``patch_embed.*`` (the
wavelength hypernetwork, :class:`eoembed.nn.wavelength_embed.WavelengthPatchEmbed`),
``cls_token``, ``pos_embed [1, 1 + 196, D]``, timm ``blocks.{i}.*`` (LayerNorm eps 1e-6) and the
pooled output's norm as ``fc_norm.*`` (or ``norm.*`` in some exports); a classifier ``head.*``
is ignored. Pooled = ``fc_norm(mean of the patch tokens)``; the tokens are returned un-normed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import WeightsError
from .timm_vit import ViTConfig, load_timm_vit, timm_blocks
from .vit import LayerNorm
from .wavelength_embed import DOFA_STYLE, WavelengthPatchEmbed

#: patch side and input size of DOFA v1
PATCH = 16
IMAGE = 224


@dataclass(frozen=True)
class DofaConfig:
    width: int
    depth: int
    heads: int


DOFA_CONFIGS = {"base": DofaConfig(768, 12, 12), "large": DofaConfig(1024, 24, 16)}


class DOFA(nn.Module):
    """The DOFA encoder at 224 px: 14×14 tokens of 16 px (convolution padding 1, as upstream)."""

    def __init__(self, config: DofaConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        self.patch_embed = WavelengthPatchEmbed(d, PATCH, DOFA_STYLE)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        grid = IMAGE // PATCH
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d), requires_grad=False)
        self.blocks = timm_blocks(ViTConfig(d, config.depth, config.heads, eps=1e-6))
        self.fc_norm = LayerNorm(d, eps=1e-6)

    def forward(self, x: Tensor, wavelengths_um: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """``x [B, C, 224, 224]`` and ``[C]`` wavelengths (µm) → pooled ``[B, D]``, patch tokens
        ``[B, 196, D]`` (row-major, before any norm) and the grid ``(14, 14)``."""
        tokens, grid = self.patch_embed(x, wavelengths_um)
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"DOFA takes {IMAGE}×{IMAGE} px images, not {tuple(x.shape[-2:])}")
        tokens = tokens + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            h = block(h)
        patches = h[:, 1:]
        return self.fc_norm(patches.mean(dim=1)), patches, grid


def dofa_config(state: Mapping[str, Tensor]) -> DofaConfig:
    """Width, depth and heads (64-wide heads, as both releases) of a checkpoint."""
    if "cls_token" not in state:
        raise WeightsError("the checkpoint has no cls_token: it is not a DOFA encoder")
    width = int(state["cls_token"].shape[-1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return DofaConfig(width, depth, max(1, width // 64))


def load_dofa(state: Mapping[str, Tensor]) -> tuple[DOFA, dict[str, int]]:
    """A DOFA built from and filled with `state` (every kept key consumed; ``head.*`` dropped).

    A checkpoint whose pooled norm is stored as ``norm.*`` (and no ``fc_norm.*``) loads it as
    ``fc_norm``.
    """
    state = dict(state)
    rename = {}
    drop = ["head.*"]
    if not any(k.startswith("fc_norm.") for k in state):
        rename = {"norm.weight": "fc_norm.weight", "norm.bias": "fc_norm.bias"}
    else:
        drop.append("norm.*")
    model = DOFA(dofa_config(state))
    counts = load_timm_vit(model, state, drop=drop, rename=rename, what="DOFA")
    return model.eval(), counts
