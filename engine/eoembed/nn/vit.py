"""Plain-torch Vision Transformer parts in the OpenAI CLIP / open_clip parameter layout.

The building blocks here (patch embedding, fused-projection self-attention, the ``c_fc``/``c_proj``
MLP and the pre-norm residual block) carry exactly the parameter names of OpenAI's CLIP and of
open_clip (``attn.in_proj_weight``, ``attn.in_proj_bias``, ``attn.out_proj.*``, ``ln_1``,
``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``), so any checkpoint written in that layout loads into them
by name. Other ViT families reuse them where their layout matches.

Options that timm-style ViTs need (all off by default, so CLIP keys and numbers are unchanged):
``eps`` of the LayerNorms (MAE-family models use 1e-6), ``qkv_bias`` / ``proj_bias`` /
``mlp_bias`` (a layer without bias has no ``.bias`` key) and ``layer_scale`` (DINOv2-style
per-channel scales ``ls_1.gamma`` / ``ls_2.gamma`` on both residual branches). The mapping of
timm checkpoint keys onto these names lives in :mod:`eoembed.nn.timm_vit`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Activation names the MLP understands.
ACTIVATIONS = ("quick_gelu", "gelu")


class QuickGELU(nn.Module):
    """``x · sigmoid(1.702 x)``: the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    """The activation module called `name` ('quick_gelu' or 'gelu' with the exact erf form)."""
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation {name!r} is unknown; use one of {', '.join(ACTIVATIONS)}")


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as CLIP does under fp16)."""

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                           self.bias.float(), self.eps)
        return out.to(dtype)


class PatchEmbed(nn.Conv2d):
    """Non-overlapping square patches → tokens: a strided convolution without bias.

    Subclassing ``nn.Conv2d`` keeps the checkpoint name of the weight plain (``<name>.weight``,
    shape ``[width, in_chans, patch, patch]``), as in CLIP's ``visual.conv1``.

    Args:
        in_chans: input channels (3 for RGB CLIP, 10 for Llama3-MS-CLIP).
        width: token width.
        patch_size: patch side in pixels.
    """

    def __init__(self, in_chans: int, width: int, patch_size: int) -> None:
        super().__init__(in_chans, width, kernel_size=patch_size, stride=patch_size, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``x [B, C, H, W]`` → tokens ``[B, h·w, width]`` (row-major) and the grid ``(h, w)``."""
        y = super().forward(x)
        h, w = y.shape[-2:]
        return y.flatten(2).transpose(1, 2), (int(h), int(w))


class FusedSelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v input projection.

    Parameters mirror ``torch.nn.MultiheadAttention``: ``in_proj_weight [3W, W]`` (rows: q, k,
    v), ``in_proj_bias [3W]`` and ``out_proj`` (Linear W → W). Scores are scaled by
    ``head_dim^-0.5``.

    Args:
        width: token width W.
        heads: number of heads; must divide W.
        qkv_bias: the fused projection has a bias (``in_proj_bias``); else no such key.
        proj_bias: the output projection has a bias.
    """

    def __init__(self, width: int, heads: int, *, qkv_bias: bool = True,
                 proj_bias: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        if qkv_bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(width, width, bias=proj_bias)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """``x [B, N, W]`` → ``[B, N, W]``.

        `attn_mask` is ``[N, N]`` (boolean, True = may attend; or float, added to the scores);
        `is_causal` lets token i attend to tokens ≤ i only.
        """
        b, n, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class Mlp(nn.Module):
    """Two-layer feed-forward ``c_fc → act → c_proj`` (hidden = mlp_ratio · width)."""

    def __init__(self, width: int, mlp_ratio: float = 4.0, act: str = "gelu", *,
                 bias: bool = True) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.c_fc = nn.Linear(width, hidden, bias=bias)
        self.act = activation(act)
        self.c_proj = nn.Linear(hidden, width, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., W]`` → ``[..., W]``."""
        return self.c_proj(self.act(self.c_fc(x)))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (CaiT / DINOv2): ``x · gamma``."""

    def __init__(self, width: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    With `layer_scale` each branch is multiplied by a learned per-channel ``gamma`` first
    (``ls_1``, ``ls_2``).

    Args:
        width: token width.
        heads: attention heads.
        mlp_ratio: MLP hidden width over token width.
        act: MLP activation, 'quick_gelu' (OpenAI-trained weights) or 'gelu'.
        eps: LayerNorm epsilon (PyTorch's 1e-5 by default; MAE-family ViTs use 1e-6).
        qkv_bias: the fused q/k/v projection has a bias.
        proj_bias: the attention output projection has a bias.
        mlp_bias: both MLP layers have biases.
        layer_scale: initial LayerScale value, or None for no LayerScale.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu", *,
                 eps: float = 1e-5, qkv_bias: bool = True, proj_bias: bool = True,
                 mlp_bias: bool = True, layer_scale: float | None = None) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width, eps=eps)
        self.attn = FusedSelfAttention(width, heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ln_2 = LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, mlp_ratio, act, bias=mlp_bias)
        if layer_scale is not None:
            self.ls_1 = LayerScale(width, layer_scale)
            self.ls_2 = LayerScale(width, layer_scale)
        else:
            self.ls_1 = self.ls_2 = None

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """``x [B, N, W]`` → ``[B, N, W]``."""
        y = self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal)
        x = x + (self.ls_1(y) if self.ls_1 is not None else y)
        y = self.mlp(self.ln_2(x))
        return x + (self.ls_2(y) if self.ls_2 is not None else y)


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` stored as ``resblocks.{i}``.

    Keyword options (``eps``, ``qkv_bias``, …) are passed to every block.
    """

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                 act: str = "gelu", **block_options: Any) -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, act, **block_options)
            for _ in range(layers)
        )

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """``x [B, N, W]`` (batch first) → ``[B, N, W]``."""
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask, is_causal=is_causal)
        return x


def resize_grid_embedding(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                          extra_tokens: int = 1) -> Tensor:
    """Bicubically resample the grid part of a ``[extra + h·w, W]`` position table.

    The first `extra_tokens` rows (the class token) are kept; the rest are read as an
    ``old_grid`` image and resampled to ``new_grid``, so a network trained at one input size can
    embed another. Identity when the grids agree.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    head, grid = pos[:extra_tokens], pos[extra_tokens:]
    oh, ow = old_grid
    if grid.shape[0] != oh * ow:
        raise ValueError(f"position table has {grid.shape[0]} grid rows, not {oh}×{ow}")
    img = grid.reshape(1, oh, ow, -1).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = img.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(pos.dtype)
    return torch.cat([head, grid], dim=0)


def square_grid(n_tokens: int) -> int:
    """Side of the square grid with `n_tokens` cells, or ValueError when not a square."""
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"{n_tokens} grid tokens do not form a square")
    return side
