"""What fixed-input-size ViT embedders share (Prithvi, SatMAE, SatMAE++, Scale-MAE): the input
image at the model's size, invalid pixels, the pooled vector and the georeferenced patch grid.

A subclass sets ``bands``, ``image_size``, ``fill`` (per-band value given to invalid pixels, in
observation units) and implements :meth:`FixedViTEmbedder.normalise` (observation units →
network input) and :meth:`FixedViTEmbedder.encode` (network input → patch-token maps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..embedding import Embedding
from ..errors import ModelError, SpecError
from ..providers.base import Observation
from ..specs import OutputSpec
from ..weights import choose_source
from .base import Embedder, pool_feature_maps


class FixedViTEmbedder(Embedder):
    """Shared machinery of ViTs trained at one image size.

    Input: each observation's frames (the first only, unless the model is temporal) in
    ``bands``; invalid pixels take ``fill`` (the band mean, so 0 after standardisation); the
    values are normalised at the place's own size and then, as upstream's transforms do, the
    whole place is resized (``resize_mode``, antialiased when shrinking) to ``image_size`` ×
    ``image_size``, so the grid covers the place exactly. With ``InputPrep.tile()`` the place is
    cut into ``image_size`` tiles at its native resolution instead (no resize).

    Outputs: pooled = mean (or max) of the patch tokens after the final norm, class token
    excluded, each patch weighted by the fraction of its pixels inside the place; grid = the
    patch tokens (averaged over frames or channel groups where the model has several tokens
    per patch), one cell per patch.
    """

    default_batch_size: ClassVar[int] = 8
    bands: ClassVar[tuple[str, ...]] = ()
    image_size: ClassVar[int] = 224
    resize_mode: ClassVar[str] = "bicubic"
    temporal_input: ClassVar[bool] = False

    def __init__(self, model_id: str, *, weights_file: str | None = None, device: str = "cpu",
                 weights: str | None = None, batch_size: int | None = None) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        self.weights_file = weights_file
        self._model: torch.nn.Module | None = None

    # -- subclass contract ------------------------------------------------------------------
    def default_source(self) -> tuple[str, str]:
        """(source, file) of the published weights."""
        raise NotImplementedError

    def fill(self) -> torch.Tensor:
        """``[C]`` value (observation units) of invalid pixels: the band mean."""
        raise NotImplementedError

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` in observation units → network input values (same shape);
        applied before the resize."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, observations: list[Observation]) -> torch.Tensor:
        """Network input → patch tokens ``[B, K, D, h, w]`` (K tokens per patch: frames or
        channel groups)."""
        raise NotImplementedError

    def meta_for(self, obs: Observation) -> dict[str, Any]:
        """Extra provenance of `obs`'s embedding (e.g. the side inputs it was given)."""
        return {}

    # -- weights ----------------------------------------------------------------------------
    def weights_source(self) -> tuple[str, str | None]:
        """(source, file inside it) that ``_load`` resolves."""
        return choose_source(self.weights, self.weights_file, self.default_source())

    def weights_label(self) -> str:
        source, file = self.weights_source()
        return f"{source} ({file})" if file else source

    @property
    def network(self) -> torch.nn.Module:
        """The loaded network (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    # -- input ------------------------------------------------------------------------------
    def prepare(self, observations: Sequence[Observation]) -> torch.Tensor:
        """``[B, T, C, S, S]`` network input of same-frame-count observations."""
        fill = self.fill().view(1, -1, 1, 1)
        images = []
        for obs in observations:
            vals = torch.from_numpy(obs.values(self.bands))
            valid = torch.from_numpy(np.asarray(obs.valid, dtype=bool))
            if not self.temporal_input:
                vals, valid = vals[:1], valid[:1]
            vals = torch.where(valid[:, None], vals, fill)
            # upstream order: the image is normalised (clipped, quantised) at its own size,
            # then resized
            images.append(_resize(self.normalise(vals[None])[0], self.image_size,
                                  self.resize_mode))
        return torch.stack(images).to(self.device)

    # -- inference --------------------------------------------------------------------------
    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        counts = {o.array.shape[0] for o in observations} if self.temporal_input else {1}
        if len(counts) > 1:  # different frame counts: one forward pass each
            return [e for o in observations for e in self.embed_batch([o], output)]
        x = self.prepare(observations)
        tokens = self.encode(x, observations)  # B K D h w
        extras = [self.meta_for(o) for o in observations]
        if output.mode == "pooled":
            b, k, d, h, w = tokens.shape
            flat = tokens.permute(0, 2, 1, 3, 4).reshape(b, d, k * h, w)
            masks = [np.tile(np.asarray(o.roi_mask, bool), (k, 1)) for o in observations]
            vecs = pool_feature_maps(flat, masks, output.pooling)
            return [self.pooled_embedding(v, o, output, **e)
                    for v, o, e in zip(vecs, observations, extras)]
        grids = tokens.mean(1)
        return [self.grid_embedding(g, o, output, **e)
                for g, o, e in zip(grids, observations, extras)]


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``[T, C, H, W]`` → ``[T, C, size, size]`` (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=shrink)


def positive(name: str, value: Any) -> float:
    """`value` as a positive finite float, else SpecError naming `name`."""
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{name}={value!r} must be a number") from exc
    if not np.isfinite(out) or out <= 0:
        raise SpecError(f"{name}={value!r} must be a positive number")
    return out
