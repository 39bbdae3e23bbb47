"""Fixed sin-cos position tables (1D, 2D, 3D with time, resolution- and GSD-scaled).

These tables are functions of the token grid only, so models compute them when they are built
or for each input size, and never read them from a checkpoint (a stored copy is dropped by the
loader). Everything is computed on the CPU in float64 and returned as float32 CPU tensors (move
them with ``.to(tokens)``), so any device (including MPS, which lacks float64) can use them.

Public API (stable; other model files build on it):

- :func:`sincos_1d` ``(dim, positions) → [M, dim]``: ``[sin(p·ω), cos(p·ω)]`` with
  ``ω_i = 1 / 10000^(i / (dim/2))`` (the MAE / Transformer form).
- :func:`sincos_2d` ``(dim, (h, w), scale=1, cls_token=False) → [(1+)h·w, dim]``: MAE's 2D table,
  first half encodes the column (x) index, second half the row (y) index, row-major tokens.
  ``scale`` multiplies both coordinates: a float, or a ``[N]`` tensor for one table per sample
  (``[N, (1+)h·w, dim]``), which is Scale-MAE's resolution-scaled table.
- :func:`sincos_3d` ``(dim, (t, h, w), cls_token=False) → [(1+)t·h·w, dim]``: Prithvi's 3D table,
  channels split (w: 6/16, h: 6/16, t: 4/16), tokens ordered t, then h, then w.
- :func:`sincos_2d_gsd` ``(dim, (h, w), gsd) → [h·w, dim]``: the lucidrains / Clay form
  ``[sin(xω), cos(xω), sin(yω), cos(yω)]`` with ``ω_i = gsd / 10000^(2·(i/(dim/4 − 1))/dim)``.
- :func:`sincos_1d_simple` ``(values, dim) → [M, dim]``: the lucidrains 1D form
  ``ω_i = 1 / 10000^(i / (dim/2 − 1))`` (Clay's wavelength and metadata encodings).

A class-token row, when asked for, is zeros (as in MAE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["sincos_1d", "sincos_1d_simple", "sincos_2d", "sincos_2d_gsd", "sincos_3d"]

_DTYPE = torch.float64


def _positions(values: Tensor | Sequence[float]) -> Tensor:
    """Positions as a float64 CPU vector (tables are built on the CPU; callers move them)."""
    if isinstance(values, Tensor):
        return values.detach().to("cpu", _DTYPE).reshape(-1)
    return torch.as_tensor(values, dtype=_DTYPE, device="cpu").reshape(-1)


def _even(dim: int, what: str, multiple: int = 2) -> None:
    if dim <= 0 or dim % multiple:
        raise ValueError(f"{what} needs a width divisible by {multiple}, got {dim}")


def _sincos(dim: int, pos: Tensor, temperature: float) -> Tensor:
    """float64 ``[M, dim]``: MAE's ``[sin(p·ω), cos(p·ω)]``, ``ω_i = T^(-i/(dim/2))``."""
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=_DTYPE, device="cpu") / (dim / 2.0))
    out = pos.reshape(-1, 1).to(_DTYPE) * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_1d(dim: int, positions: Tensor | Sequence[float], *,
              temperature: float = 10000.0) -> Tensor:
    """``[M, dim]`` float32 table of the 1D positions (MAE's ``get_1d_sincos_pos_embed``)."""
    _even(dim, "a 1D sin-cos table")
    return _sincos(dim, _positions(positions), temperature).float()


def _with_cls(table: Tensor, cls_token: bool) -> Tensor:
    if not cls_token:
        return table
    zeros = table.new_zeros(*table.shape[:-2], 1, table.shape[-1])
    return torch.cat([zeros, table], dim=-2)


def sincos_2d(dim: int, grid: tuple[int, int], *, scale: float | Tensor = 1.0,
              cls_token: bool = False) -> Tensor:
    """MAE's fixed 2D table for an ``(h, w)`` token grid, row-major.

    Channels ``[:dim/2]`` encode the column index, ``[dim/2:]`` the row index, each as
    :func:`sincos_1d`. ``scale`` multiplies the grid coordinates (Scale-MAE's ``input_res``):
    a number gives ``[(1+)h·w, dim]``, a ``[N]`` tensor gives ``[N, (1+)h·w, dim]``.
    """
    _even(dim, "a 2D sin-cos table", 4)
    h, w = (int(v) for v in grid)
    rows = torch.arange(h, dtype=_DTYPE, device="cpu").repeat_interleave(w)
    cols = torch.arange(w, dtype=_DTYPE, device="cpu").repeat(h)
    if isinstance(scale, Tensor) and scale.dim() > 0:
        s = scale.detach().to("cpu", _DTYPE).reshape(-1, 1)
        tables = [torch.cat([_sincos(dim // 2, cols * f, 10000.0),
                             _sincos(dim // 2, rows * f, 10000.0)], dim=1) for f in s]
        return _with_cls(torch.stack(tables).float(), cls_token)
    f = float(scale)
    table = torch.cat([_sincos(dim // 2, cols * f, 10000.0), _sincos(dim // 2, rows * f, 10000.0)],
                      dim=1)
    return _with_cls(table.float(), cls_token)


def sincos_3d(dim: int, grid: tuple[int, int, int], *, cls_token: bool = False) -> Tensor:
    """Prithvi's fixed 3D table for a ``(t, h, w)`` token grid: ``[(1+)t·h·w, dim]``.

    Channels: the column index over ``dim/16·6``, then the row index over ``dim/16·6``, then
    the frame index over ``dim/16·4``; tokens ordered frame-major, then row, then column.
    """
    _even(dim, "a 3D sin-cos table", 16)
    t, h, w = (int(v) for v in grid)
    dw = dh = dim // 16 * 6
    dt = dim // 16 * 4
    frames = torch.arange(t, dtype=_DTYPE, device="cpu").repeat_interleave(h * w)
    rows = torch.arange(h, dtype=_DTYPE, device="cpu").repeat_interleave(w).repeat(t)
    cols = torch.arange(w, dtype=_DTYPE, device="cpu").repeat(t * h)
    table = torch.cat([_sincos(dw, cols, 10000.0), _sincos(dh, rows, 10000.0),
                       _sincos(dt, frames, 10000.0)], dim=1)
    return _with_cls(table.float(), cls_token)


def sincos_2d_gsd(dim: int, grid: tuple[int, int], gsd: float = 1.0, *,
                  temperature: float = 10000.0) -> Tensor:
    """The lucidrains-style 2D table scaled by the ground sampling distance (Clay v1.x).

    ``[h·w, dim]`` row-major, channels ``[sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω)]`` with
    ``ω_i = gsd / T^(2·(i / (dim/4 − 1)) / dim)``, ``i < dim/4`` (x = column, y = row).
    """
    _even(dim, "a GSD-scaled 2D sin-cos table", 4)
    h, w = (int(v) for v in grid)
    q = dim // 4
    steps = torch.arange(q, dtype=_DTYPE, device="cpu") / max(q - 1, 1)
    omega = float(gsd) / temperature ** (2.0 * steps / dim)
    ys = torch.arange(h, dtype=_DTYPE, device="cpu").repeat_interleave(w)[:, None] * omega[None]
    xs = torch.arange(w, dtype=_DTYPE, device="cpu").repeat(h)[:, None] * omega[None]
    return torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=1).float()


def sincos_1d_simple(values: Tensor | Sequence[float], dim: int, *,
                     temperature: float = 10000.0) -> Tensor:
    """lucidrains' 1D table ``[sin(vω), cos(vω)]``, ``ω_i = T^(-i/(dim/2 − 1))``: ``[M, dim]``."""
    _even(dim, "a 1D sin-cos table")
    half = dim // 2
    omega = 1.0 / temperature ** (torch.arange(half, dtype=_DTYPE, device="cpu") / max(half - 1, 1))
    out = _positions(values)[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()
