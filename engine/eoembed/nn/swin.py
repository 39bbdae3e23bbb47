"""Swin Transformer image encoder: shifted-window attention with relative position bias."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: value added to attention logits between tokens of different sub-windows (as upstream Swin)
MASK_VALUE = -100.0


def window_partition(x: Tensor, window: int) -> Tensor:
    """Cut ``(B, H, W, C)`` into windows ``(B·nW, window², C)``, windows in row-major order.

    H and W must be multiples of `window`.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B·nW, window², C)`` back to ``(B, H, W, C)``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_position_index(window: int) -> Tensor:
    """``(window², window²)`` index into the ``((2·window−1)², heads)`` bias table.

    Entry (i, j) encodes the offset of token i from token j inside a window:
    ``(dy + window − 1)·(2·window − 1) + (dx + window − 1)``.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)  # 2, N
    rel = flat[:, :, None] - flat[:, None, :]  # 2, N, N
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def shifted_window_mask(hp: int, wp: int, window: int, shift: int) -> Tensor:
    """Additive attention mask ``(nW, window², window²)`` for a cyclic shift by `shift`.

    After rolling the padded ``hp × wp`` map by ``−shift``, a window at the bottom/right edge
    holds tokens from up to four regions that are not neighbours in the image; tokens of
    different regions get :data:`MASK_VALUE`, tokens of the same region 0.
    """
    region = torch.zeros(hp, wp)
    bounds = ((0, hp - window), (hp - window, hp - shift), (hp - shift, hp))
    col_bounds = ((0, wp - window), (wp - window, wp - shift), (wp - shift, wp))
    label = 0
    for y0, y1 in bounds:
        for x0, x1 in col_bounds:
            region[y0:y1, x0:x1] = label
            label += 1
    ids = window_partition(region[None, :, :, None], window).squeeze(-1)  # nW, N
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a learned relative position bias.

    Keys: ``qkv`` (fused, with bias), ``proj``, ``relative_position_bias_table`` of shape
    ``((2·window−1)², heads)`` and the persistent buffer ``relative_position_index``.
    """

    def __init__(self, dim: int, window: int, heads: int, qkv_bias: bool = True) -> None:
        """
        Args:
            dim: channels of the tokens.
            window: side of the square window, in tokens.
            heads: number of attention heads (must divide `dim`).
            qkv_bias: whether the fused qkv projection has a bias.
        """
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.window, self.heads = dim, window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> Tensor:
        """The ``(heads, window², window²)`` bias added to the attention logits."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.view(n, n, self.heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend within windows.

        Args:
            x: ``(B·nW, N, C)`` tokens of each window, N = window².
            mask: optional additive ``(nW, N, N)`` mask (0 / :data:`MASK_VALUE`), windows in the
                same order as in `x` for each image.

        Returns:
            ``(B·nW, N, C)``.
        """
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.position_bias().to(q.dtype)  # h, N, N
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], scale=self.scale)
        else:
            # group the windows per image so the (nW, N, N) mask broadcasts over the batch
            nw = mask.shape[0]
            q, k, v = (t.reshape(bw // nw, nw, *t.shape[1:]) for t in (q, k, v))
            bias = bias[None, None] + mask.to(q.dtype)[None, :, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
            out = out.reshape(bw, *out.shape[2:])
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinMlp(nn.Module):
    """Two-layer GELU MLP of a Swin block (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One Swin block: (shifted-)window attention then MLP, both pre-norm with residuals."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float = 4.0) -> None:
        """
        Args:
            dim: token channels.
            heads: attention heads.
            window: window side in tokens.
            shift: cyclic shift (0 for W-MSA, ``window // 2`` for SW-MSA).
            mlp_ratio: hidden width of the MLP relative to `dim`.
        """
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must lie in [0, window={window})")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args: `x` ``(B, H, W, C)``; `mask` the shifted-window mask of the padded map
        (used only when this block shifts). Returns ``(B, H, W, C)``.

        The normalised map is zero-padded at the bottom/right to a multiple of the window
        (padding tokens take part in attention, exactly as in the reference implementation).
        """
        b, h, w, c = x.shape
        win = self.window
        y = self.norm1(x)
        pad_b, pad_r = (win - h % win) % win, (win - w % win) % win
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, win), mask if self.shift else None)
        y = window_merge(y, win, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w, :]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Halve the resolution and double the channels: 2×2 neighbours → LayerNorm → Linear.

    The four neighbours are concatenated in the order (row 0, col 0), (row 1, col 0),
    (row 0, col 1), (row 1, col 1); odd sizes are zero-padded at the bottom/right first.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` → ``(B, ⌈H/2⌉, ⌈W/2⌉, 2C)``."""
        h, w = x.shape[1:3]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens: strided conv (``proj``) then LayerNorm (``norm``)."""

    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` → ``(B, ⌈H/p⌉, ⌈W/p⌉, dim)``; the image is zero-padded bottom/right."""
        h, w = x.shape[-2:]
        p = self.patch
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    """A stage: ``depth`` blocks alternating plain and shifted windows, then optional merging.

    Keys: ``blocks.{j}.*`` and ``downsample.*`` (absent in the last stage).
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window, self.shift = window, window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if j % 2 == 0 else window // 2, mlp_ratio) for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def run_blocks(self, x: Tensor) -> Tensor:
        """The stage's blocks on ``(B, H, W, C)``; the shifted-window mask is built once."""
        h, w = x.shape[1:3]
        win = self.window
        hp, wp = -(-h // win) * win, -(-w // win) * win
        mask = shifted_window_mask(hp, wp, win, self.shift).to(x.device, x.dtype) if self.shift else None
        for blk in self.blocks:
            x = blk(x, mask)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (stage output ``(B, H, W, C)``, input of the next stage)."""
        x = self.run_blocks(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinTransformer(nn.Module):
    """Swin Transformer backbone (Liu et al. 2021, "Swin Transformer: Hierarchical Vision
    Transformer using Shifted Windows", ICCV), in the detection/segmentation layout.

    Four stages at strides 4, 8, 16, 32 with widths ``embed_dim · 2^i``; each stage output goes
    through its own LayerNorm ``norm{i}``. Keys: ``patch_embed.{proj,norm}``,
    ``layers.{i}.blocks.{j}.{norm1,attn.{qkv,proj,relative_position_bias_table,
    relative_position_index},norm2,mlp.{fc1,fc2}}``, ``layers.{i}.downsample.{norm,reduction}``,
    ``norm{i}``. Swin-B (LAVT/RemoteSAM): embed 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32),
    window 12. Inputs of any size work: windows and merges pad at the bottom/right.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        heads: Sequence[int] = (4, 8, 16, 32),
        window: int = 12,
        patch: int = 4,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        """
        Args:
            embed_dim: channels of the first stage.
            depths: blocks per stage.
            heads: attention heads per stage.
            window: window side in tokens (all stages).
            patch: side of the patch-embedding conv, in pixels.
            in_chans: input image channels.
            mlp_ratio: MLP hidden width relative to the stage width.
        """
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError("depths and heads must have one entry per stage")
        self.num_stages = len(depths)
        self.dims = [embed_dim * 2**i for i in range(self.num_stages)]
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch)
        self.layers = nn.ModuleList(
            self.make_stage(i, self.dims[i], depths[i], heads[i], window, i < self.num_stages - 1, mlp_ratio)
            for i in range(self.num_stages)
        )
        for i, d in enumerate(self.dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))

    def make_stage(
        self, index: int, dim: int, depth: int, heads: int, window: int, downsample: bool, mlp_ratio: float
    ) -> nn.Module:
        """Build stage `index`; subclasses override it to add modules to a stage."""
        return SwinStage(dim, depth, heads, window, downsample, mlp_ratio)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C, H, W)`` image → per-stage normalised maps ``(B, dim_i, H/4/2^i, W/4/2^i)``
        (sizes rounded up)."""
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            outs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return outs
