"""Prithvi-EO-2.0 encoder (IBM / NASA): a timm-style ViT over 3D (frame × 16 × 16) patches.

Layout of the published MAE checkpoints (``Prithvi_EO_V2_*.pt``), encoder part:
``encoder.patch_embed.proj.{weight [D, 6, 1, p, p], bias}`` (Conv3d), ``encoder.cls_token``,
``encoder.pos_embed`` (a stored copy of the fixed 3D sin-cos table: dropped and recomputed),
``encoder.blocks.{i}.*`` (timm ``Block``, qkv bias, LayerNorm eps 1e-5, exact GELU),
``encoder.norm.*`` and, for the TL variants, ``encoder.temporal_embed_enc.scale`` and
``encoder.location_embed_enc.scale`` (learned scalars). ``decoder.*`` (and v1-style
``decoder_*`` / ``mask_token``) are dropped; an old ``_timm_module.`` infix is removed.

Forward (as terratorch's ``PrithviViT.forward_features``): patch tokens + the 3D table (frames,
rows, columns; recomputed for the actual frame count, bicubically resized with
``align_corners=True`` when the spatial grid differs from the 224-px one), + the TL temporal
encoding (sin-cos of year over D/2 and day-of-year over D/2, times ``scale``, per frame) and the
location encoding (sin-cos of latitude over D/2 and longitude over D/2, times ``scale``), then
the class token (+ its zero position row), the blocks and the final norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pos_embed import sincos_1d, sincos_3d
from .timm_vit import ViTConfig, load_timm_vit, timm_blocks
from .vit import LayerNorm

__all__ = ["PRESETS", "PrithviConfig", "PrithviEncoder", "load_prithvi"]


@dataclass(frozen=True)
class PrithviConfig:
    """One Prithvi-EO-2.0 size (terratorch ``prithvi_cfgs``)."""

    width: int
    depth: int
    heads: int
    patch_size: int = 16
    num_frames: int = 4
    coords: bool = False
    in_chans: int = 6
    img_size: int = 224
    mlp_ratio: float = 4.0

    @property
    def vit(self) -> ViTConfig:
        return ViTConfig(self.width, self.depth, self.heads, self.mlp_ratio, eps=1e-5)

    @property
    def grid(self) -> int:
        """Tokens per side at ``img_size``."""
        return self.img_size // self.patch_size


#: variant → configuration (terratorch ``prithvi_vit.py`` / HF ``config.json``)
PRESETS: dict[str, PrithviConfig] = {
    "tiny-tl": PrithviConfig(192, 12, 3, num_frames=1, coords=True),
    "100m-tl": PrithviConfig(768, 12, 12, coords=True),
    "300m": PrithviConfig(1024, 24, 16),
    "300m-tl": PrithviConfig(1024, 24, 16, coords=True),
    "600m": PrithviConfig(1280, 32, 16, patch_size=14),
    "600m-tl": PrithviConfig(1280, 32, 16, patch_size=14, coords=True),
}


class PatchEmbed3d(nn.Module):
    """``Conv3d(C, D, kernel = stride = (1, p, p))`` over ``[B, C, T, H, W]``; key ``proj``."""

    def __init__(self, in_chans: int, width: int, patch_size: int) -> None:
        super().__init__()
        k = (1, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, width, kernel_size=k, stride=k, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """``[B, C, T, H, W]`` → tokens ``[B, T·h·w, D]`` (frame, row, column) and ``(T, h, w)``."""
        y = self.proj(x)
        t, h, w = y.shape[-3:]
        return y.flatten(2).transpose(1, 2), (int(t), int(h), int(w))


class CoordScale(nn.Module):
    """The learned scalar ``scale`` of Prithvi's temporal / location encoders."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 0.1))


class PrithviEncoder(nn.Module):
    """The Prithvi-EO-2.0 ViT encoder (no masking): pixels and side inputs → normed tokens."""

    def __init__(self, cfg: PrithviConfig) -> None:
        super().__init__()
        if cfg.width % 16:
            raise ValueError(f"Prithvi width {cfg.width} must be divisible by 16")
        self.config = cfg
        self.patch_embed = PatchEmbed3d(cfg.in_chans, cfg.width, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.blocks = timm_blocks(cfg.vit)
        self.norm = LayerNorm(cfg.width, eps=1e-5)
        if cfg.coords:
            self.temporal_embed_enc = CoordScale()
            self.location_embed_enc = CoordScale()
        self._tables: dict[tuple[int, int, int], Tensor] = {}

    def position_table(self, t: int, h: int, w: int) -> Tensor:
        """``[1 + t·h·w, D]``: the 3D table for ``t`` frames on the training grid, resized to
        ``(h, w)`` bicubically (``align_corners=True``) when that differs (as upstream)."""
        key = (t, h, w)
        if key not in self._tables:
            g = self.config.grid
            table = sincos_3d(self.config.width, (t, g, g), cls_token=True)
            if (h, w) != (g, g):
                grid = table[1:].reshape(t, g, g, -1).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
                table = torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(t * h * w, -1)])
            self._tables[key] = table
        return self._tables[key]

    def coords_encoding(self, temporal_coords: Tensor | None, location_coords: Tensor | None,
                        t: int, tokens_per_frame: int) -> Tensor | float:
        """The TL side inputs' encoding to add to the patch tokens (0.0 when absent).

        `temporal_coords` ``[B, T, 2]`` = (year, day of year); `location_coords` ``[B, 2]`` =
        (latitude, longitude) in degrees.
        """
        if not self.config.coords:
            return 0.0
        d = self.config.width
        half = d // 2
        out: Tensor | float = 0.0
        if temporal_coords is not None:
            b = temporal_coords.shape[0]
            tc = temporal_coords.reshape(b * t, 2)
            enc = torch.cat([sincos_1d(half, tc[:, 0]), sincos_1d(d - half, tc[:, 1])], dim=1)
            enc = enc.to(self.cls_token).reshape(b, t, 1, d) * self.temporal_embed_enc.scale
            out = out + enc.expand(b, t, tokens_per_frame, d).reshape(b, t * tokens_per_frame, d)
        if location_coords is not None:
            lc = location_coords.reshape(-1, 2)
            enc = torch.cat([sincos_1d(half, lc[:, 0]), sincos_1d(d - half, lc[:, 1])], dim=1)
            out = out + enc.to(self.cls_token)[:, None, :] * self.location_embed_enc.scale
        return out

    def forward(self, x: Tensor, temporal_coords: Tensor | None = None,
                location_coords: Tensor | None = None) -> tuple[Tensor, tuple[int, int, int]]:
        """``x [B, C, T, H, W]`` (standardised) → ``[B, 1 + T·h·w, D]`` after the final norm, and
        the token grid ``(T, h, w)``. Side inputs are used by the TL variants only."""
        tokens, (t, h, w) = self.patch_embed(x)
        table = self.position_table(t, h, w).to(tokens)
        tokens = tokens + table[1:]
        tokens = tokens + self.coords_encoding(temporal_coords, location_coords, t, h * w)
        cls = (self.cls_token + table[:1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), (t, h, w)


def load_prithvi(model: PrithviEncoder, state: Mapping[str, Tensor], what: str = "Prithvi"
                 ) -> dict[str, int]:
    """Fill `model` from a published Prithvi MAE (or encoder-only) state dict; every encoder
    key must be consumed (WeightsError naming the keys otherwise)."""
    clean = {k.replace("_timm_module.", ""): v for k, v in state.items()}
    prefix = "encoder." if any(k.startswith("encoder.") for k in clean) else ""
    drop = ("decoder.*", "decoder_*", "mask_token", f"{prefix}pos_embed")
    return load_timm_vit(model, clean, prefix=prefix, drop=drop, what=what)
