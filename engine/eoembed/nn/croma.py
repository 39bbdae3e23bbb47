"""CROMA (Fuller et al. 2023): radar and optical ViTs with 2D-ALiBi attention and a joint encoder.

No position table: every attention score gets ``−slope_h · distance(patch_i, patch_j)`` added
(one slope per head), so any grid of 8-px patches works. The optical encoder reads 12 S2 bands,
the radar encoder 2 S1 bands (half as deep), and the joint encoder lets radar patches attend to
optical ones. Parameter names follow the published checkpoint (``CROMA_base.pt``): a dict with
``s1_encoder``, ``s1_GAP_FFN``, ``s2_encoder``, ``s2_GAP_FFN`` and ``joint_encoder``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError
from ..weights import load_into

#: pixels per patch side (both sizes)
PATCH = 8
#: attention heads (both sizes)
HEADS = 16
#: the checkpoint's top-level parts, in the order the network holds them
PARTS = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")


@dataclass(frozen=True)
class CromaConfig:
    """Width and optical depth; the radar and joint encoders are half as deep."""

    dim: int
    depth: int
    heads: int = HEADS
    s1_channels: int = 2
    s2_channels: int = 12


CROMA_CONFIGS = {"base": CromaConfig(768, 12), "large": CromaConfig(1024, 24)}


def alibi_slopes(heads: int) -> list[float]:
    """Per-head ALiBi slopes (Press et al.): geometric from 2^(−8/n); other counts interleaved."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    low = 2 ** math.floor(math.log2(heads))
    return power_of_two(low) + alibi_slopes(2 * low)[0::2][: heads - low]


def alibi_2d(heads: int, h: int, w: int) -> Tensor:
    """``[heads, h·w, h·w]`` bias: minus slope times the Euclidean distance of the two patches."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    pts = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    dist = torch.cdist(pts, pts)
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float64).view(-1, 1, 1)
    return (-slopes * dist).float()


def _heads(t: Tensor, heads: int) -> Tensor:
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Pre-norm self-attention with bias-free fused q/k/v (``input_norm``, ``to_qkv``, ``to_out``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.input_norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """``x [B, N, D]``, ``bias [heads, N, N]`` → ``[B, N, D]`` (no residual)."""
        q, k, v = (_heads(t, self.heads) for t in self.to_qkv(self.input_norm(x)).chunk(3, dim=-1))
        return self.to_out(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=bias)))


class CrossAttention(nn.Module):
    """Pre-norm cross-attention (one ``input_norm`` for queries and context; ``to_q/k/v``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.input_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, bias: Tensor) -> Tensor:
        """Queries from `x`, keys and values from `context` (both ``[B, N, D]``)."""
        x, context = self.input_norm(x), self.input_norm(context)
        q = _heads(self.to_q(x), self.heads)
        k, v = _heads(self.to_k(context), self.heads), _heads(self.to_v(context), self.heads)
        return self.to_out(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=bias)))


class FFN(nn.Module):
    """Pre-norm MLP: ``input_norm`` then ``net`` = Linear(4D) → GELU → Dropout → Linear."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Identity(), nn.Linear(mult * dim, dim))
        self.input_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.input_norm(x))


class Encoder(nn.Module):
    """One modality: ``linear_input`` over (c, i, j)-ordered 8×8 patches, then ``transformer``."""

    def __init__(self, dim: int, depth: int, channels: int, heads: int) -> None:
        super().__init__()
        self.linear_input = nn.Linear(PATCH * PATCH * channels, dim)
        self.transformer = _SelfStack(dim, depth, heads)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """``x [B, C, H, W]`` (H, W multiples of 8) → patch tokens ``[B, h·w, D]``, row-major."""
        b, c, hh, ww = x.shape
        h, w = hh // PATCH, ww // PATCH
        patches = x.reshape(b, c, h, PATCH, w, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, -1)
        return self.transformer(self.linear_input(patches), bias)


class _SelfStack(nn.Module):
    """``layers.{i}`` = [Attention, FFN] with residuals, then ``norm_out``."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([Attention(dim, heads), FFN(dim)]) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        for attn, ffn in self.layers:
            x = attn(x, bias) + x
            x = ffn(x) + x
        return self.norm_out(x)


class JointEncoder(nn.Module):
    """``layers.{i}`` = [Attention, CrossAttention, FFN]: radar tokens attend to optical ones."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads), CrossAttention(dim, heads), FFN(dim)]) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor, bias: Tensor) -> Tensor:
        for attn, cross, ffn in self.layers:
            x = attn(x, bias) + x
            x = cross(x, context, bias) + x
            x = ffn(x) + x
        return self.norm_out(x)


def _gap_ffn(dim: int) -> nn.Sequential:
    """The pooled head: LayerNorm → Linear(4D) → GELU → Linear (keys 0, 1, 3)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class CROMA(nn.Module):
    """Both CROMA encoders, their pooled heads and the joint encoder."""

    def __init__(self, config: CromaConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.s1_encoder = Encoder(c.dim, c.depth // 2, c.s1_channels, c.heads)
        self.s1_GAP_FFN = _gap_ffn(c.dim)
        self.s2_encoder = Encoder(c.dim, c.depth, c.s2_channels, c.heads)
        self.s2_GAP_FFN = _gap_ffn(c.dim)
        self.joint_encoder = JointEncoder(c.dim, c.depth // 2, c.heads)
        self._bias: dict[tuple[int, int, str], Tensor] = {}

    def keep_only(self, parts: set[str]) -> None:
        """Free the parts not in `parts` (after loading), e.g. the radar side of an optical-only use."""
        for name in PARTS:
            if name not in parts:
                setattr(self, name, None)

    def _part(self, name: str) -> nn.Module:
        module = getattr(self, name)
        if module is None:
            raise ValueError(f"this CROMA was loaded without its {name}; load it with that part kept")
        return module

    def bias(self, h: int, w: int, device: torch.device) -> Tensor:
        """The ALiBi bias of an h×w patch grid (cached per grid and device)."""
        key = (h, w, str(device))
        if key not in self._bias:
            self._bias[key] = alibi_2d(self.config.heads, h, w).to(device)
        return self._bias[key]

    def forward(self, sar: Tensor | None = None, optical: Tensor | None = None) -> dict[str, Tensor]:
        """Inputs ``[B, 2, H, W]`` and/or ``[B, 12, H, W]`` in [0, 1] → encodings and pooled vectors.

        Keys as upstream: ``SAR_encodings``/``SAR_GAP``, ``optical_encodings``/``optical_GAP``,
        and with both ``joint_encodings``/``joint_GAP`` (mean of the joint tokens, no head).
        """
        ref = optical if optical is not None else sar
        if ref is None:
            raise ValueError("CROMA needs SAR or optical images")
        hh, ww = ref.shape[-2:]
        if hh % PATCH or ww % PATCH:
            raise ValueError(f"CROMA images must be multiples of {PATCH} px, not {hh}×{ww}")
        bias = self.bias(hh // PATCH, ww // PATCH, ref.device)
        out: dict[str, Tensor] = {}
        if sar is not None:
            out["SAR_encodings"] = self._part("s1_encoder")(sar, bias)
            out["SAR_GAP"] = self._part("s1_GAP_FFN")(out["SAR_encodings"].mean(dim=1))
        if optical is not None:
            out["optical_encodings"] = self._part("s2_encoder")(optical, bias)
            out["optical_GAP"] = self._part("s2_GAP_FFN")(out["optical_encodings"].mean(dim=1))
        if sar is not None and optical is not None:
            joint = self._part("joint_encoder")
            out["joint_encodings"] = joint(out["SAR_encodings"], out["optical_encodings"], bias)
            out["joint_GAP"] = out["joint_encodings"].mean(dim=1)
        return out


def croma_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """Flatten the published ``{part: state dict}`` checkpoint to ``part.key`` names."""
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"a CROMA checkpoint is a dict of its parts, not a {type(checkpoint).__name__}")
    missing = [p for p in PARTS if not isinstance(checkpoint.get(p), Mapping)]
    if missing:
        raise WeightsError(
            f"the checkpoint lacks CROMA part(s) {', '.join(missing)} (it has {', '.join(map(str, checkpoint))}); "
            "give CROMA_base.pt or CROMA_large.pt from hf:antofuller/CROMA"
        )
    extra = [str(p) for p in checkpoint if p not in PARTS]
    if extra:
        raise WeightsError(f"the checkpoint has parts CROMA does not know: {', '.join(extra)}")
    return {f"{p}.{k}": v for p in PARTS for k, v in checkpoint[p].items()}


def croma_config(state: Mapping[str, Tensor]) -> CromaConfig:
    """The configuration a flattened checkpoint was saved from (width and optical depth)."""
    try:
        dim = int(state["s2_encoder.linear_input.weight"].shape[0])
        s2_in = int(state["s2_encoder.linear_input.weight"].shape[1])
        s1_in = int(state["s1_encoder.linear_input.weight"].shape[1])
    except KeyError as exc:
        raise WeightsError(f"the CROMA checkpoint lacks {exc.args[0]}") from exc
    depth = len({k.split(".")[3] for k in state if k.startswith("s2_encoder.transformer.layers.")})
    return CromaConfig(dim, depth, HEADS, s1_in // (PATCH * PATCH), s2_in // (PATCH * PATCH))


def load_croma(checkpoint: Any) -> CROMA:
    """A CROMA network with every tensor of the published checkpoint loaded (strictly)."""
    state = croma_state_dict(checkpoint)
    model = CROMA(croma_config(state))
    load_into(model, state, what="CROMA")
    return model.eval()
