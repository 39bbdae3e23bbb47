"""Clay v1.5 encoder: a DOFA-style wavelength patch embedding, GSD-scaled sin-cos positions plus
time and location codes, and a pre-norm transformer in vit-pytorch's layout.

Published checkpoint (``v1.5/clay-v1.5.ckpt``, Lightning): ``state_dict`` with the encoder under
``model.encoder.``: ``patch_embedding.*`` (Clay spelling of
:class:`~eoembed.nn.wavelength_embed.WavelengthPatchEmbed`), ``cls_token`` and
``transformer.layers.{i}.0`` (attention: ``norm``, bias-free ``to_qkv``/``to_out``),
``transformer.layers.{i}.1.net.{0,1,3}`` (LayerNorm, Linear, Linear) and ``transformer.norm``.
The decoder, the frozen teacher and anything else outside ``model.encoder.`` are not used.

Tokens: patches + ``[sincos_2d_gsd(D − 8), time(4), latlon(4)]`` (no position on the class
token), transformer, final norm. Pooled = class token, grid = patch tokens (both normed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import WeightsError
from .pos_embed import sincos_2d_gsd
from .timm_vit import map_timm_state, to_timm_key
from .vit import LayerNorm, ResidualAttentionBlock
from .wavelength_embed import CLAY_STYLE, WavelengthPatchEmbed, clay_embed_key

PATCH = 8
#: time (sin/cos week, sin/cos hour) and location (sin/cos lat, sin/cos lon) channels
META = 8


@dataclass(frozen=True)
class ClayConfig:
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0


#: claymodel/model.py clay_mae_{tiny,small,base,large}; v1.5 publishes large only
CLAY_CONFIGS = {"tiny": ClayConfig(192, 6, 4, 2.0), "small": ClayConfig(384, 6, 6, 2.0),
                "base": ClayConfig(768, 12, 12, 4.0), "large": ClayConfig(1024, 24, 16, 4.0)}


class ClayEncoder(nn.Module):
    """The Clay encoder without masking (as Clay's own ``EmbeddingEncoder``)."""

    def __init__(self, config: ClayConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.patch_embedding = WavelengthPatchEmbed(d, PATCH, CLAY_STYLE)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(d, config.heads, config.mlp_ratio, "gelu", eps=1e-5, qkv_bias=False,
                                   proj_bias=False)
            for _ in range(config.depth)
        )
        self.norm = LayerNorm(d)

    def forward(self, x: Tensor, wavelengths_um: Tensor, gsd: float, time: Tensor, latlon: Tensor
                ) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """``x [B, C, H, W]`` (normalised), ``[C]`` wavelengths (µm), ground sampling distance
        (m), ``time [B, 4]`` and ``latlon [B, 4]`` → class token ``[B, D]``, patch tokens
        ``[B, h·w, D]`` (row-major) and the grid ``(h, w)``."""
        tokens, (h, w) = self.patch_embedding(x, wavelengths_um)
        b = x.shape[0]
        pos = sincos_2d_gsd(self.config.dim - META, (h, w), gsd).to(x.device, x.dtype)
        meta = torch.cat([time, latlon], dim=1).to(x.device, x.dtype)
        codes = torch.cat([pos[None].expand(b, -1, -1), meta[:, None].expand(-1, h * w, -1)], dim=2)
        z = torch.cat([self.cls_token.expand(b, -1, -1), tokens + codes], dim=1)
        for block in self.blocks:
            z = block(z)
        z = self.norm(z)
        return z[:, 0], z[:, 1:], (h, w)


def clay_name(timm_key: str) -> str:
    """Clay's checkpoint name of a timm-style encoder key (``blocks.{i}.norm1.weight`` → …)."""
    inner = {"norm1.": "0.norm.", "attn.qkv.": "0.to_qkv.", "attn.proj.": "0.to_out.", "norm2.": "1.net.0.",
             "mlp.fc1.": "1.net.1.", "mlp.fc2.": "1.net.3."}
    if timm_key.startswith("blocks."):
        index, _, rest = timm_key[len("blocks."):].partition(".")
        for old, new in inner.items():
            if rest.startswith(old):
                return f"transformer.layers.{index}.{new}{rest[len(old):]}"
    if timm_key.startswith("norm."):
        return "transformer." + timm_key
    if timm_key.startswith("patch_embedding."):
        return "patch_embedding." + clay_embed_key(timm_key[len("patch_embedding."):])
    return timm_key


def clay_rename(model: ClayEncoder) -> dict[str, str]:
    """Clay checkpoint name → timm-style name, for every tensor of `model`."""
    return {clay_name(t): t for t in (to_timm_key(k) for k in model.state_dict())}


def clay_config(state: Mapping[str, Tensor]) -> ClayConfig:
    """The configuration of an encoder state dict (heads of 64 channels, 48 for tiny)."""
    if "cls_token" not in state:
        raise WeightsError("the checkpoint has no model.encoder.cls_token: it is not a Clay checkpoint")
    dim = int(state["cls_token"].shape[-1])
    depth = len({k.split(".")[2] for k in state if k.startswith("transformer.layers.")})
    hidden = state.get("transformer.layers.0.1.net.1.weight")
    ratio = float(hidden.shape[0]) / dim if hidden is not None else 4.0
    named = {(c.dim, c.depth): c for c in CLAY_CONFIGS.values()}
    heads = named[(dim, depth)].heads if (dim, depth) in named else max(1, dim // 64)
    return ClayConfig(dim, depth, heads, ratio)


def encoder_state(state: Mapping[str, Tensor], prefix: str = "model.encoder.") -> dict[str, Tensor]:
    """The encoder tensors of a Clay checkpoint's state dict, prefix stripped."""
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not kept:
        raise WeightsError(
            f"the checkpoint has no tensors under {prefix!r} (first keys: {list(state)[:3]}); "
            "give v1.5/clay-v1.5.ckpt from hf:made-with-clay/Clay"
        )
    return kept


def load_clay(state: Mapping[str, Tensor], config: ClayConfig | None = None) -> ClayEncoder:
    """A Clay encoder filled from its encoder state dict (every tensor consumed, strictly)."""
    model = ClayEncoder(config or clay_config(state))
    mapped = map_timm_state(model, state, rename=clay_rename(model), what="Clay encoder")
    model.load_state_dict(mapped, strict=True)
    return model.eval()
