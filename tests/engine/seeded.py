"""Deterministic weights by key name, so that a network built here and the upstream one built
outside the repository (for parity numbers) receive identical tensors."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def seeded_state(shapes: Mapping[str, tuple[int, ...]], seed: int = 0, scale: float = 0.1) -> dict[str, Tensor]:
    """One tensor per key (sorted order, one generator): ``N(0, scale²)``, or ``1 + N(0, scale²)``
    for one-dimensional ``*.weight`` keys (norm gains)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        value = torch.randn(shape, generator=gen, dtype=torch.float32) * scale
        if key.endswith("weight") and len(shape) == 1:
            value = value + 1.0
        out[key] = value
    return out


def seeded_input(shape: tuple[int, ...], seed: int = 1) -> Tensor:
    """A reproducible input in [0, 1)."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))
