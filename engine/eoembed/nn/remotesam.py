"""RemoteSAM's image encoder (a language-fused Swin-B) in a text-free mode or with a prompt."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError
from ..weights import load_into
from .bert import BertConfig, BertModel
from .swin import SwinStage, SwinTransformer

#: ImageNet statistics used by RemoteSAM's transforms (RGB in [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: width of the BERT-base token features that the fusion modules read
TEXT_DIM = 768


class _ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (keys ``conv``, ``bn``)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(1, 1, kernel, padding=kernel // 2, bias=False))
        self.add_module("bn", nn.BatchNorm2d(1))


class _ConvBN2(nn.Sequential):
    """1×1 conv → BN → 3×3 conv → BN on one channel (keys ``conv1, bn1, conv2, bn2``)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("conv1", nn.Conv2d(1, 1, 1, bias=False))
        self.add_module("bn1", nn.BatchNorm2d(1))
        self.add_module("conv2", nn.Conv2d(1, 1, 3, padding=1, bias=False))
        self.add_module("bn2", nn.BatchNorm2d(1))


class RepBlock(nn.Module):
    """Two re-parameterisable branch units on a one-channel map, ending in a sigmoid.

    Each unit sums a 1×1 branch, a (1×1→3×3) branch and a BatchNorm identity branch; a ReLU
    separates the units. Gives a per-pixel weight in (0, 1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.brb_3x3, self.brb_1x1, self.brb_identity = _ConvBN2(), _ConvBN(1), nn.BatchNorm2d(1)
        self.brb_3x3_2, self.brb_1x1_2, self.brb_identity_2 = _ConvBN2(), _ConvBN(1), nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` → ``(B, 1, H, W)`` weights."""
        y = F.relu(self.brb_1x1(x) + self.brb_3x3(x) + self.brb_identity(x))
        return torch.sigmoid(self.brb_1x1_2(y) + self.brb_3x3_2(y) + self.brb_identity_2(y))


class VariousReceptive(nn.Module):
    """RemoteSAM's text-free visual residual: re-weight each pixel by a RepBlock of the
    channel-mean map (key ``repblock``)."""

    def __init__(self) -> None:
        super().__init__()
        self.repblock = RepBlock()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` → ``(B, H, W, C)``."""
        weight = self.repblock(x.mean(dim=-1)[:, None])  # B, 1, H, W
        return x * weight[:, 0, :, :, None]


class ImageLanguageAttention(nn.Module):
    """Pixel-word attention of LAVT's PWAM: queries from pixels, keys/values from words.

    Keys ``f_query.0`` (1×1 conv, then a parameter-free InstanceNorm), ``f_key.0``,
    ``f_value.0``, ``W.0`` (1×1 conv, then InstanceNorm).
    """

    def __init__(self, dim: int, text_dim: int = TEXT_DIM, heads: int = 1) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.f_key = nn.Sequential(nn.Conv1d(text_dim, dim, 1))
        self.f_query = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.InstanceNorm1d(dim))
        self.f_value = nn.Sequential(nn.Conv1d(text_dim, dim, 1))
        self.W = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.InstanceNorm1d(dim))

    def forward(self, x: Tensor, lang: Tensor, lang_mask: Tensor) -> Tensor:
        """`x` ``(B, N, C)`` pixels, `lang` ``(B, text_dim, L)`` words, `lang_mask` ``(B, L)``
        (1 = word, 0 = padding) → ``(B, N, C)``."""
        b, n, c = x.shape
        m = lang_mask.to(x.dtype)[:, None, :]  # B, 1, L
        q = self.f_query(x.transpose(1, 2)).transpose(1, 2)  # B, N, C
        k = self.f_key(lang) * m
        v = self.f_value(lang) * m
        h = self.heads
        q = q.reshape(b, n, h, c // h).transpose(1, 2)  # B, h, N, c/h
        k = k.reshape(b, h, c // h, -1)  # B, h, c/h, L
        v = v.reshape(b, h, c // h, -1)
        logits = (q @ k) * c**-0.5 + (1e4 * m[:, None] - 1e4)
        out = logits.softmax(dim=-1) @ v.transpose(-1, -2)  # B, h, N, c/h
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.W(out.transpose(1, 2)).transpose(1, 2)


class PWAM(nn.Module):
    """Pixel-Word Attention Module (Yang et al. 2022, LAVT): visual projection times the
    word-attended features, then a projection (keys ``vis_project.0``, ``image_lang_att.*``,
    ``project_mm.0``)."""

    def __init__(self, dim: int, text_dim: int = TEXT_DIM, heads: int = 1) -> None:
        super().__init__()
        self.vis_project = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.GELU())
        self.image_lang_att = ImageLanguageAttention(dim, text_dim, heads)
        self.project_mm = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.GELU())

    def forward(self, x: Tensor, lang: Tensor, lang_mask: Tensor) -> Tensor:
        """`x` ``(B, N, C)`` → fused ``(B, N, C)``."""
        vis = self.vis_project(x.transpose(1, 2))
        words = self.image_lang_att(x, lang, lang_mask).transpose(1, 2)
        return self.project_mm(vis * words).transpose(1, 2)


def _gate(dim: int) -> nn.Sequential:
    """Linear → ReLU → Linear → Tanh, no biases (keys ``0``, ``2``)."""
    return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Tanh())


class RemoteSAMStage(SwinStage):
    """A Swin stage followed by RemoteSAM's two gated residuals.

    After the blocks: ``x ← x + res_gate(f)·f + visual_gate(v)·v`` with ``f = fusion(x, words)``
    (PWAM) and ``v = visual_residual(x)``; the stage output that the decoder reads is ``f``,
    and ``x`` goes on to patch merging. Without words the ``f`` term is left out and the stage
    output is ``x`` (see :class:`RemoteSAMImageEncoder`).
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool, mlp_ratio: float = 4.0,
                 fusion_heads: int = 1) -> None:
        super().__init__(dim, depth, heads, window, downsample, mlp_ratio)
        self.fusion = PWAM(dim, TEXT_DIM, fusion_heads)
        self.res_gate = _gate(dim)
        self.visual_residual = VariousReceptive()
        self.visual_gate = _gate(dim)

    def forward(self, x: Tensor, lang: Tensor | None = None, lang_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`x` ``(B, H, W, C)``; `lang` ``(B, 768, L)`` and `lang_mask` ``(B, L)`` or both None.

        Returns (stage output ``(B, H, W, C)``, input of the next stage).
        """
        x = self.run_blocks(x)
        v = self.visual_residual(x)
        if lang is None:
            x = x + self.visual_gate(v) * v
            out = x
        else:
            b, h, w, c = x.shape
            f = self.fusion(x.reshape(b, h * w, c), lang, lang_mask).reshape(b, h, w, c)
            x = x + self.res_gate(f) * f + self.visual_gate(v) * v
            out = f
        return out, (self.downsample(x) if self.downsample is not None else x)


# -- cross-scale interaction (CIM) -------------------------------------------------------------


class _LinearBN(nn.Sequential):
    """Bias-free Linear then BatchNorm1d over all tokens (keys ``c``, ``bn``)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.add_module("c", nn.Linear(a, b, bias=False))
        self.add_module("bn", nn.BatchNorm1d(b))

    def forward(self, x: Tensor) -> Tensor:
        y = self.c(x)
        return self.bn(y.flatten(0, 1)).reshape_as(y)


class _Residual(nn.Module):
    """``x + m(x)`` (key ``m``)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return x + self.m(x)


class _ScaleAttention(nn.Module):
    """CIM's attention over the tokens of three scales (keys ``qkv``, ``parallel_conv.1``,
    ``to_out``, ``proj``). The reshapes follow the reference implementation exactly, including
    its reinterpretation of (tokens, heads·channels) memory as (channels, tokens)."""

    def __init__(self, dim: int, side: int, n_tokens: int, key_dim: int = 32, heads: int = 8, ratio: int = 2) -> None:
        super().__init__()
        self.heads, self.key_dim, self.side = heads, key_dim, side
        self.d = ratio * key_dim
        self.dh = self.d * heads
        self.qkv = _LinearBN(dim, self.dh + 2 * key_dim * heads)
        self.parallel_conv = nn.Sequential(nn.Hardswish(), nn.Conv2d(self.dh, self.dh, 3, padding=1, groups=self.dh))
        self.to_out = nn.Linear(self.dh, dim)
        self.proj = nn.Linear(n_tokens, side * side)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C)`` tokens (the first side² from the finest scale) → ``(B, side², C)``."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        v0 = v[:, :, : self.side * self.side].reshape(b, self.dh, self.side, -1)
        v_conv = self.parallel_conv(v0).flatten(2)
        attn = ((q @ k.transpose(-2, -1)) * self.key_dim**-0.5).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, n)
        return self.to_out((self.proj(y) + v_conv).permute(0, 2, 1))


class _CrossScaleAttention(nn.Module):
    """Attention between a map and its 1/2 and 1/3 depth-wise downsamplings."""

    def __init__(self, dim: int, side: int) -> None:
        super().__init__()
        self.side = side
        half, third = (side + 2 - 3) // 2 + 1, (side + 4 - 5) // 3 + 1
        self.bn1 = nn.BatchNorm2d(dim)
        self.DWConv1 = nn.Sequential(nn.Conv2d(dim, dim, 3, 2, 1, groups=dim), nn.BatchNorm2d(dim))
        self.DWConv2 = nn.Sequential(nn.Conv2d(dim, dim, 5, 3, 2, groups=dim), nn.BatchNorm2d(dim))
        self.attention = _ScaleAttention(dim, side, side * side + half * half + third * third)
        self.bn4 = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x0 = self.bn1(x)
        tokens = torch.cat([x0.flatten(2), self.DWConv1(x0).flatten(2), self.DWConv2(x0).flatten(2)], dim=2)
        y = self.attention(tokens.permute(0, 2, 1)).permute(0, 2, 1).reshape(x.shape[0], -1, self.side, self.side)
        return self.conv(F.hardswish(self.bn4(y)))


class _FeedForward(nn.Module):
    """BN → 1×1 conv → BN → grouped 3×3 conv → ReLU6 → 1×1 conv."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, hidden, 1)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=dim)
        self.conv3 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(F.relu6(self.conv2(self.bn2(self.conv1(self.bn1(x))))))


class _IntraFeedForward(nn.Module):
    """One residual feed-forward per scale's share of the channels (keys ``ff1`` … ``ff4``)."""

    def __init__(self, channels: Sequence[int], ratio: int = 2) -> None:
        super().__init__()
        self.split = [c // 4 for c in channels]
        for i, c in enumerate(self.split, start=1):
            self.add_module(f"ff{i}", _Residual(_FeedForward(c, ratio * c)))

    def forward(self, x: Tensor) -> Tensor:
        parts = x.split(self.split, dim=1)
        return torch.cat([getattr(self, f"ff{i}")(p) for i, p in enumerate(parts, start=1)], dim=1)


class _CIMBlock(nn.Module):
    def __init__(self, dim: int, channels: Sequence[int], side: int, ratio: int = 2) -> None:
        super().__init__()
        self.csa1 = _Residual(_CrossScaleAttention(dim, side))
        self.intra_ff = _Residual(_IntraFeedForward(channels, ratio))
        self.csa2 = _Residual(_CrossScaleAttention(dim, side))
        self.ff = _Residual(_FeedForward(dim, dim * ratio))

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(self.csa2(self.intra_ff(self.csa1(x))))


class _ScaleAwareGate(nn.Module):
    """``bn1(local(x)) · hardsigmoid(bn3(act(g)))↑ + bn2(global(g))↑`` (↑ bilinear to x's size)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.local_embedding, self.bn1 = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)
        self.global_embedding, self.bn2 = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)
        self.global_act, self.bn3 = nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        size = x.shape[-2:]
        local = self.bn1(self.local_embedding(x))
        glob = F.interpolate(self.bn2(self.global_embedding(g)), size=size, mode="bilinear", align_corners=False)
        act = F.interpolate(F.hardsigmoid(self.bn3(self.global_act(g))), size=size, mode="bilinear", align_corners=False)
        return local * act + glob


class CrossScaleInteraction(nn.Module):
    """RemoteSAM's cross-scale interaction module (key prefix ``backbone.cim.``): the four stage
    maps are average-pooled to the stage-4 size, mixed by a block of cross-scale attention and
    feed-forwards, and gated back into each stage map. Its attention has fixed sizes: stage 4
    must be ``side × side`` (28 × 28, i.e. an 896 px input)."""

    def __init__(self, channels: Sequence[int] = (128, 256, 512, 1024), side: int = 28) -> None:
        super().__init__()
        self.channels, self.side = list(channels), side
        dim = sum(channels)
        hidden = dim // 4
        self.down_channel = nn.Conv2d(dim, hidden, 1)
        self.up_channel = nn.Conv2d(hidden, dim, 1)
        self.block = nn.ModuleList([_CIMBlock(hidden, channels, side)])
        self.bn = nn.BatchNorm2d(hidden)
        self.fusion = nn.ModuleList(_ScaleAwareGate(c) for c in channels)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Four ``(B, C_i, h_i, w_i)`` maps → four maps of the same shapes."""
        h, w = maps[-1].shape[-2:]
        if (h, w) != (self.side, self.side):
            raise ValueError(f"the cross-scale module needs a {self.side}×{self.side} stage-4 map, got {h}×{w}")
        x = torch.cat([F.adaptive_avg_pool2d(m, (h, w)) for m in maps], dim=1)
        x = self.down_channel(x)
        for blk in self.block:
            x = blk(x)
        mixed = self.up_channel(self.bn(x)).split(self.channels, dim=1)
        return [gate(m, g) for gate, m, g in zip(self.fusion, maps, mixed)]


class RemoteSAMBackbone(SwinTransformer):
    """RemoteSAM's multimodal Swin (Yao et al. 2025, "RemoteSAM: Towards Segment Anything
    for Earth Observation"; the LAVT design of Yang et al. 2022 plus a visual gated residual).

    Key layout as under ``backbone.`` in the released checkpoint: the Swin keys of
    :class:`~eoembed.nn.swin.SwinTransformer` plus, per stage ``layers.{i}``, ``fusion.*``
    (PWAM), ``res_gate.{0,2}``, ``visual_residual.repblock.*`` and ``visual_gate.{0,2}``.
    With ``cross_scale`` the cross-scale interaction module ``cim.*`` is built and applied to
    the four normalised stage maps (it needs a ``cim_side``² stage-4 map: 28² at 896 px).
    """

    def __init__(self, embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
                 heads: Sequence[int] = (4, 8, 16, 32), window: int = 12,
                 fusion_heads: Sequence[int] = (1, 1, 1, 1), cross_scale: bool = False, cim_side: int = 28) -> None:
        self._fusion_heads = tuple(fusion_heads)
        super().__init__(embed_dim, depths, heads, window, patch=4, in_chans=3)
        self.cim = CrossScaleInteraction(self.dims, cim_side) if cross_scale else None

    def make_stage(self, index: int, dim: int, depth: int, heads: int, window: int, downsample: bool,
                   mlp_ratio: float) -> nn.Module:
        return RemoteSAMStage(dim, depth, heads, window, downsample, mlp_ratio, self._fusion_heads[index])

    def forward(self, x: Tensor, lang: Tensor | None = None, lang_mask: Tensor | None = None) -> list[Tensor]:
        """``(B, 3, H, W)`` normalised image → four stage maps ``(B, C_i, h_i, w_i)``.

        With `lang` ``(B, 768, L)`` / `lang_mask` ``(B, L)`` the maps are the PWAM-fused features
        (as in training); without them, the visual stream of each stage. Each map passes its
        LayerNorm ``norm{i}``, then the cross-scale module when built.
        """
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x, lang, lang_mask)
            outs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return self.cim(outs) if self.cim is not None else outs


class RemoteSAMImageEncoder(nn.Module):
    """RemoteSAM's image encoder as an embedding model, text-free or with a given prompt.

    RemoteSAM (Yao et al. 2025) segments what a sentence refers to: BERT-base encodes the
    sentence and every stage of its Swin-B fuses the words into the pixels (LAVT's PWAM with a
    tanh-gated residual); a cross-scale interaction module (CIM) then mixes the four stage maps
    before the mask decoder. The trained model has no text-free path: every stage output, and
    the features that reach the next stage, depend on the sentence.

    ``mode="text-free"`` defines one by *bypassing the language fusion*: in every stage the PWAM
    term ``res_gate(f)·f`` is left out of the residual, so the visual stream passes through
    unchanged apart from RemoteSAM's text-free visual residual ``visual_gate(v)·v``, which is
    kept. The stage-4 output is that visual stream after the stage's LayerNorm ``norm3`` (in
    training ``norm3`` saw the PWAM output instead); the CIM, the text encoder and the mask
    decoder are not used. This is a **deviation from the trained model**: the features are
    RemoteSAM's visual features, never those its decoder saw; it is the default because no
    prompt is neutral, and any prompt makes the embedding a statement about that prompt.

    ``mode="prompt"`` runs the trained model as it is: the sentence's BERT token features are
    fused in every stage, and the output is the CIM-gated stage-4 map that the decoder reads
    (the CIM fixes the input to 896 × 896). Token ids come from
    :class:`eoembed.nn.bert_tokenizer.WordPieceTokenizer` (20 tokens, as RemoteSAM).

    Input: RGB in [0, 1], ``(B, 3, H, W)`` (RemoteSAM uses 896 × 896), normalised here with the
    ImageNet mean/std. Outputs: ``grid`` — the stage-4 map ``(B, 1024, ⌈H/32⌉, ⌈W/32⌉)`` for
    Swin-B — and ``pooled`` — its mean over cells ``(B, 1024)``.
    """

    def __init__(self, embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
                 heads: Sequence[int] = (4, 8, 16, 32), window: int = 12,
                 fusion_heads: Sequence[int] = (1, 1, 1, 1),
                 mode: Literal["text-free", "prompt"] = "text-free",
                 text: BertConfig | None = None, cim_side: int = 28) -> None:
        """
        Args:
            embed_dim, depths, heads, window: the Swin configuration (defaults: Swin-B, window 12).
            fusion_heads: PWAM heads per stage (upstream ``--mha``; default one each).
            mode: ``"text-free"`` (language fusion bypassed) or ``"prompt"`` (the trained path).
            text: BERT sizes for ``"prompt"`` (default bert-base-uncased).
            cim_side: stage-4 side the CIM is built for (28: an 896 px input).
        """
        super().__init__()
        if mode not in ("text-free", "prompt"):
            raise ValueError(f"mode={mode!r} must be 'text-free' or 'prompt'")
        self.mode = mode
        self.backbone = RemoteSAMBackbone(embed_dim, depths, heads, window, fusion_heads,
                                          cross_scale=mode == "prompt", cim_side=cim_side)
        self.text_encoder = BertModel(text) if mode == "prompt" else None
        self.dim = self.backbone.dims[-1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: Tensor, ids: Tensor | None = None, mask: Tensor | None = None) -> dict[str, Tensor]:
        """`rgb` ``(B, 3, H, W)`` in [0, 1] (and, in prompt mode, token `ids` / `mask` ``(B, L)``)
        → ``{"grid": (B, D, h, w), "pooled": (B, D)}``."""
        x = (rgb - self.mean) / self.std
        if self.text_encoder is None:
            grid = self.backbone(x)[-1]
        else:
            if ids is None or mask is None:
                raise ValueError("prompt mode needs token ids and mask")
            words = self.text_encoder(ids, mask)  # B, L, 768
            grid = self.backbone(x, words.transpose(1, 2), mask)[-1]
        return {"grid": grid, "pooled": grid.mean(dim=(2, 3))}


def _kept(key: str, mode: str) -> bool:
    if mode == "prompt":
        return key.startswith(("backbone.", "text_encoder."))
    return key.startswith("backbone.") and not key.startswith("backbone.cim.")


def remotesam_state_dict(checkpoint: Mapping[str, Any], mode: str = "text-free") -> tuple[dict[str, Tensor], list[str]]:
    """The encoder's state dict from a loaded RemoteSAM checkpoint, and the ignored prefixes.

    `checkpoint` is the unpickled ``.pth`` (a dict with ``model``, ``args``, …) or the ``model``
    state dict itself. A DDP ``module.`` prefix is stripped. Text-free keeps ``backbone.*`` but
    ``backbone.cim.*``; prompt mode keeps ``backbone.*`` and ``text_encoder.*`` (BERT). Dropped
    prefixes (e.g. ``classifier.``, the mask decoder) are returned, sorted.
    """
    sd = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(sd, Mapping) or not any(isinstance(v, Tensor) for v in sd.values()):
        raise WeightsError("the RemoteSAM checkpoint has no 'model' state dict; use RemoteSAMv1.pth from hf:1e12Leon/RemoteSAM")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, Tensor)}
    kept = {k: v for k, v in sd.items() if _kept(k, mode)}
    ignored = sorted({"backbone.cim." if k.startswith("backbone.cim.") else k.split(".")[0] + "."
                      for k in sd if k not in kept})
    if not any(k.startswith("backbone.") for k in kept):
        raise WeightsError("the RemoteSAM checkpoint holds no 'backbone.' weights; use RemoteSAMv1.pth from hf:1e12Leon/RemoteSAM")
    return kept, ignored


def remotesam_config(state_dict: Mapping[str, Tensor], args: Any = None) -> dict[str, Any]:
    """The Swin configuration implied by a RemoteSAM state dict (and upstream's `args`).

    Width from ``patch_embed.proj``, blocks per stage from the ``layers.{i}.blocks.{j}`` keys,
    heads from each stage's bias table ``((2·window−1)², heads)``, window from its length;
    PWAM heads from ``args.mha`` (``"a-b-c-d"``, empty = one each) when given.
    """
    sd = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    try:
        embed_dim = int(sd["patch_embed.proj.weight"].shape[0])
        stages = sorted({int(k.split(".")[1]) for k in sd if k.startswith("layers.")})
        depths = [len({k.split(".")[3] for k in sd if k.startswith(f"layers.{i}.blocks.")}) for i in stages]
        tables = [sd[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in stages]
    except (KeyError, IndexError) as exc:
        raise WeightsError(f"the RemoteSAM checkpoint lacks the Swin key {exc}; use RemoteSAMv1.pth from hf:1e12Leon/RemoteSAM") from exc
    window = (math.isqrt(int(tables[0].shape[0])) + 1) // 2
    mha = str(getattr(args, "mha", "") or "")
    fusion = [int(a) for a in mha.split("-")] if mha else [1] * len(stages)
    return {"embed_dim": embed_dim, "depths": tuple(depths), "heads": tuple(int(t.shape[1]) for t in tables),
            "window": window, "fusion_heads": tuple(fusion)}


def load_remotesam(model: RemoteSAMImageEncoder, checkpoint: Mapping[str, Any]) -> list[str]:
    """Load a RemoteSAM checkpoint into `model`, strictly for the modules its mode uses;
    returns the checkpoint prefixes that were ignored."""
    sd, ignored = remotesam_state_dict(checkpoint, model.mode)
    load_into(model, sd, strict=True, what=f"the RemoteSAM image encoder ({model.mode})")
    return ignored
