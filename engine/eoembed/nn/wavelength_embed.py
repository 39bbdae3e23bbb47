"""Wavelength-conditioned patch embedding (DOFA style): a small hypernetwork turns each band's
central wavelength into that band's slice of the patch-projection kernel, so one network reads
any band set.

Per band: a 1D sin-cos code of the wavelength (µm times the style's factor) → residual MLP (``fclayer``) → a one-layer
``nn.TransformerEncoder`` over [learned weight tokens, band codes, bias token] → ``fc_weight``
(band output + band code → ``patch² · D`` kernel values) and ``fc_bias`` (bias token → D). The
kernel, times a fixed scaler, patchifies the image with a strided convolution.

DOFA (Xiong et al. 2024) and Clay v1.5 differ only in details, captured by
:class:`WaveEmbedStyle`: the MLP activation, the sin-cos frequencies, how the generated values
are laid out as a kernel, the scaler, whether the bias is scaled and the convolution padding.
Parameter names follow DOFA (``fclayer.w1/w2``, ``weight_generator.transformer_encoder``,
``weight_generator.fc_weight/fc_bias/weight_tokens/bias_token``); Clay's loader renames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class WaveEmbedStyle:
    """The details in which DOFA's and Clay's embeddings differ."""

    #: activation inside the residual wavelength MLP
    act: Literal["relu", "gelu"]
    #: sin-cos frequencies ``10000^(-i / denom)``: denom = dim/2 (DOFA) or dim/2 − 1 (Clay)
    freq_denominator: Literal["half", "half_minus_one"]
    #: generated values per band as ``(D·p·p)`` read straight into ``[D, C, p, p]`` memory
    #: ("view", DOFA) or as ``[C, D, p, p]`` permuted to ``[D, C, p, p]`` ("permute", Clay)
    kernel_layout: Literal["view", "permute"]
    #: factor on the generated kernel
    scaler: float
    #: whether the generated bias is multiplied by the scaler too
    scale_bias: bool
    #: zero padding of the patch convolution
    padding: int
    #: wavelengths in µm are multiplied by this before the sin-cos code (DOFA: nm; Clay: µm)
    wave_factor: float


DOFA_STYLE = WaveEmbedStyle("relu", "half", "view", 0.01, True, 1, 1000.0)
CLAY_STYLE = WaveEmbedStyle("gelu", "half_minus_one", "permute", 0.02, False, 0, 1.0)


def wavelength_code(waves: Tensor, dim: int, denominator: str = "half") -> Tensor:
    """``[C]`` values → ``[C, dim]``: ``[sin(λ·ω_i), cos(λ·ω_i)]`` with ``ω_i = 10000^(−i/d)``."""
    half = dim // 2
    denom = half if denominator == "half" else half - 1
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float32, device=waves.device) / denom)
    angles = waves.float().reshape(-1)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FCResLayer(nn.Module):
    """``x + act(w2(act(w1(x))))``."""

    def __init__(self, dim: int, act: str) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)
        self.act = nn.ReLU() if act == "relu" else nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.w2(self.act(self.w1(x))))


class WeightGenerator(nn.Module):
    """One post-norm transformer layer over [weight tokens, band codes, bias token] → kernel, bias."""

    def __init__(self, wave_dim: int, out_dim: int, embed_dim: int, num_tokens: int = 128, heads: int = 4) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=wave_dim, nhead=heads, activation="gelu", dropout=0.0,
                                           norm_first=False)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, out_dim)
        self.fc_bias = nn.Linear(wave_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.zeros(num_tokens, wave_dim))
        self.bias_token = nn.Parameter(torch.zeros(1, wave_dim))

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """``codes [C, wave_dim]`` → per-band kernel values ``[C, out_dim]`` and bias ``[embed_dim]``."""
        n = self.weight_tokens.shape[0]
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)
        out = self.transformer_encoder(seq[:, None])[:, 0]  # sequence-first, batch of one
        return self.fc_weight(out[n:-1] + codes), self.fc_bias(out[-1])


class WavelengthPatchEmbed(nn.Module):
    """Patchify ``[B, C, H, W]`` with a kernel generated from the C bands' wavelengths.

    Args:
        embed_dim: token width D.
        patch_size: patch side p (also the stride).
        style: :data:`DOFA_STYLE` or :data:`CLAY_STYLE`.
        wave_dim: width of the wavelength codes (128 in both models).
        num_tokens: learned weight tokens of the generator (128 in both models).
    """

    def __init__(self, embed_dim: int, patch_size: int, style: WaveEmbedStyle = DOFA_STYLE,
                 wave_dim: int = 128, num_tokens: int = 128) -> None:
        super().__init__()
        self.embed_dim, self.patch_size, self.style, self.wave_dim = embed_dim, patch_size, style, wave_dim
        self.weight_generator = WeightGenerator(wave_dim, patch_size * patch_size * embed_dim, embed_dim, num_tokens)
        self.fclayer = FCResLayer(wave_dim, style.act)

    def kernel(self, wavelengths_um: Tensor) -> tuple[Tensor, Tensor]:
        """The generated convolution ``[D, C, p, p]`` and bias ``[D]`` (scaled as the style says)."""
        s, p, d = self.style, self.patch_size, self.embed_dim
        codes = self.fclayer(wavelength_code(wavelengths_um.float() * s.wave_factor, self.wave_dim,
                                             s.freq_denominator))
        values, bias = self.weight_generator(codes)
        c = values.shape[0]
        if s.kernel_layout == "view":
            weight = values.reshape(d, c, p, p)
        else:
            weight = values.reshape(c, d, p, p).transpose(0, 1)
        return weight * s.scaler, bias * s.scaler if s.scale_bias else bias

    def forward(self, x: Tensor, wavelengths_um: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``x [B, C, H, W]`` and ``[C]`` wavelengths (µm) → tokens ``[B, h·w, D]`` (row-major), ``(h, w)``."""
        if x.shape[1] != wavelengths_um.numel():
            raise ValueError(f"{x.shape[1]} bands but {wavelengths_um.numel()} wavelengths")
        weight, bias = self.kernel(wavelengths_um.to(x.device))
        y = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=self.patch_size, padding=self.style.padding)
        h, w = y.shape[-2:]
        return y.flatten(2).transpose(1, 2), (int(h), int(w))


def clay_embed_key(key: str) -> str:
    """Clay's name for a :class:`WavelengthPatchEmbed` key (``fclayer.l1``, ``weight_generator.encoder``)."""
    return (key.replace("fclayer.w1.", "fclayer.l1.").replace("fclayer.w2.", "fclayer.l2.")
            .replace("weight_generator.transformer_encoder.", "weight_generator.encoder."))
