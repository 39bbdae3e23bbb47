"""What fixed-size image ViT embedders share: fill invalid pixels, crop or squash to a square,
resize to the model's size, normalise, one forward pass, then pooled vectors or georeferenced
patch grids. DOFA, SoftCon, CROMA and Clay subclass :class:`ImageModelEmbedder`."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from torch import nn

from ..embedding import Embedding
from ..errors import ModelError, SpecError
from ..grid import GridSpec
from ..providers.base import Observation, make_observation
from ..specs import OutputSpec
from ..weights import choose_source
from .base import Embedder, fit_window

FITS = ("crop", "squash")


class ImageModelEmbedder(Embedder):
    """A single-image model with a square input of ``image_size`` px and ``patch``-px tokens.

    Input: each observation's first frame (the composite over the window) in :meth:`bands`
    order. Invalid pixels take :meth:`fill_values` (observation units). ``fit="crop"`` keeps the
    centre square of whole input pixels (side = the shorter side), ``fit="squash"`` the whole
    place; then :meth:`normalize` at the place's own size (so clipping and 8-bit steps act on
    the pixels, as upstream's data pipelines do) and a bilinear resize to ``image_size``
    (antialiased when shrinking). Grids are georeferenced over the part of the place the model
    saw.
    """

    default_batch_size: ClassVar[int] = 8

    def __init__(
        self,
        model_id: str,
        *,
        fit: Literal["crop", "squash"] = "crop",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if fit not in FITS:
            raise SpecError(f"fit={fit!r} must be 'crop' (centre square) or 'squash' (whole place)")
        self.fit = fit
        self.weights_file = weights_file
        self._model: nn.Module | None = None

    # -- subclass contract ------------------------------------------------------------------
    @property
    @abstractmethod
    def bands(self) -> tuple[str, ...]:
        """Band names in the order the network reads them."""

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side of the square network input in pixels."""

    @abstractmethod
    def default_source(self) -> tuple[str, str]:
        """(source, file) of the published weights."""

    @abstractmethod
    def fill_values(self) -> torch.Tensor:
        """Per-band value (observation units) given to invalid pixels."""

    @abstractmethod
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, S, S]`` in observation units → network input."""

    @abstractmethod
    def forward(self, x: torch.Tensor, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input → pooled ``[B, D]`` and patch grid ``[B, D, h, w]``."""

    def extra_meta(self, obs: Observation) -> dict[str, Any]:
        """More per-observation provenance for meta (side inputs)."""
        return {}

    def pooled_name(self) -> str:
        """What the pooled vector is (recorded in meta)."""
        return "model's pooled output (not mask-weighted)"

    # -- shared ---------------------------------------------------------------------------------
    def weights_source(self) -> tuple[str, str | None]:
        """(source, file inside it) that :meth:`_load` resolves."""
        return choose_source(self.weights, self.weights_file, self.default_source())

    def weights_label(self) -> str:
        source, file = self.weights_source()
        return f"{source} ({file})" if file else source

    def fit_record(self) -> dict[str, Any]:
        """The card's preprocessing entries about cropping and resizing."""
        return {
            "frame": "first frame (the composite over the window)",
            "fit": ("centre square of whole input pixels" if self.fit == "crop" else "whole place (aspect dropped)")
            + f", normalised, then bilinear resize to {self.image_size}×{self.image_size} px (antialiased when "
            "shrinking)",
        }

    @property
    def network(self) -> nn.Module:
        """The loaded network (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    def crop_window(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(row, col, height, width) of the input pixels the model sees."""
        return fit_window(self.fit, h, w)

    def prepare(self, observations: list[Observation]) -> tuple[torch.Tensor, list[Observation]]:
        """Network input ``[B, C, S, S]`` and, per observation, the part of it the model saw."""
        fill = self.fill_values().view(-1, 1, 1)
        images, seen = [], []
        for obs in observations:
            vals = torch.from_numpy(np.asarray(obs.values(self.bands)[0], dtype=np.float32))
            valid = torch.from_numpy(np.asarray(obs.valid[0], dtype=bool))
            vals = torch.where(valid[None], vals, fill)
            r, c, h, w = self.crop_window(*vals.shape[-2:])
            crop = self.normalize(vals[None, :, r : r + h, c : c + w].to(self.device))[0]
            images.append(resize_square(crop, self.image_size))
            whole = (h, w) == (obs.grid.height, obs.grid.width)
            seen.append(obs if whole else sub_observation(obs, r, c, h, w))
        return torch.stack(images), seen

    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        x, seen = self.prepare(observations)
        pooled, grid = self.forward(x, observations)
        if output.mode == "pooled":
            return [self.pooled_embedding(v, o, output, pooling=self.pooled_name(), input_window=window(o, s),
                                          **self.extra_meta(o))
                    for v, o, s in zip(pooled, observations, seen)]
        return [self.grid_embedding(g, s, output, input_window=window(o, s), **self.extra_meta(o))
                for g, o, s in zip(grid, observations, seen)]


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[C, H, W]`` to ``[C, size, size]`` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)[0]


def sub_observation(obs: Observation, r: int, c: int, h: int, w: int) -> Observation:
    """The window ``[r:r+h, c:c+w]`` of `obs` as an Observation on its own grid."""
    grid = GridSpec(obs.grid.crs, obs.grid.transform * Affine.translation(c, r), w, h)
    return make_observation(
        obs.values()[:, :, r : r + h, c : c + w], obs.valid[:, r : r + h, c : c + w], grid,
        obs.bands, obs.dates, obs.roi_mask[r : r + h, c : c + w], obs.meta,
    )


def window(obs: Observation, seen: Observation) -> list[int]:
    """[row, col, height, width] of `seen` inside `obs`, in input pixels."""
    col, row = ~obs.grid.transform * (seen.grid.transform.c, seen.grid.transform.f)
    return [round(row), round(col), seen.grid.height, seen.grid.width]


def tokens_to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Row-major patch tokens ``[B, h·w, D]`` → ``[B, D, h, w]``."""
    b, n, d = tokens.shape
    if n != h * w:
        raise ModelError(f"{n} patch tokens do not form a {h}×{w} grid")
    return tokens.transpose(1, 2).reshape(b, d, h, w)
