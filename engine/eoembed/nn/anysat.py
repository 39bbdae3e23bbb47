"""AnySat's Sentinel-2 time-series path: L-TAE projector, sub-patch encoder, ViT with a cross-attention head."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError
from ..weights import load_into

#: ground sampling distance of the S2 input, metres (AnySat's ``input_res['s2']``)
S2_RES_M = 10
#: the ten S2 bands AnySat reads, in order
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: per-band mean/std of the published TreeSatAI-TS demo (units of the TreeSatAI-TS S2 files)
DEMO_S2_MEAN = (4304.33, 4159.27, 4057.78, 4328.95, 4571.22, 4644.87, 4837.25, 4700.26, 2823.26, 2319.97)
DEMO_S2_STD = (3538.00, 3324.23, 3270.07, 3250.53, 2897.39, 2754.50, 2821.52, 2625.95, 1731.56, 1549.30)


# -- positional encodings ------------------------------------------------------------------


def temporal_encoding(days: Tensor, dim: int, period: float, repeat: int) -> Tensor:
    """L-TAE's sinusoidal encoding of acquisition days: ``(…,)`` → ``(…, dim·repeat)``.

    Channel ``c`` of one copy is ``sin`` (even c) / ``cos`` (odd c) of
    ``day / period^(2·⌊c/2⌋/dim)``; the copy is repeated once per attention head.
    """
    c = torch.arange(dim, device=days.device, dtype=torch.float32)
    denom = period ** (2 * torch.div(c, 2, rounding_mode="floor") / dim)
    angle = days.float()[..., None] / denom
    table = torch.where(c.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.repeat(*([1] * days.dim()), repeat)


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """``(M,)`` positions → ``(M, dim)``: ``[sin(p·ω), cos(p·ω)]`` with ω = 10000^(−k/(dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0))
    out = pos.reshape(-1).float()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, size: int, spacing: float, cls_token: bool = True) -> Tensor:
    """``(1, [1 +] size², dim)`` sin-cos encoding of a size×size grid with cell `spacing`.

    Cells in row-major order; the first half of the channels encodes the column coordinate,
    the second half the row coordinate (both × `spacing`); a class token gets zeros.
    """
    idx = torch.arange(size, dtype=torch.float32) * spacing
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb[None]


def irpe_buckets(height: int, width: int, ratio: float = 1.9) -> Tensor:
    """Bucket ids ``(1 + H·W, 1 + H·W)`` of iRPE's Euclidean method with one skip token.

    The distance between two grid cells is rounded, then squashed by the piecewise function
    of Wu et al. (2021, Eq. 18) with α = ratio, β = 2·ratio, γ = 8·ratio and shifted by ⌊β⌋;
    the class token (row/column 0) uses the extra bucket ``2·⌊β⌋ + 1``.
    """
    with torch.inference_mode(False):  # a cached tensor must stay usable outside inference mode
        return _irpe_buckets(height, width, ratio)


@lru_cache(maxsize=32)
def _irpe_buckets(height: int, width: int, ratio: float) -> Tensor:
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()
    dist = (pos[:, None, :] - pos[None, :, :]).square().sum(-1).sqrt().round()
    far = dist > alpha
    squashed = alpha + torch.log(dist.clamp(min=1e-6) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    squashed = squashed.round().clip(max=beta)
    ids = torch.where(far, squashed, dist).long() + int(beta)  # trunc toward zero, like `.to(long)`
    n = height * width
    out = torch.full((n + 1, n + 1), 2 * int(beta) + 1, dtype=torch.long)
    out[1:, 1:] = ids
    return out


class ContextualKeyRPE(nn.Module):
    """iRPE on keys, contextual mode, shared across heads (Wu et al. 2021, "Rethinking and
    Improving Relative Position Encoding for Vision Transformer").

    The bias added to logit (i, j) is ``q_i · w[bucket(i, j)]``; key ``lookup_table_weight``
    of shape ``(1, head_dim, buckets)``. As in AnySat's pure-PyTorch index path (the one its
    released model runs without the optional compiled extension), the bias is computed from the
    first head's query and shared by all heads.
    """

    def __init__(self, head_dim: int, ratio: float = 1.9) -> None:
        super().__init__()
        self.ratio = ratio
        self.lookup_table_weight = nn.Parameter(torch.zeros(1, head_dim, 2 * int(2 * ratio) + 2))

    def forward(self, q: Tensor, height: int, width: int) -> Tensor:
        """`q` ``(B, heads, 1 + H·W, head_dim)`` → bias ``(B, 1, 1 + H·W, 1 + H·W)``."""
        table = q[:, :1] @ self.lookup_table_weight[0]  # B, 1, L, buckets
        ids = irpe_buckets(height, width, self.ratio).to(q.device)
        return torch.gather(table, 3, ids.expand(table.shape[0], 1, *ids.shape))


# -- temporal projector (L-TAE) --------------------------------------------------------------


class MasterQueryAttention(nn.Module):
    """L-TAE attention: one learned query per head pools the sequence (keys ``Q``, ``fc1_k``)."""

    def __init__(self, heads: int, d_k: int, d_in: int) -> None:
        super().__init__()
        self.heads, self.d_k = heads, d_k
        self.Q = nn.Parameter(torch.zeros(heads, d_k))
        self.fc1_k = nn.Linear(d_in, heads * d_k)

    def forward(self, v: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """`v` ``(N, T, d_in)``, `pad_mask` ``(N, T)`` True = padded → ``(N, d_in)``, heads
        concatenated; head h reads channels ``[h·d_in/heads, (h+1)·d_in/heads)`` of `v`."""
        n, t, d = v.shape
        k = self.fc1_k(v).view(n, t, self.heads, self.d_k)
        logits = torch.einsum("hd,nthd->nht", self.Q, k) / self.d_k**0.5
        if pad_mask is not None:
            logits = logits.masked_fill(pad_mask[:, None, :], -1e3)
        attn = logits.softmax(dim=-1)
        vh = v.view(n, t, self.heads, d // self.heads)
        return torch.einsum("nht,nthc->nhc", attn, vh).reshape(n, d)


def _linear_gn_relu(sizes: list[int]) -> nn.Sequential:
    """Per layer: Linear → GroupNorm(4) → ReLU → Dropout(0) (indices 4·i … 4·i+3)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.GroupNorm(4, b), nn.ReLU(), nn.Dropout(0.0)]
    return nn.Sequential(*layers)


class LTAE(nn.Module):
    """Lightweight Temporal Attention Encoder (Garnot & Landrieu 2020) applied per pixel.

    Per pixel and date: MLP ``inconv`` (in → D/8 → D/2 → D → 2D → D); GroupNorm ``in_norm``
    over (channels, dates); plus the day-of-year encoding; master-query attention over dates;
    MLP ``mlp`` (D → D) and GroupNorm ``out_norm``. Order-free: permuting dates together with
    their frames leaves the output unchanged.
    """

    def __init__(self, in_channels: int = 10, dim: int = 768, heads: int = 16, d_k: int = 8, period: float = 367) -> None:
        super().__init__()
        self.heads, self.period, self.dim = heads, period, dim
        self.inconv = _linear_gn_relu([in_channels, dim // 8, dim // 2, dim, dim * 2, dim])
        # keep the same indices as upstream's Sequential (Linear, GroupNorm, ReLU without Dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GroupNorm(4, dim), nn.ReLU())
        self.in_norm = nn.GroupNorm(heads, dim)
        self.attention_heads = MasterQueryAttention(heads, d_k, dim)
        self.out_norm = nn.GroupNorm(heads, dim)

    def forward(self, x: Tensor, days: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """`x` ``(B, T, C, H, W)``, `days` ``(B, T)`` day of year, `pad_mask` ``(B, T)``
        True = padded date → ``(B, D, H, W)``."""
        b, t, c, h, w = x.shape
        out = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        out = self.inconv(out.reshape(-1, c)).view(b * h * w, t, self.dim)
        out = self.in_norm(out.transpose(1, 2)).transpose(1, 2)
        enc = temporal_encoding(days, self.dim // self.heads, self.period, self.heads)  # B, T, D
        out = out + enc[:, None, None].expand(b, h, w, t, self.dim).reshape(b * h * w, t, self.dim)
        mask = None if pad_mask is None else pad_mask[:, None, None].expand(b, h, w, t).reshape(b * h * w, t)
        out = self.out_norm(self.mlp(self.attention_heads(out, mask)))
        return out.view(b, h, w, self.dim).permute(0, 3, 1, 2)


class PatchLTAE(nn.Module):
    """AnySat's time-series projector: L-TAE per pixel, then the pixels of each patch as
    sub-patch tokens (keys ``pad_parameter``, ``patch_embed.*``)."""

    def __init__(self, in_channels: int = 10, dim: int = 768, heads: int = 16, d_k: int = 8, period: float = 367) -> None:
        super().__init__()
        self.patch_embed = LTAE(in_channels, dim, heads, d_k, period)
        self.pad_parameter = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def forward(self, x: Tensor, days: Tensor, scale: int, mask: Tensor | None = None) -> Tensor:
        """`x` ``(B, T, C, H, W)`` → ``(B·N, scale², D)``, N = (H//scale)·(W//scale) patches in
        row-major order, sub-patches row-major; pixels past the last full patch are dropped.
        `mask` (same shape as `x`, 0 = missing) replaces missing values by ``pad_parameter``."""
        if mask is not None:
            x = x.masked_fill(~mask.bool(), self.pad_parameter.item())
        f = self.patch_embed(x, days)  # B, D, H, W
        f = f.unfold(2, scale, scale).unfold(3, scale, scale)  # B, D, n, m, s, s
        f = f.flatten(2, 3).flatten(3, 4).permute(0, 2, 3, 1)  # B, N, s², D
        return f.flatten(0, 1)


# -- transformers ----------------------------------------------------------------------------


class Mlp(nn.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused ``qkv`` (with bias) and ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class RPESelfAttention(SelfAttention):
    """Self-attention over [cls, H×W grid] with contextual iRPE on keys (key ``rpe_k``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.rpe_k = ContextualKeyRPE(dim // heads)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        side = math.isqrt(n - 1)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = q * (c // self.heads) ** -0.5
        logits = q @ k.transpose(-2, -1) + self.rpe_k(q, side, side)
        out = logits.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block (keys ``norm1, attn, norm2, mlp``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6, rpe: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = RPESelfAttention(dim, heads) if rpe else SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossRPEAttention(nn.Module):
    """AnySat's output attention: one learned query per output token (``q_learned`` plus the
    token's sin-cos position) attends to all tokens with keys ``wk``, values ``wv`` and
    contextual iRPE (``rpe_k``, computed from the unscaled queries), then ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.wk, self.wv = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
        self.rpe_k = ContextualKeyRPE(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, scale: int) -> Tensor:
        """`x` ``(B, 1 + n², D)`` → ``(B, 1 + n², D)``; `scale` is the patch side in S2 pixels."""
        b, n, c = x.shape
        side = math.isqrt(n - 1)
        h, dh = self.heads, c // self.heads
        pos = sincos_2d(c, side, scale).to(x.device, x.dtype)
        q = (self.q_learned + pos).expand(b, n, c).reshape(b, n, h, dh).transpose(1, 2)
        k = self.wk(x).reshape(b, n, h, dh).transpose(1, 2)
        v = self.wv(x).reshape(b, n, h, dh).transpose(1, 2)
        logits = (q @ k.transpose(-2, -1)) * dh**-0.5 + self.rpe_k(q, side, side)
        out = logits.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CrossBlock(nn.Module):
    """Last block: cross-attention *without* a residual, then a residual MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = CrossRPEAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, scale: int) -> Tensor:
        x = self.attn(self.norm1(x), scale)
        return x + self.mlp(self.norm2(x))


class SubPatchEncoder(nn.Module):
    """AnySat's spatial encoder: a small transformer over each patch's sub-patch tokens whose
    class token becomes the patch token (keys ``cls_token``, ``predictor_blocks.{i}``,
    ``predictor_norm``)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.predictor_blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, eps=1e-5, rpe=True) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, res_m: float = S2_RES_M) -> Tensor:
        """`x` ``(B·N, s², D)`` → patch tokens ``(B·N, D)``; sub-patch positions are encoded
        in metres (cell spacing `res_m`)."""
        bn, s2, d = x.shape
        side = math.isqrt(s2)
        x = torch.cat([self.cls_token.expand(bn, -1, -1), x], dim=1)
        x = x + sincos_2d(d, side, res_m).to(x.device, x.dtype)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_norm(x)[:, 0]


class AnySatS2(nn.Module):
    """AnySat (Astruc et al. 2025, "AnySat: One Earth Observation Model for Many Resolutions,
    Scales, and Modalities", CVPR) on its Sentinel-2 time-series path.

    A self-supervised (JEPA) multimodal encoder; here only the ``s2`` modality is built:
    per-pixel L-TAE over the dated series (``projector_s2``), a sub-patch transformer that
    turns each patch of ``scale × scale`` pixels into one token (``spatial_encoder``), sin-cos
    patch positions scaled by the patch size, a class token, ``depth`` ViT blocks and a final
    cross-attention block (``blocks.{depth}``) whose outputs are the tile token and one token per
    patch. Keys are those of upstream's inner ``AnyModule`` (what ``models/AnySat.pth`` holds under
    ``state_dict``), so the released base weights load strictly for these modules; the other
    modalities' ``projector_*`` are ignored (:func:`anysat_state_dict`). Attention is computed
    exactly (upstream's release also runs with ``flash_attn=False``). The ``dense`` output
    is not implemented.

    Base: dim 768, depth 6, 12 heads; L-TAE 16 heads of key size 8, period 367.
    """

    def __init__(self, dim: int = 768, depth: int = 6, heads: int = 12, mlp_ratio: float = 4.0,
                 ltae_heads: int = 16, ltae_d_k: int = 8, in_channels: int = len(S2_BANDS),
                 spatial_depth: int | None = None) -> None:
        """
        Args:
            dim, depth, heads, mlp_ratio: the transformer (base: 768, 6, 12, 4).
            ltae_heads, ltae_d_k: L-TAE heads and key size (16, 8).
            in_channels: S2 bands (10).
            spatial_depth: blocks of the sub-patch encoder (default: `depth`, as upstream).
        """
        super().__init__()
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.projector_s2 = PatchLTAE(in_channels, dim, ltae_heads, ltae_d_k)
        self.spatial_encoder = SubPatchEncoder(dim, depth if spatial_depth is None else spatial_depth, heads, mlp_ratio)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)] + [CrossBlock(dim, heads, mlp_ratio)])

    def forward(self, s2: Tensor, days: Tensor, patch_size_m: int, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Embed a normalised S2 series.

        Args:
            s2: ``(B, T, 10, H, W)`` with H = W (10 m pixels, bands :data:`S2_BANDS`, normalised).
            days: ``(B, T)`` day of year of each frame (1 = 1 January, as upstream's loaders).
            patch_size_m: output patch side in metres, a positive multiple of 10; pixels past
                the last whole patch are dropped.
            mask: optional ``(B, T, 10, H, W)`` validity (0 = missing value).

        Returns:
            ``tile`` ``(B, D)``, ``patch`` ``(B, n, n, D)`` and ``grid`` ``(B, D, n, n)`` with
            n = H·10 // patch_size_m.
        """
        if patch_size_m <= 0 or patch_size_m % S2_RES_M:
            raise ValueError(f"patch_size_m={patch_size_m} must be a positive multiple of {S2_RES_M}")
        b, _, _, h, w = s2.shape
        if h != w:
            raise ValueError(f"AnySat takes square images, got {h}×{w}")
        scale = patch_size_m // S2_RES_M
        n = h // scale
        if n < 1:
            raise ValueError(f"patch_size_m={patch_size_m} is larger than the {h * S2_RES_M} m image")
        tokens = self.spatial_encoder(self.projector_s2(s2, days, scale, mask)).view(b, n * n, self.dim)
        pos = sincos_2d(self.dim, n, scale).to(tokens.device, tokens.dtype)
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + pos
        for blk in self.blocks[:-1]:
            x = blk(x)
        x = self.blocks[-1](x, scale)
        patch = x[:, 1:].reshape(b, n, n, self.dim)
        return {"tile": x[:, 0], "patch": patch, "grid": patch.permute(0, 3, 1, 2)}


#: prefixes of the S2 path and the shared modules (loaded strictly)
S2_PREFIXES = ("cls_token", "projector_s2.", "spatial_encoder.", "blocks.")


def anysat_state_dict(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """The S2-path state dict from a loaded ``AnySat.pth`` and the ignored key prefixes.

    `checkpoint` is the loaded file (a dict with ``state_dict``) or the state dict itself; a
    ``model.`` prefix (the hub wrapper) is stripped. Kept: ``cls_token``, ``projector_s2.*``,
    ``spatial_encoder.*``, ``blocks.*``; ignored (returned sorted, e.g. ``projector_aerial.``):
    every other top-level prefix.
    """
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(sd, Mapping) or not any(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsError("the AnySat checkpoint has no 'state_dict'; use models/AnySat.pth from hf:g-astruc/AnySat")
    sd = {k.removeprefix("model."): v for k, v in sd.items() if isinstance(v, Tensor)}
    kept = {k: v for k, v in sd.items() if k == "cls_token" or k.startswith(S2_PREFIXES[1:])}
    ignored = sorted({k.split(".")[0] + "." for k in sd if k not in kept})
    if "projector_s2.pad_parameter" not in kept:
        raise WeightsError("the AnySat checkpoint has no 'projector_s2' weights; use models/AnySat.pth from hf:g-astruc/AnySat")
    return kept, ignored


def anysat_config(state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """Constructor arguments of :class:`AnySatS2` implied by an S2-path state dict (width from
    ``cls_token``, depths from block keys, heads from the iRPE tables, L-TAE heads and key size
    from ``Q``)."""
    try:
        dim = int(state_dict["cls_token"].shape[-1])
        blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
        spatial = {int(k.split(".")[2]) for k in state_dict if k.startswith("spatial_encoder.predictor_blocks.")}
        head_dim = int(state_dict[f"blocks.{max(blocks)}.attn.rpe_k.lookup_table_weight"].shape[1])
        q = state_dict["projector_s2.patch_embed.attention_heads.Q"]
        channels = int(state_dict["projector_s2.patch_embed.inconv.0.weight"].shape[1])
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"the AnySat checkpoint lacks {exc}; use models/AnySat.pth from hf:g-astruc/AnySat") from exc
    return {"dim": dim, "depth": len(blocks) - 1, "heads": dim // head_dim, "ltae_heads": int(q.shape[0]),
            "ltae_d_k": int(q.shape[1]), "in_channels": channels, "spatial_depth": len(spatial)}


def load_anysat(model: AnySatS2, checkpoint: Mapping[str, Any]) -> list[str]:
    """Load ``AnySat.pth`` into `model`, strictly for the S2 path and the shared modules;
    returns the ignored prefixes (other modalities' projectors)."""
    sd, ignored = anysat_state_dict(checkpoint)
    load_into(model, sd, strict=True, what="the AnySat S2 encoder")
    return ignored
