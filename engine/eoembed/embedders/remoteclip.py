"""RemoteCLIP: CLIP fine-tuned on remote-sensing captions, fed Sentinel-2 true colour."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import SpecError
from .base import ModelCard
from .clip import OPENAI_MEAN, OPENAI_STD, CLIPEmbedder

__all__ = ["ARCHS", "DEFAULT_RGB_MAX", "OPENAI_MEAN", "OPENAI_STD", "RemoteCLIPEmbedder"]

#: Sentinel-2 reflectance × 10000 that maps to full brightness (1.0) in the RGB image.
DEFAULT_RGB_MAX = 3000.0

#: RemoteCLIP architectures: id suffix → open_clip name.
ARCHS = {"vit-b-32": "ViT-B-32", "vit-l-14": "ViT-L-14", "rn50": "RN50"}


class RemoteCLIPEmbedder(CLIPEmbedder):
    """RemoteCLIP (Liu et al. 2024, "RemoteCLIP: A Vision Language Foundation Model for Remote
    Sensing", IEEE TGRS 62): OpenAI CLIP continued on remote-sensing image–caption pairs, for
    retrieval, zero-shot labels and general features of RGB overhead imagery.

    Input: Sentinel-2 B04, B03, B02 (reflectance × 10000) divided by ``rgb_max`` (default 3000:
    a fixed true-colour stretch, the same for every place so that embeddings stay comparable)
    and clipped to [0, 1] before the resize and after it (as an 8-bit image would be), then
    OpenAI's mean and std.

    Weights: ``hf:chendelong/RemoteCLIP`` ``RemoteCLIP-<arch>.pt`` (plain open_clip state dict),
    the Hub-mixin copies ``hf:MVRL/remote-clip-vit-base-patch32`` / ``…-large-patch14``
    (``model.safetensors``, the same tensors under ``model.``), or any local file or folder.
    Activation: QuickGELU, because the authors' retrieval-evaluation script builds the network
    from OpenAI's weights (open_clip ``pretrained='openai'``, which means QuickGELU);
    ``act='gelu'`` gives their README's plain ``create_model_and_transforms(name)``.

    Args:
        arch: ``"vit-b-32"`` (default), ``"vit-l-14"`` or ``"rn50"``.
        rgb_max: reflectance × 10000 that becomes full brightness.
        act: MLP activation of both towers.
        tokenizer: BPE vocabulary source (see :func:`eoembed.nn.clip_tokenizer.load_clip_tokenizer`).
        normalize: L2-normalise image and grid embeddings (text embeddings always are).
        fit: ``"crop"`` (CLIP's centre square) or ``"squash"`` (the whole place).
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family = "remoteclip"
    bands = ("B04", "B03", "B02")
    mean = OPENAI_MEAN
    std = OPENAI_STD
    image_range = (0.0, 1.0)
    #: Hub repositories that hold the RemoteCLIP weights under another file name
    HUB_FILES: ClassVar[dict[str, str]] = {
        "MVRL/remote-clip-vit-base-patch32": "model.safetensors",
        "MVRL/remote-clip-vit-large-patch14": "model.safetensors",
    }

    def __init__(self, model_id: str = "remoteclip-vit-b-32", *, arch: str = "vit-b-32",
                 rgb_max: float = DEFAULT_RGB_MAX, **kwargs: Any) -> None:
        key = str(arch).strip().lower()
        if key not in ARCHS:
            raise SpecError(f"RemoteCLIP arch={arch!r} must be one of {', '.join(ARCHS)}")
        try:
            rgb_max = float(rgb_max)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"rgb_max={rgb_max!r} must be a number") from exc
        if not np.isfinite(rgb_max) or rgb_max <= 0:
            raise SpecError(f"rgb_max={rgb_max!r} must be a positive reflectance × 10000 (e.g. 3000)")
        super().__init__(model_id, arch=ARCHS[key], **kwargs)
        self.rgb_max = rgb_max

    def default_source(self) -> tuple[str, str]:
        return "hf:chendelong/RemoteCLIP", f"RemoteCLIP-{self.arch}.pt"

    def weights_source(self) -> tuple[str, str | None]:
        if self.weights and self.weights.startswith("hf:") and not self.weights_file:
            repo = self.weights[3:].split("@")[0]
            if repo in self.HUB_FILES:
                return self.weights, self.HUB_FILES[repo]
        return super().weights_source()

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.rgb_max).clamp(0.0, 1.0)

    def fill_values(self) -> torch.Tensor:
        return torch.tensor(self.mean, dtype=torch.float32) * self.rgb_max

    def preprocessing(self) -> dict[str, Any]:
        return {
            "units": "S2 L2A reflectance x 10000",
            "rgb": f"B04, B03, B02 / {self.rgb_max:g}, clipped to [0, 1] before and after the resize",
            "rgb_max": self.rgb_max,
            "normalise": "(rgb - mean) / std (OpenAI CLIP)",
        }

    def describe(self) -> ModelCard:
        return self._card(
            summary=f"RemoteCLIP {self.arch}: remote-sensing CLIP on S2 true colour; image and text embeddings.",
            license="Apache-2.0 (RemoteCLIP code); see the chendelong/RemoteCLIP model card for the weights",
            paper="Liu et al. 2024, RemoteCLIP, IEEE TGRS 62 (arXiv:2306.11029)",
        )
