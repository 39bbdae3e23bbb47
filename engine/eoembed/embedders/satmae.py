"""SatMAE (fMoW RGB, ViT-L/16) on Sentinel-2 true colour: a vector or a georeferenced patch grid.

Also the base of the other fMoW-RGB MAE embedders (SatMAE++ RGB, Scale-MAE): RGB from
reflectance, the published MAE checkpoint, the encoder of :mod:`eoembed.nn.mae`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..nn.mae import MAEConfig, MAEViT, load_mae
from ..providers.base import Observation
from ..weights import extract_state_dict, file_sha256, load_checkpoint, resolve
from .base import ModelCard
from .fixed_vit import FixedViTEmbedder, positive
from .remoteclip import DEFAULT_RGB_MAX

#: fMoW-RGB statistics of SatMAE / SatMAE++ (``util/datasets.py``: ``CustomDatasetFromImages``)
FMOW_RGB_MEAN = (0.4182007312774658, 0.4214799106121063, 0.3991275727748871)
FMOW_RGB_STD = (0.28774282336235046, 0.27541765570640564, 0.2764017581939697)
#: checkpoint classes the authors' training checkpoints pickle next to the weights
CHECKPOINT_ALLOW = ("argparse.Namespace",)


class SatMAEEmbedder(FixedViTEmbedder):
    """SatMAE (Cong et al. 2022, "SatMAE: Pre-training Transformers for Temporal and
    Multi-Spectral Satellite Imagery", NeurIPS; weights and code CC BY-NC 4.0, i.e. no
    commercial use): a ViT-L/16 masked autoencoder pretrained on fMoW RGB (high-resolution
    WorldView/QuickBird RGB), used here as a general RGB overhead-image encoder.

    Input: Sentinel-2 B04, B03, B02 (reflectance × 10000) divided by ``rgb_max`` (default 3000,
    a fixed true-colour stretch) and clipped to [0, 1], as the 8-bit RGB ÷ 255 of upstream's
    ``ToTensor``; ``(rgb − mean) / std`` with the fMoW-RGB statistics; then, in upstream's
    order, the whole place resized bicubically to 224 × 224 (upstream evaluates a 256-px resize
    and a 224 centre crop of each fMoW image; here nothing is cropped so the grid covers the
    place).

    Outputs: pooled = mean (or max) of the 196 patch tokens after the final norm (class token
    excluded); grid = those tokens, 14 × 14 at 224 px. 1024-d.

    Args:
        rgb_max: reflectance × 10000 that becomes full brightness.
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family: ClassVar[str] = "satmae"
    bands = ("B04", "B03", "B02")
    image_size = 224
    mean: ClassVar[tuple[float, ...]] = FMOW_RGB_MEAN
    std: ClassVar[tuple[float, ...]] = FMOW_RGB_STD
    noncommercial: ClassVar[bool] = True
    license: ClassVar[str] = "CC BY-NC 4.0 (SatMAE LICENSE)"
    input_words: ClassVar[str] = "S2 true colour"
    paper: ClassVar[str] = "Cong et al. 2022, SatMAE, NeurIPS (arXiv:2207.08051)"
    title: ClassVar[str] = "SatMAE ViT-L/16 (fMoW RGB)"
    source: ClassVar[tuple[str, str]] = ("hf:MVRL/satmae-vitlarge-fmow-pretrain-800",
                                         "model.safetensors")

    def __init__(self, model_id: str = "satmae", *, rgb_max: float = DEFAULT_RGB_MAX,
                 **kwargs: Any) -> None:
        self.rgb_max = positive("rgb_max", rgb_max)
        super().__init__(model_id, **kwargs)

    def default_source(self) -> tuple[str, str]:
        return self.source

    def encoder_config(self) -> MAEConfig:
        return MAEConfig()

    def fill(self) -> torch.Tensor:
        return torch.tensor(self.mean, dtype=torch.float32) * self.rgb_max

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x / self.rgb_max).clamp(0.0, 1.0)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 1, -1, 1, 1)
        return (rgb - mean) / std

    def preprocessing(self) -> dict[str, Any]:
        return {
            "units": "S2 L2A reflectance x 10000",
            "rgb": f"B04, B03, B02 / {self.rgb_max:g}, clipped to [0, 1] (upstream: 8-bit RGB / 255)",
            "rgb_max": self.rgb_max,
            "resize": f"after normalising: whole place to {self.image_size}x{self.image_size}, "
                      "bicubic, antialiased when shrinking (or InputPrep.tile())",
            "normalise": "(rgb - mean) / std",
            "mean": list(self.mean),
            "std": list(self.std),
            "invalid_pixels": "set to the band mean (0 after normalisation)",
        }

    def describe(self) -> ModelCard:
        cfg = self.encoder_config()
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"{self.title} on {self.input_words}: image vector or patch grid.",
            bands=self.bands,
            scale_m=10.0,
            image_size=self.image_size,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=cfg.width,
            weights=self.weights_label(),
            license=self.license,
            paper=self.paper,
            grid_cell_px=cfg.patch_size,
            preprocessing=self.preprocessing(),
            config={"arch": f"ViT-L/{cfg.patch_size}", "image_size": cfg.img_size,
                    "pooled": "mean of patch tokens after the final norm (class token excluded)",
                    "grid": "patch tokens after the final norm", **self.extra_config()},
            noncommercial=self.noncommercial,
        )

    def extra_config(self) -> dict[str, Any]:
        return {}

    # -- weights --------------------------------------------------------------------------
    def build(self) -> torch.nn.Module:
        return MAEViT(self.encoder_config())

    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        state = extract_state_dict(load_checkpoint(path, allow=CHECKPOINT_ALLOW))
        model = self.build()
        counts = load_mae(model, state, what=f"{self.title} ({path.name})")
        self._model = model.eval().to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             **counts}

    # -- inference ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, observations: list[Observation]) -> torch.Tensor:
        out, (h, w) = self.network(x[:, 0])
        return tokens_to_maps(out, 1, h, w)


def tokens_to_maps(out: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """``[B, 1 + K·h·w, D]`` (class token first, K-major) → patch maps ``[B, K, D, h, w]``."""
    b = out.shape[0]
    return out[:, 1:].reshape(b, k, h, w, -1).permute(0, 1, 4, 2, 3)


__all__ = ["CHECKPOINT_ALLOW", "FMOW_RGB_MEAN", "FMOW_RGB_STD", "SatMAEEmbedder",
           "tokens_to_maps"]
