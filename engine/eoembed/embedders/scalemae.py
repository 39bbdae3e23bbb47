"""Scale-MAE (fMoW RGB, ViT-L/16) on Sentinel-2 true colour, with its GSD-ratio position input."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..nn.mae import MAEViT
from ..providers.base import Observation
from .fixed_vit import positive
from .remoteclip import DEFAULT_RGB_MAX
from .satmae import SatMAEEmbedder, tokens_to_maps

#: ImageNet statistics Scale-MAE normalises fMoW RGB with (``mae/dataloaders/fmow.py``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ScaleMAEEmbedder(SatMAEEmbedder):
    """Scale-MAE (Reed et al. 2023, "Scale-MAE: A Scale-Aware Masked Autoencoder for
    Multiscale Geospatial Representation Learning", ICCV; CC BY-NC 4.0, i.e. no commercial
    use): a ViT-L/16 whose 2D sin-cos positions are scaled by the input's ground sampling
    distance, pretrained on fMoW RGB.

    Input: B04, B03, B02 / ``rgb_max`` clipped to [0, 1] (the 8-bit RGB ÷ 255), ImageNet
    mean/std, then a bicubic resize of the whole place to 224 × 224 (or tiles). The position grid is scaled
    by ``input_res``, a GSD *ratio* (not metres), as upstream's evaluation computes it:
    ``base_resolution × (input pixels per model pixel)`` — ``eval_base_resolution × 224 /
    eval_scale`` in ``mae/eval/knn.py``, where an image of 224 native pixels is fed at
    ``eval_scale``. Here the input pixels per model pixel are ``√(H·W) / 224`` for a place of
    H × W pixels resized to 224 (1 for tiles). ``base_resolution`` defaults to 1.0
    (``--eval_base_resolution``).

    Outputs: pooled = mean (or max) of the patch tokens after the final norm (class token
    excluded; upstream's kNN uses the class token); grid = the patch tokens, 14 × 14. 1024-d.

    Args:
        base_resolution: GSD ratio of one input pixel.
        rgb_max: reflectance × 10000 that becomes full brightness.
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family: ClassVar[str] = "scalemae"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    noncommercial: ClassVar[bool] = True
    license: ClassVar[str] = "CC BY-NC 4.0 (Scale-MAE LICENSE)"
    paper: ClassVar[str] = "Reed et al. 2023, Scale-MAE, ICCV (arXiv:2212.14532)"
    title: ClassVar[str] = "Scale-MAE ViT-L/16 (fMoW RGB)"
    #: torchgeo's copy of the authors' release ``scalemae-vitlarge-800.pth``
    source: ClassVar[tuple[str, str]] = (
        "hf:torchgeo/vit_large_patch16_224_fmow_rgb_scalemae@9dc7f569424baeb780698352cf6e87638c882123",
        "vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth")

    def __init__(self, model_id: str = "scalemae", *, base_resolution: float = 1.0,
                 rgb_max: float = DEFAULT_RGB_MAX, **kwargs: Any) -> None:
        self.base_resolution = positive("base_resolution", base_resolution)
        super().__init__(model_id, rgb_max=rgb_max, **kwargs)

    def build(self) -> torch.nn.Module:
        return MAEViT(self.encoder_config(), resolution_pos=True)

    def gsd_ratio(self, obs: Observation) -> float:
        """``input_res`` of `obs`: base_resolution × input pixels per model pixel."""
        return self.base_resolution * math.sqrt(obs.grid.height * obs.grid.width) / self.image_size

    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing(),
                "input_res": f"{self.base_resolution:g} x sqrt(H*W) / {self.image_size} "
                             "(GSD ratio; 1 per input pixel, as upstream evaluation)"}

    def extra_config(self) -> dict[str, Any]:
        return {"base_resolution": self.base_resolution}

    def meta_for(self, obs: Observation) -> dict[str, Any]:
        return {"input_res": round(self.gsd_ratio(obs), 6)}

    def encode(self, x: torch.Tensor, observations: list[Observation]) -> torch.Tensor:
        res = torch.tensor([self.gsd_ratio(o) for o in observations], dtype=torch.float32)
        out, (h, w) = self.network(x[:, 0], res)
        return tokens_to_maps(out, 1, h, w)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ScaleMAEEmbedder"]
