"""CLIP (OpenAI / open_clip layout) in plain torch: image and text towers and a strict loader.

Covers the architectures RemoteCLIP (Liu et al. 2024) and Llama3-MS-CLIP (Marimo et al. 2025)
publish: open_clip ``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14`` (any number of input channels) and the
``RN50`` ModifiedResNet. Parameter names follow open_clip exactly, so an upstream state dict loads
by name; :func:`infer_clip_config` reads the architecture from the tensor shapes, as OpenAI's
``build_model`` does, so no config file is needed.

Image outputs (:class:`ImageFeatures`):

- ``pooled [B, D]``: the projected image embedding (class token after ``ln_post`` through
  ``proj`` for ViTs, the attention pool for RN50) — the vector CLIP compares with text.
- ``tokens [B, W, h, w]``: the patch tokens at the tower's width (ViT: after ``ln_post``; RN50:
  the ``layer4`` feature map).
- ``projected_tokens [B, D, h, w]``: every patch taken into the joint image–text space. ViT: each
  ``ln_post`` patch token through ``proj`` (the map the class token takes). RN50: each
  ``layer4`` cell (plus its position embedding) through the attention pool's value and output
  projections, ``c_proj(v_proj(x))`` — the pool's output when a cell attends only to itself
  (the dense reading of Zhou et al. 2022, MaskCLIP). These grids are comparable with text
  embeddings, which is why embedders export them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError
from ..weights import extract_state_dict, load_into
from .vit import ACTIVATIONS, LayerNorm, PatchEmbed, Transformer, resize_grid_embedding, square_grid

# ----------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class VisionConfig:
    """Image tower: a ViT (``kind='vit'``) or a ModifiedResNet (``kind='resnet'``).

    For ResNets `layers` is the block count of the four stages and `width` the stem width
    (64 for RN50); `heads` are then the attention-pool heads.
    """

    kind: Literal["vit", "resnet"]
    width: int
    layers: int | tuple[int, ...]
    heads: int
    image_size: int = 224
    patch_size: int | None = None
    in_chans: int = 3

    @property
    def grid(self) -> int:
        """Tokens per side of the feature grid at `image_size`."""
        step = self.patch_size if self.kind == "vit" else 32
        return self.image_size // int(step or 1)


@dataclass(frozen=True)
class TextConfig:
    """Causal text transformer over BPE tokens."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12


@dataclass(frozen=True)
class CLIPConfig:
    """A whole CLIP: joint embedding width, both towers and the MLP activation of both."""

    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    act: str = "quick_gelu"

    def __post_init__(self) -> None:
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act {self.act!r} is unknown; use one of {', '.join(ACTIVATIONS)}")

    def with_act(self, act: str) -> CLIPConfig:
        return replace(self, act=act)


#: open_clip's model configs (src/open_clip/model_configs/*.json); heads = width / 64 (ViT),
#: width · 32 / 64 (RN50 attention pool). The activation is not part of these files: OpenAI-trained
#: weights use QuickGELU, open_clip's own trainings GELU.
CLIP_CONFIGS: dict[str, CLIPConfig] = {
    "ViT-B-32": CLIPConfig(512, VisionConfig("vit", 768, 12, 12, 224, 32), TextConfig(77, 49408, 512, 8, 12)),
    "ViT-B-16": CLIPConfig(512, VisionConfig("vit", 768, 12, 12, 224, 16), TextConfig(77, 49408, 512, 8, 12)),
    "ViT-L-14": CLIPConfig(768, VisionConfig("vit", 1024, 24, 16, 224, 14), TextConfig(77, 49408, 768, 12, 12)),
    "RN50": CLIPConfig(1024, VisionConfig("resnet", 64, (3, 4, 6, 3), 32, 224, None),
                       TextConfig(77, 49408, 512, 8, 12)),
}


class ImageFeatures(NamedTuple):
    """What the image tower gives (see the module docstring)."""

    pooled: Tensor
    tokens: Tensor
    projected_tokens: Tensor


# ------------------------------------------------------------------------------- ViT tower


class VisionTransformer(nn.Module):
    """CLIP's ViT image tower (Radford et al. 2021; Dosovitskiy et al. 2021).

    Patch embedding without bias → class token and learned positions → ``ln_pre`` → pre-norm
    transformer → ``ln_post`` → ``proj``. Inputs of another size than `image_size` get
    bicubically resampled position embeddings.
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int, act: str = "quick_gelu") -> None:
        super().__init__()
        if cfg.kind != "vit" or not cfg.patch_size:
            raise ValueError("VisionTransformer needs a ViT config with a patch size")
        w, g = cfg.width, cfg.grid
        scale = w**-0.5
        self.patch_size = cfg.patch_size
        self.grid_size = (g, g)
        self.conv1 = PatchEmbed(cfg.in_chans, w, cfg.patch_size)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(g * g + 1, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(w, int(cfg.layers), cfg.heads, 4.0, act)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, embed_dim))

    def forward(self, x: Tensor) -> ImageFeatures:
        """``x [B, C, H, W]`` → pooled ``[B, D]``, tokens ``[B, W, h, w]``, projected ``[B, D, h, w]``."""
        tokens, (h, w) = self.conv1(x)
        b = tokens.shape[0]
        cls = self.class_embedding.to(tokens.dtype).expand(b, 1, -1)
        pos = resize_grid_embedding(self.positional_embedding, self.grid_size, (h, w))
        z = torch.cat([cls, tokens], dim=1) + pos.to(tokens.dtype)
        z = self.ln_post(self.transformer(self.ln_pre(z)))
        pooled = z[:, 0] @ self.proj
        patches = z[:, 1:]
        projected = patches @ self.proj
        return ImageFeatures(
            pooled,
            patches.transpose(1, 2).reshape(b, -1, h, w),
            projected.transpose(1, 2).reshape(b, -1, h, w),
        )


# ---------------------------------------------------------------------------- ResNet tower


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics (inference only): ``(x − mean) / √(var + eps) · γ + β``.

    Holds ``weight``, ``bias``, ``running_mean`` and ``running_var`` under their usual names;
    the training counter ``num_batches_tracked`` has no use here and is not kept.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` → ``[B, C, H, W]``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class Bottleneck(nn.Module):
    """ModifiedResNet bottleneck: 1×1 → 3×3 → (avg-pool when strided) → 1×1 (×4 channels).

    Striding is done by an average pool before the last convolution ("anti-aliased"), and the
    shortcut, when it changes shape, is ``avgpool → 1×1 conv → BN`` (``downsample.0/1``).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                ("1", FrozenBatchNorm2d(out)),
            ]))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, inplanes, H, W]`` → ``[B, 4·planes, H/stride, W/stride]``."""
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: the mean token queries all cells (with learned positions).

    Args:
        grid: cells per side at the training size (7 for 224 px).
        width: feature channels (2048 for RN50).
        heads: attention heads.
        out_dim: output width (the joint embedding width).
    """

    def __init__(self, grid: int, width: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.grid = grid
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, C, h, w]`` → pooled ``[B, D]`` and per-cell value projections ``[B, D, h, w]``."""
        b, c, h, w = x.shape
        seq = x.flatten(2).transpose(1, 2)  # [B, hw, C]
        seq = torch.cat([seq.mean(dim=1, keepdim=True), seq], dim=1)
        pos = resize_grid_embedding(self.positional_embedding, (self.grid, self.grid), (h, w))
        seq = seq + pos.to(seq.dtype)
        q = self.q_proj(seq[:, :1])
        k, v = self.k_proj(seq), self.v_proj(seq)
        dh = c // self.heads

        def heads(t: Tensor) -> Tensor:
            return t.view(b, t.shape[1], self.heads, dh).transpose(1, 2)

        pooled = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        pooled = self.c_proj(pooled.transpose(1, 2).reshape(b, c))
        cells = self.c_proj(v[:, 1:])  # [B, hw, D]
        return pooled, cells.transpose(1, 2).reshape(b, -1, h, w)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet image tower (Radford et al. 2021): a three-convolution stem with average
    pooling, anti-aliased bottleneck stages and an attention pool instead of global averaging.
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        if cfg.kind != "resnet" or isinstance(cfg.layers, int) or len(cfg.layers) != 4:
            raise ValueError("ModifiedResNet needs a resnet config with four stage depths")
        w = cfg.width
        self.conv1 = nn.Conv2d(cfg.in_chans, w // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(w // 2)
        self.conv2 = nn.Conv2d(w // 2, w // 2, 3, padding=1, bias=False)
        self.bn2 = FrozenBatchNorm2d(w // 2)
        self.conv3 = nn.Conv2d(w // 2, w, 3, padding=1, bias=False)
        self.bn3 = FrozenBatchNorm2d(w)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = w
        stages = []
        for i, depth in enumerate(cfg.layers):
            planes = w * 2**i
            blocks = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(cfg.grid, w * 32, cfg.heads, embed_dim)

    def forward(self, x: Tensor) -> ImageFeatures:
        """``x [B, C, H, W]`` → pooled ``[B, D]``, tokens ``[B, 32·width, H/32, W/32]``,
        projected ``[B, D, H/32, W/32]``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        pooled, cells = self.attnpool(x)
        return ImageFeatures(pooled, x, cells)


# ------------------------------------------------------------------------------------ CLIP


class CLIP(nn.Module):
    """Contrastive Language–Image Pre-training (Radford et al. 2021) in open_clip's layout.

    Used for RemoteCLIP (Liu et al. 2024, remote-sensing captions, RGB) and Llama3-MS-CLIP
    (Marimo et al. 2025, 10-band Sentinel-2): images and texts map to one space of width
    ``embed_dim`` where cosine similarity measures agreement.

    The image tower lives under ``visual``; the text tower's parts sit at the top level
    (``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
    ``text_projection``) next to ``logit_scale``, as in the upstream checkpoints.
    """

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.config = cfg
        v, t = cfg.vision, cfg.text
        if v.kind == "vit":
            self.visual: nn.Module = VisionTransformer(v, cfg.embed_dim, cfg.act)
        else:
            self.visual = ModifiedResNet(v, cfg.embed_dim)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(t.context_length, t.width))
        self.transformer = Transformer(t.width, t.layers, t.heads, 4.0, cfg.act)
        self.ln_final = LayerNorm(t.width)
        self.text_projection = nn.Parameter(t.width**-0.5 * torch.randn(t.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: Tensor) -> ImageFeatures:
        """``images [B, C, H, W]`` (normalised) → :class:`ImageFeatures`."""
        return self.visual(images)

    def text_tokens(self, tokens: Tensor) -> Tensor:
        """Per-token text features after ``ln_final``: ``tokens [B, L]`` → ``[B, L, width]``.

        Attention is causal: the feature at position i depends on tokens 0..i only.
        """
        n = tokens.shape[1]
        if n > self.positional_embedding.shape[0]:
            raise ValueError(f"{n} tokens exceed the context length {self.positional_embedding.shape[0]}")
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        return self.ln_final(self.transformer(x, is_causal=True))

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``tokens [B, L]`` (int64) → projected text embeddings ``[B, D]``.

        The sentence is read at its end-of-text token, found as the largest token id in each
        row (the end-of-text id is the last of the vocabulary), as upstream does.
        """
        x = self.text_tokens(tokens)
        eot = tokens.argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


# ---------------------------------------------------------------------------------- loading

#: Where checkpoints are known to keep a CLIP, in the order tried: a plain open_clip/OpenAI state
#: dict; the Llama3-MS-CLIP training wrapper (which also holds the same tensors under
#: ``text_encoder.model.`` and ``image_encoder.model.``); a ``PyTorchModelHubMixin`` wrapper
#: (e.g. MVRL/remote-clip-vit-base-patch32); a DataParallel wrapper.
KNOWN_PREFIXES = ("", "clip_base_model.model.", "model.", "module.")
#: Entries of some CLIP checkpoints that are not weights: OpenAI's JIT archives carry the first
#: three, older open_clip versions saved the causal mask.
METADATA_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})

_ANCHOR = "visual.conv1.weight"


def find_clip_prefix(keys: Iterable[str]) -> str:
    """The prefix under which `keys` hold a CLIP (see :data:`KNOWN_PREFIXES`).

    Raises WeightsError when no known prefix holds a ``visual.conv1.weight``.
    """
    keys = set(keys)
    for prefix in KNOWN_PREFIXES:
        if prefix + _ANCHOR in keys:
            return prefix
    found = sorted(k for k in keys if k.endswith(_ANCHOR))
    hint = f" (found {found[0]!r}: pass its prefix)" if found else ""
    raise WeightsError(
        f"the checkpoint holds no CLIP image tower: no key {_ANCHOR!r} under the known prefixes "
        f"{', '.join(repr(p) for p in KNOWN_PREFIXES)}{hint}; give an open_clip or OpenAI CLIP checkpoint"
    )


def clip_state_dict(checkpoint: Any, prefix: str | None = None) -> tuple[dict[str, Tensor], str]:
    """The CLIP tensors of a loaded checkpoint (prefix stripped) and the prefix they had.

    `checkpoint` is what ``weights.load_checkpoint`` returned (a state dict, or a dict holding
    one under ``state_dict``/``model``). `prefix` None means: find it (:func:`find_clip_prefix`).
    Entries outside the prefix (``temperature``, the other copies of a training wrapper) are
    left out; metadata entries (:data:`METADATA_KEYS`) and BN batch counters are dropped.
    """
    full = extract_state_dict(checkpoint)
    if prefix is None:
        prefix = find_clip_prefix(full)
    sd = extract_state_dict(checkpoint, prefixes=(prefix,)) if prefix else dict(full)
    sd = {k: v for k, v in sd.items() if k not in METADATA_KEYS and not k.endswith(".num_batches_tracked")}
    return sd, prefix


def _tensor(sd: Mapping[str, Tensor], key: str, ndim: int) -> Tensor:
    t = sd.get(key)
    if t is None:
        raise WeightsError(f"the CLIP checkpoint lacks {key!r}; it is not a complete open_clip/OpenAI CLIP")
    if not isinstance(t, Tensor) or t.ndim != ndim:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise WeightsError(f"CLIP checkpoint entry {key!r} has shape {shape}, expected {ndim} dimensions")
    return t


def _depth(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    idx = [int(m.group(1)) for k in sd if (m := rx.match(k))]
    if not idx:
        raise WeightsError(f"the CLIP checkpoint has no blocks matching {pattern!r}")
    return max(idx) + 1


def _grid(n_tokens: int, key: str) -> int:
    try:
        return square_grid(n_tokens - 1)
    except ValueError as exc:
        raise WeightsError(f"CLIP checkpoint entry {key!r} has {n_tokens} rows, not 1 + a square grid") from exc


def infer_clip_config(sd: Mapping[str, Tensor], act: str = "quick_gelu") -> CLIPConfig:
    """The CLIP architecture of an (un-prefixed) state dict, read from its tensor shapes.

    Widths, depths, patch size, image size, input channels, context length and vocabulary come
    from the shapes; heads are width / 64 (ViT and text) and width · 32 / 64 (RN50 pool), as in
    every OpenAI and open_clip config. The activation cannot be seen in the weights: give `act`.
    """
    embed_dim = _tensor(sd, "text_projection", 2).shape[1]
    conv1 = _tensor(sd, "visual.conv1.weight", 4)
    if "visual.class_embedding" in sd or "visual.proj" in sd:
        width, in_chans, ph, pw = conv1.shape
        if ph != pw:
            raise WeightsError(f"CLIP checkpoint entry 'visual.conv1.weight' has non-square patches {ph}×{pw}")
        grid = _grid(_tensor(sd, "visual.positional_embedding", 2).shape[0], "visual.positional_embedding")
        vision = VisionConfig(
            "vit", int(width), _depth(sd, r"visual\.transformer\.resblocks\.(\d+)\."), int(width) // 64,
            grid * int(ph), int(ph), int(in_chans),
        )
    else:
        width = _tensor(sd, "visual.layer1.0.conv1.weight", 4).shape[0]
        grid = _grid(_tensor(sd, "visual.attnpool.positional_embedding", 2).shape[0],
                     "visual.attnpool.positional_embedding")
        layers = tuple(_depth(sd, rf"visual\.layer{i}\.(\d+)\.") for i in range(1, 5))
        vision = VisionConfig("resnet", int(width), layers, int(width) * 32 // 64, grid * 32, None,
                              int(conv1.shape[1]))
    text_width = _tensor(sd, "ln_final.weight", 1).shape[0]
    text = TextConfig(
        context_length=int(_tensor(sd, "positional_embedding", 2).shape[0]),
        vocab_size=int(_tensor(sd, "token_embedding.weight", 2).shape[0]),
        width=int(text_width),
        heads=max(1, int(text_width) // 64),
        layers=_depth(sd, r"transformer\.resblocks\.(\d+)\."),
    )
    return CLIPConfig(int(embed_dim), vision, text, act)


def build_clip(sd: Mapping[str, Tensor], act: str = "quick_gelu", what: str = "CLIP") -> CLIP:
    """A CLIP built from the shapes of `sd` with every tensor loaded strictly (eval mode).

    The network is laid out on the meta device and takes the checkpoint's tensors (as float32)
    in place, so no memory is spent on a random initialisation. Raises WeightsError naming
    missing, unexpected or mis-shaped entries.
    """
    cfg = infer_clip_config(sd, act)
    with torch.device("meta"):
        model = CLIP(cfg)
    with warnings.catch_warnings():  # copying into meta tensors is a no-op: only the checks matter
        warnings.simplefilter("ignore", UserWarning)
        load_into(model, sd, strict=True, what=what)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def load_clip(checkpoint: Any, act: str = "quick_gelu", prefix: str | None = None,
              what: str = "CLIP") -> CLIP:
    """A CLIP from a loaded checkpoint object: find its prefix, strip it, build, load strictly."""
    sd, _ = clip_state_dict(checkpoint, prefix)
    return build_clip(sd, act, what)
