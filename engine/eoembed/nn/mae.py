"""MAE-family ViT encoders of fMoW models: SatMAE, SatMAE++ (RGB and the Sentinel-2
group-channel model) and Scale-MAE, with their published checkpoint layouts.

All three are timm ViTs (qkv bias, LayerNorm eps 1e-6, exact GELU) pretrained as masked
autoencoders; the checkpoints are whole MAEs, of which the encoder is kept:

- :class:`MAEViT`: ``patch_embed.proj`` (Conv2d with bias), ``cls_token``, ``blocks.{i}``,
  ``norm``. Positions: the fixed 2D sin-cos table (SatMAE, SatMAE++ RGB; the stored
  ``pos_embed`` is dropped and recomputed) or, with ``resolution_pos=True``, Scale-MAE's table
  with grid coordinates multiplied by each sample's ``input_res`` (a GSD ratio).
- :class:`GroupChannelViT` (SatMAE / SatMAE++ Sentinel): one ``patch_embed.{g}.proj`` per band
  group; each group's tokens get the 2D table over ``D − channel_dim`` channels concatenated with
  a fixed 1D sin-cos table of the group index over ``channel_dim`` channels; tokens are
  group-major (``G × L``); the class token gets no position (its table row and the
  ``channel_cls_embed`` are zeros).

Forward (mask ratio 0, tokens in grid order): patch tokens + positions, the class token
(+ its zero position row), the blocks, the final norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .pos_embed import sincos_1d, sincos_2d
from .timm_vit import ViTConfig, load_timm_vit, timm_blocks
from .vit import LayerNorm

__all__ = ["MAE_DROP", "GroupChannelViT", "MAEConfig", "MAEViT", "load_mae"]

#: checkpoint keys of the MAE decoders and auxiliary heads (SatMAE, SatMAE++, Scale-MAE,
#: timm classifier copies) and the stored position tables that are recomputed
MAE_DROP = ("decoder_*", "decoder.*", "mask_token", "mask_token_decoder", "pos_embed",
            "channel_embed", "proj_up_*", "up_block*", "fpn.*", "fcn.*",
            "fcn_high.*", "fcn_low.*", "pos_emb_projection.*", "head.*")


@dataclass(frozen=True)
class MAEConfig:
    """An MAE-family encoder: trunk size, input size, patch and channels."""

    width: int = 1024
    depth: int = 24
    heads: int = 16
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    channel_dim: int = 256  # group-channel models only
    groups: tuple[tuple[int, ...], ...] = ()

    @property
    def vit(self) -> ViTConfig:
        return ViTConfig(self.width, self.depth, self.heads, eps=1e-6)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


class PatchEmbed2d(nn.Module):
    """timm's ``PatchEmbed``: ``proj`` = Conv2d(C, D, p, stride p) with bias."""

    def __init__(self, in_chans: int, width: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, width, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        y = self.proj(x)
        h, w = y.shape[-2:]
        return y.flatten(2).transpose(1, 2), (int(h), int(w))


class _Trunk(nn.Module):
    """Class token, blocks and final norm shared by both encoders."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.blocks = timm_blocks(cfg.vit)
        self.norm = LayerNorm(cfg.width, eps=1e-6)

    def run(self, cls: Tensor, tokens: Tensor) -> Tensor:
        x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class MAEViT(_Trunk):
    """SatMAE / SatMAE++ RGB / Scale-MAE encoder over ``[B, C, H, W]``."""

    def __init__(self, cfg: MAEConfig, *, resolution_pos: bool = False) -> None:
        super().__init__(cfg)
        self.resolution_pos = resolution_pos
        self.patch_embed = PatchEmbed2d(cfg.in_chans, cfg.width, cfg.patch_size)

    def forward(self, x: Tensor, input_res: Tensor | None = None
                ) -> tuple[Tensor, tuple[int, int]]:
        """``x [B, C, H, W]`` → ``[B, 1 + h·w, D]`` after the final norm, and ``(h, w)``.

        `input_res` ``[B]`` (Scale-MAE only): the GSD ratio that scales the position grid.
        """
        tokens, (h, w) = self.patch_embed(x)
        if self.resolution_pos:
            if input_res is None:
                raise ValueError("Scale-MAE needs input_res, one GSD ratio per sample")
            table = sincos_2d(self.config.width, (h, w), scale=input_res, cls_token=True)
            table = table.to(tokens)
            return self.run(self.cls_token + table[:, :1], tokens + table[:, 1:]), (h, w)
        table = sincos_2d(self.config.width, (h, w), cls_token=True).to(tokens)
        return self.run(self.cls_token + table[:1], tokens + table[1:]), (h, w)


class GroupChannelViT(_Trunk):
    """SatMAE(++) Sentinel encoder: per-group patch embeddings and channel-group positions."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__(cfg)
        if not cfg.groups:
            raise ValueError("a group-channel ViT needs band groups")
        self.patch_embed = nn.ModuleList(
            PatchEmbed2d(len(g), cfg.width, cfg.patch_size) for g in cfg.groups)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``x [B, C, H, W]`` → ``[B, 1 + G·h·w, D]`` (group-major) and ``(h, w)``."""
        cfg = self.config
        embedded = [pe(x[:, list(g)]) for pe, g in zip(self.patch_embed, cfg.groups)]
        h, w = embedded[0][1]
        tokens = torch.stack([e[0] for e in embedded], dim=1)  # B G L D
        g = len(cfg.groups)
        pos = sincos_2d(cfg.width - cfg.channel_dim, (h, w)).to(tokens)  # L, D-c
        chan = sincos_1d(cfg.channel_dim, list(range(g))).to(tokens)  # G, c
        table = torch.cat([pos[None].expand(g, -1, -1),
                           chan[:, None].expand(-1, h * w, -1)], dim=-1)
        tokens = (tokens + table).reshape(tokens.shape[0], g * h * w, cfg.width)
        return self.run(self.cls_token, tokens), (h, w)


def load_mae(model: nn.Module, state: Mapping[str, Tensor], *, drop: Sequence[str] = MAE_DROP,
             what: str = "") -> dict[str, int]:
    """Fill an encoder from a published MAE (or encoder) state dict; every encoder key must be
    consumed and every other key must be a known decoder / head / stored-table key."""
    return load_timm_vit(model, state, drop=drop, what=what)
