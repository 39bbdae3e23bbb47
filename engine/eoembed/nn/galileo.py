"""Galileo encoder in plain torch: flexible-patch multi-modal ViT, loading the released weights.

Galileo (Tseng et al. 2025, "Galileo: Learning Global & Local Features of Many Remote Sensing
Modalities", code github.com/nasaharvest/galileo, MIT) encodes space-time (S1, S2, NDVI),
space-only (SRTM, Dynamic World, WorldCereal), time-only (ERA5, TerraClimate, VIIRS) and static
inputs as one token per (patch, timestep, channel group). eoembed feeds the space-time groups
(Sentinel-2 and NDVI, optionally Sentinel-1); every other modality is absent, i.e. masked, and
masked tokens are removed before attention exactly as upstream does, so they cannot influence
the visible ones.

Checkpoint layout (``models/{nano,tiny,base}/encoder.pt`` of HF ``nasaharvest/galileo``, a plain
state dict): ``pos_embed``, ``month_embed.weight``, ``{s_t,sp,t,st}_channel_embed``,
``blocks.{i}.{norm1,attn.{q,k,v,proj},norm2,mlp.{fc1,fc2}}.*``,
``space_time_embed.<group>.proj.*`` (conv ``[D, C, 8, 8]``), ``space_embed.<group>.proj.*``,
``time_embed.<group>.*``, ``static_embed.<group>.*``, ``norm.*``. Sizes come from
``config.json`` → ``model.encoder``.

Input normalisation (``normalization.json``, key ``"13"``, as in pretraining):
``x' = (x − (mean − 2·std)) / (4·std)`` for every space-time band but NDVI, which is computed
from raw B8/B4 and left as is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BASE_GSD_M",
    "NORM_MEAN_13",
    "NORM_STD_13",
    "PRESETS",
    "SPACE_TIME_BANDS",
    "SPACE_TIME_GROUPS",
    "GalileoConfig",
    "GalileoEncoder",
    "galileo_state_dict",
    "grid_tokens",
    "load_normalization",
    "ndvi",
    "normalize_space_time",
    "pool_tokens",
    "sincos_2d",
]

BASE_GSD_M = 10.0
"""Ground sampling distance (m) a patch-size-1 token represents in pretraining."""

SPACE_TIME_BANDS: tuple[str, ...] = (
    "VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12", "NDVI",
)
"""The 13 space-time input bands, in the order of the last axis of ``s_t_x``."""

SPACE_TIME_GROUPS: dict[str, tuple[int, ...]] = {
    "S1": (0, 1),
    "S2_RGB": (2, 3, 4),
    "S2_Red_Edge": (5, 6, 7),
    "S2_NIR_10m": (8,),
    "S2_NIR_20m": (9,),
    "S2_SWIR": (10, 11),
    "NDVI": (12,),
}
"""Space-time channel groups → band indices into SPACE_TIME_BANDS; one token per group."""

# Channels per group of the modalities eoembed never feeds; they exist so that the released
# checkpoint loads strictly (their tokens are always masked, i.e. removed before attention).
SPACE_GROUPS: dict[str, int] = {"SRTM": 2, "DW": 9, "WC": 5}
TIME_GROUPS: dict[str, int] = {"ERA5": 2, "TC": 3, "VIIRS": 1}
STATIC_GROUPS: dict[str, int] = {"LS": 1, "location": 3, "DW_static": 9, "WC_static": 5}

# Published pretraining statistics of the 13 space-time bands (normalization.json, key "13").
NORM_MEAN_13: tuple[float, ...] = (
    -11.728724389184965, -18.85558188024017, 1395.3408730676722, 1338.4026921784578,
    1343.09883810357, 1543.8607982512297, 2186.2022069512263, 2525.0932853316694,
    2410.3377187373408, 2750.2854646886753, 2234.911100061487, 1474.5311266077113,
    0.2892116502999044,
)
NORM_STD_13: tuple[float, ...] = (
    4.887145774840316, 5.730270320384293, 917.7041440370853, 913.2988423581528,
    1092.678723527555, 1047.2206083460424, 1048.0101611156767, 1143.6903026819996,
    1098.979177731649, 1204.472755085893, 1145.9774063078878, 980.2429840007796,
    0.2720939024500081,
)
_STD_MULTIPLIER = 2.0


# --------------------------------------------------------------------------- preprocessing


def load_normalization(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the 13 space-time bands from a Galileo ``normalization.json``."""
    with open(path) as handle:
        table = json.load(handle)
    entry = table["13"]
    return tuple(float(v) for v in entry["mean"]), tuple(float(v) for v in entry["std"])


def ndvi(b8: Tensor, b4: Tensor) -> Tensor:
    """NDVI from raw NIR (B8) and red (B4), 0 where B8 + B4 ≤ 0 (as upstream computes it)."""
    total = b8 + b4
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, (b8 - b4) / safe, torch.zeros_like(total))


def normalize_space_time(x: Tensor, mean: Sequence[float] = NORM_MEAN_13,
                         std: Sequence[float] = NORM_STD_13) -> Tensor:
    """Pretraining normalisation of ``x [..., 13]`` (SPACE_TIME_BANDS order, raw units).

    Every band but NDVI maps through ``(x − (mean − 2·std)) / ((mean + 2·std) − (mean − 2·std))``
    so the central ±2σ land in [0, 1]; NDVI (last band) passes through unchanged.
    """
    if x.shape[-1] != len(SPACE_TIME_BANDS):
        raise ValueError(f"expected {len(SPACE_TIME_BANDS)} bands on the last axis, got "
                         f"{x.shape[-1]}")
    mean_t = torch.tensor(mean, dtype=torch.float64)
    std_t = torch.tensor(std, dtype=torch.float64)
    low = mean_t - _STD_MULTIPLIER * std_t
    div = (mean_t + _STD_MULTIPLIER * std_t) - low
    ndvi_idx = SPACE_TIME_BANDS.index("NDVI")
    low[ndvi_idx], div[ndvi_idx] = 0.0, 1.0
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return (x.to(dtype) - low.to(dtype=dtype, device=x.device)) / div.to(dtype=dtype,
                                                                           device=x.device)


# --------------------------------------------------------------------------- fixed encodings


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """[M, dim] sin|cos encoding of positions with frequencies 1 / 10000^(i / (2·dim)).

    This is the (MAE-derived) variant Galileo uses, whose exponent divides by twice the width.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / dim / 2.0)
    out = positions.reshape(-1, 1).float() * omega.to(positions.device)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, height: int, width: int, gsd_ratio: float,
              device: torch.device | None = None) -> Tensor:
    """[height, width, dim] spatial encoding: first half encodes the column, second the row,
    both scaled by ``gsd_ratio`` (ground size of one token / 10 m)."""
    rows = torch.arange(height, device=device, dtype=torch.float32) * gsd_ratio
    cols = torch.arange(width, device=device, dtype=torch.float32) * gsd_ratio
    col_grid = cols.expand(height, width)
    row_grid = rows[:, None].expand(height, width)
    emb = torch.cat([sincos_1d(dim // 2, col_grid), sincos_1d(dim // 2, row_grid)], dim=1)
    return emb.reshape(height, width, dim)


def month_table(dim: int) -> Tensor:
    """[12, dim] month encoding: sin(2π m/12) in the first half, cos in the second."""
    angles = torch.arange(12, dtype=torch.float32) * (2 * math.pi / 12)
    return torch.cat([torch.sin(angles)[:, None].expand(12, dim // 2),
                      torch.cos(angles)[:, None].expand(12, dim // 2)], dim=1).contiguous()


class _Table(nn.Module):
    """A fixed lookup table kept as a buffer named ``weight`` (the checkpoint's key)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", table)

    def forward(self, index: Tensor) -> Tensor:
        return self.weight[index]


# --------------------------------------------------------------------------- building blocks


class FlexiPatchEmbed(nn.Module):
    """Patch projection whose kernel is resized to any patch size (FlexiViT, Beyer et al. 2023).

    The stored kernel is ``max_patch_size`` square. For a smaller patch size ``p`` the kernel
    is ``pinv(R) · w`` with ``R`` the matrix of bicubic, antialiased resizing of an
    ``max_patch_size``² patch to ``p``²: the least-squares kernel for which a patch and its
    resized copy give the same token. (This is how Galileo trains and infers at patch sizes
    1–8.)

    Args:
        in_chans: channels in this group.
        embed_dim: token width.
        max_patch_size: side of the stored kernel.
    """

    def __init__(self, in_chans: int, embed_dim: int, max_patch_size: int = 8) -> None:
        super().__init__()
        self.max_patch_size = max_patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=max_patch_size,
                              stride=max_patch_size)
        self._pinv: dict[int, Tensor] = {}

    def resize_matrix_pinv(self, patch_size: int) -> Tensor:
        """[p², P²] pseudo-inverse of the bicubic resize matrix from P² to p² pixels."""
        if patch_size not in self._pinv:
            big = self.max_patch_size
            basis = torch.eye(big * big, dtype=torch.float32).reshape(big * big, 1, big, big)
            resized = F.interpolate(basis, size=(patch_size, patch_size), mode="bicubic",
                                    antialias=True)
            self._pinv[patch_size] = torch.linalg.pinv(resized.reshape(big * big, -1))
        return self._pinv[patch_size]

    def kernel(self, patch_size: int) -> Tensor:
        """[D, C, p, p] projection kernel for patch size ``p`` (the stored one for p = max)."""
        weight = self.proj.weight
        if patch_size == self.max_patch_size:
            return weight
        if not 1 <= patch_size <= self.max_patch_size:
            raise ValueError(f"patch_size must be in 1..{self.max_patch_size}, got {patch_size}")
        pinv = self.resize_matrix_pinv(patch_size).to(device=weight.device, dtype=weight.dtype)
        out, chans = weight.shape[:2]
        flat = weight.reshape(out * chans, -1) @ pinv.T
        return flat.reshape(out, chans, patch_size, patch_size)

    def forward(self, x: Tensor, patch_size: int | None = None) -> Tensor:
        """``x [N, C, H, W]`` → ``[N, D, H/p, W/p]``."""
        p = patch_size or self.max_patch_size
        return F.conv2d(x, self.kernel(p), self.proj.bias, stride=p)


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections (all with bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``x [B, N, D]``, ``key_mask [B, N]`` (True = may be attended to) → ``[B, N, D]``."""
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k = self.k(x).view(b, n, h, d // h).transpose(1, 2)
        v = self.v(x).view(b, n, h, d // h).transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer perceptron with exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, attention: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = (attention or Attention)(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``x [B, N, D]`` → ``[B, N, D]``; ``key_mask [B, N]`` True where a token is real."""
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------- the encoder


@dataclass(frozen=True)
class GalileoConfig:
    """Encoder sizes, as in ``config.json`` → ``model.encoder``."""

    embedding_size: int = 128
    depth: int = 4
    num_heads: int = 8
    mlp_ratio: float = 4.0
    max_sequence_length: int = 24
    max_patch_size: int = 8

    @classmethod
    def from_json(cls, config: Mapping | str | Path) -> GalileoConfig:
        """From a parsed or on-disk ``config.json`` (its ``model.encoder`` entry) or that
        entry itself; training-only keys (drop_path, freeze_projections) are ignored."""
        if not isinstance(config, Mapping):
            with open(config) as handle:
                config = json.load(handle)
        entry = config.get("model", {}).get("encoder", config)
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in entry.items() if k in names})


PRESETS: dict[str, GalileoConfig] = {
    "nano": GalileoConfig(128, 4, 8),
    "tiny": GalileoConfig(192, 12, 3),
    "base": GalileoConfig(768, 12, 12),
}
"""Released sizes (nasaharvest/galileo ``config/models/*.json``)."""


def galileo_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Released encoder state dict with the stray ``.backbone`` some keys carry removed."""
    return {k.replace(".backbone", ""): v for k, v in state_dict.items()}


class GalileoEncoder(nn.Module):
    """Galileo encoder (Tseng et al. 2025): a ViT over (patch, timestep, channel-group) tokens.

    Pretrained self-supervised on multi-modal, multi-temporal remote sensing; used here for
    pooled image embeddings and patch-level embedding grids of Sentinel-2 (± Sentinel-1)
    monthly frames. Each token is the group's flexi-patch projection plus a fixed encoding
    that is the concatenation (each a quarter of the width) of a learnt channel-group
    embedding, a sin/cos timestep position, a sin/cos month, and a 2D sin/cos position of the
    patch scaled by its ground size. Masked tokens are dropped before the transformer; the
    output tokens go through a final LayerNorm.

    Args:
        config: sizes (nano: width 128, depth 4, 8 heads).
    """

    def __init__(self, config: GalileoConfig | None = None) -> None:
        super().__init__()
        cfg = config or GalileoConfig()
        self.config = cfg
        dim = cfg.embedding_size
        quarter = int(dim * 0.25)
        self.quarter = quarter
        self.register_buffer("pos_embed",
                             sincos_1d(quarter, torch.arange(cfg.max_sequence_length)))
        self.month_embed = _Table(month_table(quarter))
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(SPACE_TIME_GROUPS), quarter))
        self.sp_channel_embed = nn.Parameter(torch.zeros(len(SPACE_GROUPS), quarter))
        self.t_channel_embed = nn.Parameter(torch.zeros(len(TIME_GROUPS), quarter))
        self.st_channel_embed = nn.Parameter(torch.zeros(len(STATIC_GROUPS), quarter))
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.space_time_embed = nn.ModuleDict(
            {g: FlexiPatchEmbed(len(i), dim, cfg.max_patch_size)
             for g, i in SPACE_TIME_GROUPS.items()})
        self.space_embed = nn.ModuleDict(
            {g: FlexiPatchEmbed(c, dim, cfg.max_patch_size) for g, c in SPACE_GROUPS.items()})
        self.time_embed = nn.ModuleDict({g: nn.Linear(c, dim) for g, c in TIME_GROUPS.items()})
        self.static_embed = nn.ModuleDict(
            {g: nn.Linear(c, dim) for g, c in STATIC_GROUPS.items()})
        self.norm = nn.LayerNorm(dim)

    @property
    def embed_dim(self) -> int:
        return self.config.embedding_size

    # ----------------------------------------------------------------- token construction

    def _tokens(self, s_t_x: Tensor, months: Tensor, patch_size: int, groups: list[int],
                input_resolution_m: float) -> Tensor:
        """Projected and encoded tokens ``[B, h, w, T, len(groups), D]`` of the given groups."""
        b, height, width, t, _ = s_t_x.shape
        p = patch_size
        h, w = height // p, width // p
        x = s_t_x.permute(0, 3, 4, 1, 2).reshape(b * t, -1, height, width)
        names = list(SPACE_TIME_GROUPS)
        projected = []
        for g in groups:
            idx = SPACE_TIME_GROUPS[names[g]]
            projected.append(self.space_time_embed[names[g]](x[:, idx[0]:idx[-1] + 1], p))
        tok = torch.stack(projected, dim=1)  # [B·T, G, D, h, w]
        tok = tok.view(b, t, len(groups), -1, h, w).permute(0, 4, 5, 1, 2, 3)

        q = self.quarter
        dev, dt = tok.device, tok.dtype
        group_idx = torch.tensor(groups, device=dev)
        channel = self.s_t_channel_embed[group_idx]  # [G, q]
        time_pos = self.pos_embed[:t]  # [T, q]
        month = self.month_embed(months.long())  # [B, T, q]
        space = sincos_2d(q, h, w, input_resolution_m * p / BASE_GSD_M, dev).to(dt)  # [h, w, q]
        shape = (b, h, w, t, len(groups), q)
        enc = torch.cat([
            channel[None, None, None, None].expand(shape),
            time_pos[None, None, None, :, None].expand(shape),
            month[:, None, None, :, None].expand(shape),
            space[None, :, :, None, None].expand(shape),
        ], dim=-1)
        return tok + enc

    # ----------------------------------------------------------------- forward

    def forward(self, s_t_x: Tensor, months: Tensor, patch_size: int | None = None,
                s_t_mask: Tensor | None = None,
                input_resolution_m: float = BASE_GSD_M) -> tuple[Tensor, Tensor]:
        """Encode space-time inputs; all other modalities are absent.

        Args:
            s_t_x: ``[B, H, W, T, 13]`` normalised inputs in SPACE_TIME_BANDS order;
                H and W multiples of ``patch_size``.
            months: ``[B, T]`` month of each frame, 0 = January.
            patch_size: pixels per token side, 1..max_patch_size (default max_patch_size).
            s_t_mask: bool, True where a token is absent, broadcastable to
                ``[B, H/p, W/p, T, 7]`` (7 = channel groups in SPACE_TIME_GROUPS order), e.g.
                ``[7]`` to drop whole groups such as S1. None: everything present.
            input_resolution_m: ground size of one input pixel in metres.

        Returns:
            tokens ``[B, H/p, W/p, T, 7, D]`` after the final LayerNorm (zeros where
            masked) and the mask ``[B, H/p, W/p, T, 7]`` (True = absent).
        """
        b, height, width, t, c = s_t_x.shape
        p = patch_size or self.config.max_patch_size
        if c != len(SPACE_TIME_BANDS):
            raise ValueError(f"s_t_x must have {len(SPACE_TIME_BANDS)} bands, got {c}")
        if height % p or width % p:
            raise ValueError(f"image {height}x{width} is not a multiple of patch size {p}")
        if t > self.config.max_sequence_length:
            raise ValueError(f"{t} timesteps exceed the maximum {self.config.max_sequence_length}")
        if months.shape != (b, t):
            raise ValueError(f"months must have shape {(b, t)}, got {tuple(months.shape)}")
        h, w, n_groups = height // p, width // p, len(SPACE_TIME_GROUPS)
        full_shape = (b, h, w, t, n_groups)
        if s_t_mask is None:
            mask = torch.zeros(full_shape, dtype=torch.bool, device=s_t_x.device)
        else:
            mask = s_t_mask.to(device=s_t_x.device, dtype=torch.bool).expand(full_shape)
        present = ~mask.reshape(-1, n_groups).all(dim=0)
        groups = [g for g in range(n_groups) if bool(present[g])]

        dim = self.config.embedding_size
        out = s_t_x.new_zeros((b, h * w * t * n_groups, dim))
        if not groups:
            return out.view(*full_shape, dim), mask
        x = self._tokens(s_t_x, months, p, groups, input_resolution_m)
        x = x.reshape(b, -1, dim)
        sub_mask = mask[..., groups].reshape(b, -1)
        # positions of the computed tokens inside the full (h, w, t, group) sequence
        slots = torch.arange(h * w * t * n_groups, device=x.device).view(h * w * t, n_groups)
        slots = slots[:, groups].reshape(-1)

        if not sub_mask.any():
            x = self._transform(x, None)
            out[:, slots] = x
        elif bool((sub_mask == sub_mask[:1]).all()):
            keep = ~sub_mask[0]
            x = self._transform(x[:, keep], None)
            out[:, slots[keep]] = x
        else:
            # different tokens per item: move the visible ones to the front (stable order),
            # pad to the longest and keep padding out of the attention keys
            order = torch.sort((~sub_mask).int(), dim=1, descending=True, stable=True)[1]
            counts = (~sub_mask).sum(dim=1)
            longest = int(counts.max())
            order = order[:, :longest]
            real = torch.arange(longest, device=x.device)[None] < counts[:, None]
            x = x.gather(1, order[..., None].expand(-1, -1, dim))
            x = self._transform(x, real)
            rows = torch.arange(b, device=x.device)[:, None].expand(-1, longest)
            out[rows[real], slots[order][real]] = x[real]
        return out.view(*full_shape, dim), mask

    def _transform(self, x: Tensor, key_mask: Tensor | None) -> Tensor:
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)

    def embed(self, s_t_x: Tensor, months: Tensor, patch_size: int | None = None,
              s_t_mask: Tensor | None = None,
              input_resolution_m: float = BASE_GSD_M) -> tuple[Tensor, Tensor]:
        """Pooled embedding ``[B, D]`` and embedding grid ``[B, D, H/p, W/p]``.

        Pooled is the mean of all visible output tokens (upstream ``average_tokens``); a grid
        cell is the mean over timesteps and channel groups of that patch's visible tokens
        (NaN where none is visible). Arguments as in ``forward``.
        """
        tokens, mask = self(s_t_x, months, patch_size, s_t_mask, input_resolution_m)
        return pool_tokens(tokens, mask), grid_tokens(tokens, mask)

    @classmethod
    def from_pretrained(cls, state_dict: Mapping[str, Tensor],
                        config: GalileoConfig | Mapping | None = None) -> GalileoEncoder:
        """Build and strictly load an encoder from a released state dict (and config)."""
        from eoembed.weights import load_into

        if config is not None and not isinstance(config, GalileoConfig):
            config = GalileoConfig.from_json(config)
        model = cls(config)
        load_into(model, galileo_state_dict(state_dict), what="Galileo encoder")
        return model.eval()


def pool_tokens(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of the visible tokens: ``[B, ..., D]`` with mask ``[B, ...]`` → ``[B, D]``."""
    visible = (~mask).reshape(mask.shape[0], -1, 1).to(tokens.dtype)
    flat = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
    return (flat * visible).sum(dim=1) / visible.sum(dim=1)


def grid_tokens(tokens: Tensor, mask: Tensor) -> Tensor:
    """Per-patch mean over (time, group) of visible tokens: ``[B, h, w, T, G, D]`` →
    ``[B, D, h, w]``."""
    b, h, w = tokens.shape[:3]
    visible = (~mask).reshape(b, h, w, -1, 1).to(tokens.dtype)
    flat = tokens.reshape(b, h, w, -1, tokens.shape[-1])
    mean = (flat * visible).sum(dim=3) / visible.sum(dim=3)
    return mean.permute(0, 3, 1, 2)
