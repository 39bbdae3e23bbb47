"""Presto encoder in plain torch: a pixel-timeseries transformer, loading the released weights.

Presto (Tseng et al. 2023, "Lightweight, Pre-trained Transformers for Remote Sensing
Timeseries", code github.com/nasaharvest/presto, MIT) embeds the time series of ONE pixel:
each (channel group, timestep) becomes a token — Sentinel-1, five Sentinel-2 groups, ERA5 and
NDVI per timestep, SRTM once, a Dynamic World class per timestep — plus one token for the
location. Absent groups are masked (removed before attention); the pooled embedding is the
final LayerNorm of the mean of the visible output tokens.

Checkpoint (``default_model.pt``, a plain state dict of the whole MAE): the encoder is every
key under ``encoder.`` — ``pos_embed (1, 24, 64)``, ``month_embed.weight (12, 32)``,
``channel_embed.weight (10, 32)``, ``eo_patch_embed.<group>.*`` (Linear → 128),
``dw_embed.weight (10, 128)``, ``latlon_embed.*``, ``blocks.{i}.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}.*``, ``norm.*``; sizes in ``default.json``.

Input: ``x [B, T, 17]`` in PRESTO_BANDS order, made from the 18 raw bands RAW_BANDS by
``normalize`` (``(x + ADD_BY) / DIVIDE_BY``, B9 dropped, NDVI recomputed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .galileo import Block as GalileoBlock
from .galileo import _Table

__all__ = [
    "ADD_BY",
    "BAND_GROUPS",
    "DIVIDE_BY",
    "DW_MISSING",
    "PRESTO_BANDS",
    "RAW_BANDS",
    "PrestoConfig",
    "PrestoEncoder",
    "normalize",
    "presto_state_dict",
]

RAW_BANDS: tuple[str, ...] = (
    "VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12",
    "temperature_2m", "total_precipitation", "elevation", "slope", "NDVI",
)
"""The 18 raw input bands: S1 in dB, S2 reflectance × 10000, ERA5 in K and m, SRTM m and °."""

ADD_BY: tuple[float, ...] = (25.0, 25.0) + (0.0,) * 11 + (-272.15, 0.0, 0.0, 0.0, 0.0)
DIVIDE_BY: tuple[float, ...] = (25.0, 25.0) + (10000.0,) * 11 + (35.0, 0.03, 2000.0, 50.0, 1.0)

PRESTO_BANDS: tuple[str, ...] = tuple(b for b in RAW_BANDS if b != "B9")
"""The 17 normalised bands the encoder takes (RAW_BANDS without B9)."""

BAND_GROUPS: dict[str, tuple[int, ...]] = {
    "S1": (0, 1),
    "S2_RGB": (2, 3, 4),
    "S2_Red_Edge": (5, 6, 7),
    "S2_NIR_10m": (8,),
    "S2_NIR_20m": (9,),
    "S2_SWIR": (10, 11),
    "ERA5": (12, 13),
    "SRTM": (14, 15),
    "NDVI": (16,),
}
"""Channel groups → indices into PRESTO_BANDS, in token (and channel-embedding) order."""

DW_CLASSES = 9
DW_MISSING = DW_CLASSES
"""Dynamic World class index meaning 'no label' (its tokens are masked)."""
_STATIC_GROUP = "SRTM"  # one token for the whole series, not one per timestep


def normalize(raw: Tensor) -> Tensor:
    """``raw [..., 18]`` (RAW_BANDS order) → ``[..., 17]`` (PRESTO_BANDS order).

    ``(x + ADD_BY) / DIVIDE_BY``, B9 dropped, and NDVI recomputed from the normalised B8 and
    B4 (0 where their sum is not positive), as upstream's pipeline does — the NDVI band of
    ``raw`` is ignored.
    """
    if raw.shape[-1] != len(RAW_BANDS):
        raise ValueError(f"expected {len(RAW_BANDS)} raw bands on the last axis, got "
                         f"{raw.shape[-1]}")
    dtype = raw.dtype if raw.is_floating_point() else torch.float32
    add = torch.tensor(ADD_BY, dtype=dtype, device=raw.device)
    div = torch.tensor(DIVIDE_BY, dtype=dtype, device=raw.device)
    x = (raw.to(dtype) + add) / div
    x = torch.cat([x[..., :10], x[..., 11:]], dim=-1)
    b8, b4 = x[..., PRESTO_BANDS.index("B8")], x[..., PRESTO_BANDS.index("B4")]
    total = b8 + b4
    ndvi = torch.where(total > 0, (b8 - b4) / torch.where(total > 0, total, 1.0), 0.0)
    return torch.cat([x[..., :-1], ndvi[..., None].to(dtype)], dim=-1)


def sinusoid_table(positions: int, dim: int, base: float = 1000.0) -> Tensor:
    """[positions, dim] interleaved encoding: sin at even, cos at odd channels, with angle
    ``pos / base^(2·(j // 2) / dim)`` (Presto uses base 1000)."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / base ** (2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def month_table(dim: int) -> Tensor:
    """[12, dim] month encoding: sin(2π m/12) in the first half, cos in the second."""
    angles = torch.arange(12, dtype=torch.float64) * (2 * math.pi / 12)
    return torch.cat([torch.sin(angles)[:, None].expand(12, dim // 2),
                      torch.cos(angles)[:, None].expand(12, dim // 2)], dim=1).float()


def months_per_step(month: int | Tensor, batch: int, steps: int,
                    device: torch.device | None = None) -> Tensor:
    """``[B, T]`` month index (0 = January) from a start month (int or ``[B]``) or ``[B, T]``."""
    if isinstance(month, int):
        month = torch.full((batch,), month, dtype=torch.long, device=device)
    month = month.to(device=device, dtype=torch.long)
    if bool(((month < 0) | (month > 11)).any()):
        raise ValueError("months must be 0 (January) .. 11 (December)")
    if month.ndim == 1:
        month = month[:, None] + torch.arange(steps, device=device)[None]
    if month.shape != (batch, steps):
        raise ValueError(f"month must be an int, [B] or [B, T] = {(batch, steps)}, got "
                         f"{tuple(month.shape)}")
    return month % 12


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (with bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``x [B, N, D]``, ``key_mask [B, N]`` (True = may be attended to) → ``[B, N, D]``."""
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(GalileoBlock):
    """Pre-norm transformer block as Galileo's (same keys), with Presto's fused-qkv attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__(dim, num_heads, mlp_ratio, attention=Attention)


@dataclass(frozen=True)
class PrestoConfig:
    """Encoder sizes (``default.json``: encoder_embedding_size, encoder_depth, …)."""

    embedding_size: int = 128
    channel_embed_ratio: float = 0.25
    month_embed_ratio: float = 0.25
    depth: int = 2
    mlp_ratio: float = 4.0
    num_heads: int = 8
    max_sequence_length: int = 24

    @classmethod
    def from_json(cls, config: Mapping | str | Path) -> PrestoConfig:
        """From a parsed or on-disk ``default.json``; decoder keys are ignored."""
        if not isinstance(config, Mapping):
            with open(config) as handle:
                config = json.load(handle)
        names = {"encoder_embedding_size": "embedding_size", "encoder_depth": "depth",
                 "encoder_num_heads": "num_heads", "channel_embed_ratio": "channel_embed_ratio",
                 "month_embed_ratio": "month_embed_ratio", "mlp_ratio": "mlp_ratio",
                 "max_sequence_length": "max_sequence_length"}
        return cls(**{names[k]: v for k, v in config.items() if k in names})


def presto_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The encoder's tensors of a released Presto checkpoint (``encoder.`` stripped)."""
    from eoembed.weights import extract_state_dict

    return extract_state_dict(checkpoint, prefixes=("encoder.",))


class PrestoEncoder(nn.Module):
    """Presto encoder (Tseng et al. 2023): a small transformer over one pixel's time series.

    Pretrained as a masked autoencoder on global S1/S2/ERA5/SRTM/Dynamic World pixel series;
    used here for per-pixel embeddings (pooled per ROI by averaging). Each token is its
    group's linear projection plus a fixed encoding: [month (¼ width) | learnt channel
    embedding (¼) | sin/cos timestep (½)]; the SRTM token carries only the channel part, the
    location token (a linear map of the lat/lon unit vector) none.

    Args:
        config: sizes (released: width 128, depth 2, 8 heads).
    """

    def __init__(self, config: PrestoConfig | None = None) -> None:
        super().__init__()
        cfg = config or PrestoConfig()
        self.config = cfg
        dim = cfg.embedding_size
        self.channel_dim = int(dim * cfg.channel_embed_ratio)
        self.month_dim = int(dim * cfg.month_embed_ratio)
        self.pos_dim = int(dim * (1 - (cfg.channel_embed_ratio + cfg.month_embed_ratio)))
        self.eo_patch_embed = nn.ModuleDict(
            {g: nn.Linear(len(i), dim) for g, i in BAND_GROUPS.items()})
        self.dw_embed = nn.Embedding(DW_CLASSES + 1, dim)
        self.latlon_embed = nn.Linear(3, dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim)
        self.register_buffer(
            "pos_embed", sinusoid_table(cfg.max_sequence_length, self.pos_dim)[None])
        self.month_embed = _Table(month_table(self.month_dim))
        self.channel_embed = nn.Embedding(len(BAND_GROUPS) + 1, self.channel_dim)

    @property
    def embed_dim(self) -> int:
        return self.config.embedding_size

    @staticmethod
    def cartesian(latlons: Tensor) -> Tensor:
        """``[B, 2]`` latitude, longitude in degrees → ``[B, 3]`` unit vector (x, y, z)."""
        rad = latlons * (math.pi / 180)
        lat, lon = rad[:, 0], rad[:, 1]
        return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon),
                            torch.sin(lat)], dim=-1)

    def _sequence(self, x: Tensor, dynamic_world: Tensor, months: Tensor,
                  mask: Tensor) -> tuple[Tensor, Tensor]:
        """All group tokens ``[B, N, D]`` with encodings, and their mask ``[B, N]``.

        Token order as upstream: each group's T steps in BAND_GROUPS order (SRTM once, from
        the first step), then the T Dynamic World tokens.
        """
        b, t, c = x.shape
        dim = self.config.embedding_size
        n_groups = len(BAND_GROUPS)
        # all group projections in one GEMM with a block-structured [G·D, 17] weight
        weight = x.new_zeros(n_groups, dim, c)
        for g, (name, idx) in enumerate(BAND_GROUPS.items()):
            weight[g, :, idx[0]:idx[-1] + 1] = self.eo_patch_embed[name].weight
        bias = torch.stack([self.eo_patch_embed[name].bias for name in BAND_GROUPS])
        proj = F.linear(x, weight.reshape(n_groups * dim, c), bias.reshape(-1))
        proj = proj.view(b, t, n_groups, dim).transpose(1, 2)  # [B, G, T, D]

        month = self.month_embed(months)  # [B, T, m]
        pos = self.pos_embed[0, :t]  # [T, p]
        shape = (b, n_groups, t)
        enc = torch.cat([month[:, None].expand(*shape, -1),
                         self.channel_embed.weight[:n_groups, None].expand(*shape, -1),
                         pos.expand(*shape, -1)], dim=-1)
        srtm = list(BAND_GROUPS).index(_STATIC_GROUP)
        enc[:, srtm, :, :self.month_dim] = 0
        enc[:, srtm, :, self.month_dim + self.channel_dim:] = 0
        group_mask = torch.stack([mask[..., i[0]:i[-1] + 1].amax(dim=-1)
                                  for i in BAND_GROUPS.values()], dim=1)  # [B, G, T]
        # SRTM is static: keep only its first step
        keep = torch.ones(n_groups, t, dtype=torch.bool, device=x.device)
        keep[srtm, 1:] = False
        keep = keep.reshape(-1)
        tokens = (proj + enc).reshape(b, n_groups * t, dim)[:, keep]
        token_mask = group_mask.reshape(b, n_groups * t)[:, keep]

        dw_enc = torch.cat([month, self.channel_embed.weight[n_groups].expand(b, t, -1),
                            pos.expand(b, t, -1)], dim=-1)
        dw_tokens = self.dw_embed(dynamic_world) + dw_enc
        return (torch.cat([tokens, dw_tokens], dim=1),
                torch.cat([token_mask, dynamic_world == DW_MISSING], dim=1))

    def forward(self, x: Tensor, dynamic_world: Tensor | None = None,
                latlons: Tensor | None = None, month: int | Tensor = 0,
                mask: Tensor | None = None) -> Tensor:
        """Pooled embedding of each pixel series.

        Args:
            x: ``[B, T, 17]`` normalised inputs (PRESTO_BANDS order; see ``normalize``).
            dynamic_world: ``[B, T]`` Dynamic World class 0–8, DW_MISSING (9) where unknown;
                None: unknown everywhere.
            latlons: ``[B, 2]`` latitude and longitude in degrees (always used, never masked
                upstream; pass the pixel's location).
            month: month of the first timestep (int or ``[B]``, 0 = January; later steps
                follow monthly) or ``[B, T]`` per step.
            mask: ``[B, T, 17]`` (or broadcastable), nonzero/True where a band is missing; a
                group's token is masked when any of its bands is. None: all present.

        Returns:
            ``[B, D]``: LayerNorm of the mean of the visible output tokens (location token
            included), as upstream's encoder in evaluation mode.
        """
        b, t, c = x.shape
        if c != len(PRESTO_BANDS):
            raise ValueError(f"x must have {len(PRESTO_BANDS)} bands, got {c}")
        if t > self.config.max_sequence_length:
            raise ValueError(f"{t} timesteps exceed the maximum {self.config.max_sequence_length}")
        if latlons is None or latlons.shape != (b, 2):
            raise ValueError(f"latlons must have shape {(b, 2)}")
        if dynamic_world is None:
            dynamic_world = torch.full((b, t), DW_MISSING, dtype=torch.long, device=x.device)
        full_mask = (torch.zeros((b, t, c), dtype=torch.bool, device=x.device) if mask is None
                     else mask.to(x.device).bool().expand(b, t, c))
        months = months_per_step(month, b, t, x.device)
        tokens, token_mask = self._sequence(x, dynamic_world.long(), months, full_mask)
        dim = tokens.shape[-1]

        key_mask = None
        if not token_mask.any():
            pass
        elif bool((token_mask == token_mask[:1]).all()):
            tokens = tokens[:, ~token_mask[0]]
        else:
            # different tokens per item: visible ones to the front (stable), pad to the longest
            order = torch.sort((~token_mask).int(), dim=1, descending=True, stable=True)[1]
            counts = (~token_mask).sum(dim=1)
            longest = int(counts.max())
            tokens = tokens.gather(1, order[:, :longest, None].expand(-1, -1, dim))
            key_mask = torch.arange(longest, device=x.device)[None] < counts[:, None]

        latlon = self.latlon_embed(self.cartesian(latlons.to(x.dtype)))[:, None]
        tokens = torch.cat([latlon, tokens], dim=1)
        if key_mask is not None:
            key_mask = torch.cat([key_mask.new_ones(b, 1), key_mask], dim=1)
        for block in self.blocks:
            tokens = block(tokens, key_mask)
        if key_mask is None:
            mean = tokens.mean(dim=1)
        else:
            weights = key_mask[..., None].to(tokens.dtype)
            mean = (tokens * weights).sum(dim=1) / weights.sum(dim=1)
        return self.norm(mean)

    @classmethod
    def from_pretrained(cls, checkpoint: Mapping,
                        config: PrestoConfig | Mapping | None = None) -> PrestoEncoder:
        """Build and strictly load the encoder from a released checkpoint (decoder ignored)."""
        from eoembed.weights import load_into

        if config is not None and not isinstance(config, PrestoConfig):
            config = PrestoConfig.from_json(config)
        model = cls(config)
        state = presto_state_dict(checkpoint)
        load_into(model, state, what="Presto encoder")
        return model.eval()
