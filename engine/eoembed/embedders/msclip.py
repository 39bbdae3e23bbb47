"""Llama3-MS-CLIP: a CLIP whose image tower reads ten Sentinel-2 L2A bands."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..nn.clip import CLIPConfig
from .base import ModelCard
from .clip import CLIPEmbedder

#: Input bands, in the order of the checkpoint's ``visual.conv1`` channels.
MSCLIP_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Per-band mean and std of L2A reflectance × 10000 without the +1000 BOA offset (the published
#: configs/data_config.yaml means have the offset; the upstream transform subtracts 1000).
MSCLIP_MEAN = (925.161, 1183.128, 1338.041, 1667.254, 2233.633, 2460.96, 2555.569, 2619.542, 2406.497, 1841.645)
MSCLIP_STD = (1205.586, 1223.713, 1399.638, 1403.298, 1378.513, 1434.924, 1491.141, 1454.089, 1473.248, 1365.08)


class MSCLIPEmbedder(CLIPEmbedder):
    """Llama3-MS-CLIP (Marimo et al. 2025, "Beyond the Visible: Multispectral Vision-Language
    Learning for Earth Observation", arXiv:2503.15969): open_clip ViT-B-16 (LAION-2B start,
    GELU) continued on SSL4EO-S12 Sentinel-2 scenes captioned by Llama 3, with a ten-band patch
    embedding — image and text embeddings of multispectral imagery in one 512-d space.

    Input: the ten 10 m / 20 m bands (:data:`MSCLIP_BANDS`) as L2A reflectance × 10000, resized
    bicubically to 224 px and standardised per band (:data:`MSCLIP_MEAN`, :data:`MSCLIP_STD`);
    no scaling to [0, 1].

    Weights: ``hf:ibm-esa-geospatial/Llama3-MS-CLIP-base`` ``Llama3_MS_CLIP_weights.pt``, a
    training-wrapper state dict holding ``temperature`` and the CLIP three times (shared
    storage) under ``clip_base_model.model.``, ``text_encoder.model.`` and
    ``image_encoder.model.``; the first copy is loaded.

    Args:
        act: MLP activation (GELU, as the LAION-trained open_clip ViT-B-16 it started from).
        tokenizer: BPE vocabulary source (open_clip's standard CLIP tokenizer was used).
        normalize: L2-normalise image and grid embeddings (text embeddings always are).
        fit: ``"crop"`` (CLIP's centre square) or ``"squash"`` (the whole place).
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family = "msclip"
    bands = MSCLIP_BANDS
    mean = MSCLIP_MEAN
    std = MSCLIP_STD

    def __init__(self, model_id: str = "llama3-ms-clip-base", *, act: str = "gelu", **kwargs: Any) -> None:
        super().__init__(model_id, arch="ViT-B-16", act=act, **kwargs)  # type: ignore[arg-type]

    def expected_config(self) -> CLIPConfig:
        cfg = super().expected_config()
        return replace(cfg, vision=replace(cfg.vision, in_chans=len(MSCLIP_BANDS)))

    def default_source(self) -> tuple[str, str]:
        return "hf:ibm-esa-geospatial/Llama3-MS-CLIP-base", "Llama3_MS_CLIP_weights.pt"

    def extra_weights_info(self, checkpoint: Any) -> dict[str, Any]:
        t = checkpoint.get("temperature") if isinstance(checkpoint, dict) else None
        return {"temperature": float(t)} if isinstance(t, torch.Tensor) and t.numel() == 1 else {}

    def preprocessing(self) -> dict[str, Any]:
        return {
            "units": "S2 L2A reflectance x 10000 (BOA offset removed)",
            "normalise": "(x - mean) / std per band, no scaling to [0, 1]",
        }

    def describe(self) -> ModelCard:
        return self._card(
            summary="Llama3-MS-CLIP: ten-band Sentinel-2 CLIP (ViT-B/16); image and text embeddings.",
            license="llama3 (Meta Llama 3 Community License; MS-CLIP code Apache-2.0)",
            paper="Marimo et al. 2025, Beyond the Visible (arXiv:2503.15969)",
        )
