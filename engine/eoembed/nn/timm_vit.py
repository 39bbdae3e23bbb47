"""timm-layout ViT checkpoints onto :mod:`eoembed.nn.vit` blocks: the key map and a strict loader.

Most remote-sensing ViTs (MAE, SatMAE, Scale-MAE, Prithvi, DOFA, SoftCon, …) store their
transformer as timm's ``VisionTransformer`` does. Inside ``blocks.{i}`` the names map one for one
onto :class:`eoembed.nn.vit.ResidualAttentionBlock`:

==========================  ===============================
timm key (inside a block)   eoembed key
==========================  ===============================
``norm1.*``                 ``ln_1.*``
``attn.qkv.weight/bias``    ``attn.in_proj_weight/bias``
``attn.proj.*``             ``attn.out_proj.*``
``ls1.gamma``               ``ls_1.gamma``
``norm2.*``                 ``ln_2.*``
``mlp.fc1.*``               ``mlp.c_fc.*``
``mlp.fc2.*``               ``mlp.c_proj.*``
``ls2.gamma``               ``ls_2.gamma``
==========================  ===============================

Keys outside the blocks (``cls_token``, ``patch_embed.proj.*``, ``norm.*``, …) keep their names,
so a model built from :func:`timm_blocks` with timm's top-level attribute names loads a timm
state dict directly.

Public API (stable; other model files build on it):

- :class:`ViTConfig`: width, depth, heads, mlp_ratio, eps, qkv_bias, layer_scale, act.
- :func:`timm_blocks` ``(cfg) → nn.ModuleList`` of blocks, to be stored as ``self.blocks``.
- :func:`from_timm_key` / :func:`to_timm_key`: one key each way (``blocks_prefix`` selects where
  the blocks live, default ``"blocks."``).
- :func:`map_timm_state` ``(module, state, prefix=, drop=, rename=, what=)`` → the state dict in
  the module's names, after checking that every kept key is consumed and every module tensor is
  given; a WeightsError names the offending keys in the checkpoint's own spelling.
- :func:`load_timm_vit`: :func:`map_timm_state` then ``load_state_dict``; returns counts.

``drop`` takes glob patterns (``fnmatch``) of checkpoint keys deliberately left unused (a
decoder, a stored position table that is recomputed, a classifier head); nothing else may be
left over.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import WeightsError
from .vit import ResidualAttentionBlock

__all__ = ["TIMM_BLOCK_KEYS", "ViTConfig", "from_timm_key", "load_timm_vit", "map_timm_state",
           "timm_blocks", "to_timm_key"]

#: timm block-internal key prefix → eoembed block-internal key prefix
TIMM_BLOCK_KEYS: dict[str, str] = {
    "norm1.": "ln_1.",
    "attn.qkv.weight": "attn.in_proj_weight",
    "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.": "attn.out_proj.",
    "ls1.": "ls_1.",
    "norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "ls2.": "ls_2.",
}
_OURS_TO_TIMM = {v: k for k, v in TIMM_BLOCK_KEYS.items()}
_SHOWN = 5


@dataclass(frozen=True)
class ViTConfig:
    """A timm-style ViT trunk: width, depth, heads and the block options.

    ``eps`` is the LayerNorm epsilon of the blocks and the final norm (timm's ViT and MAE:
    1e-6; models built with plain ``nn.LayerNorm``, e.g. Prithvi: 1e-5).
    """

    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    eps: float = 1e-6
    qkv_bias: bool = True
    layer_scale: float | None = None
    act: str = "gelu"


def timm_blocks(cfg: ViTConfig) -> nn.ModuleList:
    """``cfg.depth`` blocks in timm's order, to be stored under the attribute ``blocks``."""
    return nn.ModuleList(
        ResidualAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.act, eps=cfg.eps,
                               qkv_bias=cfg.qkv_bias, layer_scale=cfg.layer_scale)
        for _ in range(cfg.depth)
    )


def _swap(key: str, blocks_prefix: str, table: Mapping[str, str]) -> str:
    if not key.startswith(blocks_prefix):
        return key
    rest = key[len(blocks_prefix):]
    index, dot, inner = rest.partition(".")
    if not dot or not index.isdigit():
        return key
    for old, new in table.items():
        if inner.startswith(old):
            return f"{blocks_prefix}{index}.{new}{inner[len(old):]}"
    return key


def from_timm_key(key: str, blocks_prefix: str = "blocks.") -> str:
    """The eoembed name of timm key `key` (unchanged outside ``blocks_prefix{i}.``)."""
    return _swap(key, blocks_prefix, TIMM_BLOCK_KEYS)


def to_timm_key(key: str, blocks_prefix: str = "blocks.") -> str:
    """The timm name of eoembed key `key` (the inverse of :func:`from_timm_key`)."""
    return _swap(key, blocks_prefix, _OURS_TO_TIMM)


def _some(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = len(items) - _SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown


def map_timm_state(
    module: nn.Module,
    state: Mapping[str, Tensor],
    *,
    prefix: str = "",
    drop: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    blocks_prefix: str = "blocks.",
    what: str = "",
) -> dict[str, Tensor]:
    """`state` (a timm-layout checkpoint) in `module`'s key names, checked to fit exactly.

    Args:
        module: the network to fill (its ``state_dict()`` names and shapes are the target).
        state: checkpoint tensors in the published layout.
        prefix: where the ViT sits inside the checkpoint (e.g. ``"encoder."``), stripped.
        drop: glob patterns of checkpoint keys (full names, prefix included) left unused.
        rename: exact checkpoint-key renames applied after `prefix` is stripped and before the
            block map (for names a model spells its own way).
        blocks_prefix: where the blocks live in `module` (``"blocks."``).
        what: the model's name for error messages.

    Raises:
        WeightsError naming, in the checkpoint's spelling, keys left over, tensors the
        module needs that the checkpoint lacks, and shape mismatches.
    """
    rename = dict(rename or {})
    back = {v: k for k, v in rename.items()}
    expected = module.state_dict()
    mapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if any(fnmatch.fnmatchcase(key, pat) for pat in drop):
            continue
        if not key.startswith(prefix):
            unexpected.append(key)
            continue
        inner = key[len(prefix):]
        ours = from_timm_key(rename.get(inner, inner), blocks_prefix)
        if ours not in expected:
            unexpected.append(key)
            continue
        mapped[ours] = value
        origin[ours] = key

    def published(ours: str) -> str:
        timm = to_timm_key(ours, blocks_prefix)
        return prefix + back.get(timm, timm)

    missing = [published(k) for k in expected if k not in mapped]
    mismatched = [
        f"{origin[k]}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in mapped and tuple(mapped[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_some(mismatched)}")
    if problems:
        label = what or type(module).__name__
        raise WeightsError(
            f"Checkpoint does not fit {label} ({'; '.join(problems)}): use the weights made for "
            "this model and size."
        )
    return mapped


def load_timm_vit(
    module: nn.Module,
    state: Mapping[str, Tensor],
    *,
    prefix: str = "",
    drop: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    blocks_prefix: str = "blocks.",
    what: str = "",
) -> dict[str, int]:
    """Fill `module` from a timm-layout checkpoint (see :func:`map_timm_state`).

    Returns ``{"loaded": n, "dropped": m}``: tensors copied, and checkpoint tensors matched by
    `drop` and left unused.
    """
    mapped = map_timm_state(module, state, prefix=prefix, drop=drop, rename=rename,
                            blocks_prefix=blocks_prefix, what=what)
    module.load_state_dict(mapped, strict=True)
    return {"loaded": len(mapped), "dropped": len(state) - len(mapped)}
