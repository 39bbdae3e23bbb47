"""SatMAE++ (fMoW RGB ViT-L/16, and the fMoW-Sentinel 10-band group-channel ViT-L/8) on
Sentinel-2: a vector or a georeferenced patch grid."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import SpecError
from ..nn.mae import GroupChannelViT, MAEConfig
from ..providers.base import Observation
from .satmae import SatMAEEmbedder, tokens_to_maps

#: fMoW-Sentinel 13-band statistics (B1 … B8, B8A, B9, B10, B11, B12), reflectance × 10000
#: (satmae_pp ``util/datasets.py``: ``SentinelIndividualImageDataset``)
FMOW_S2_MEAN_13 = (1370.19151926, 1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144,
                   1645.40315151, 1846.87040806, 1762.59530783, 1972.62420416, 582.72633433,
                   14.77112979, 1732.16362238, 1247.91870117)
FMOW_S2_STD_13 = (633.15169573, 650.2842772, 712.12507725, 965.23119807, 948.9819932,
                  1108.06650639, 1258.36394548, 1233.1492281, 1364.38688993, 472.37967789,
                  14.3114637, 1310.36996126, 1087.6020813)
#: the 10 bands left after ``--dropped_bands 0 9 10`` (B1, B9, B10), in model order
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
_KEPT = (1, 2, 3, 4, 5, 6, 7, 8, 11, 12)
S2_MEAN = tuple(FMOW_S2_MEAN_13[i] for i in _KEPT)
S2_STD = tuple(FMOW_S2_STD_13[i] for i in _KEPT)
#: ``--grouped_bands 0 1 2 6 / 3 4 5 7 / 8 9``: (B2, B3, B4, B8), (B5, B6, B7, B8A), (B11, B12)
S2_GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
SOURCES = {
    "rgb": ("hf:mubashir04/checkpoint_ViT-L_pretrain_fmow_rgb",
            "checkpoint_ViT-L_pretrain_fmow_rgb.pth"),
    "s2": ("hf:mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel",
           "checkpoint_ViT-L_pretrain_fmow_sentinel.pth"),
}
VARIANTS = tuple(SOURCES)


class SatMAEPPEmbedder(SatMAEEmbedder):
    """SatMAE++ (Noman et al. 2024, "Rethinking Transformers Pre-training for Multi-Spectral
    Satellite Imagery", CVPR; Apache-2.0): SatMAE's encoder pretrained with multi-scale
    reconstruction, on fMoW RGB (``variant="rgb"``) or fMoW-Sentinel (``variant="s2"``).

    RGB input: as :class:`eoembed.embedders.satmae.SatMAEEmbedder` (B04, B03, B02 / ``rgb_max``,
    fMoW-RGB mean/std, 224 px). S2 input: B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12
    (reflectance × 10000; fMoW-Sentinel is L1C top-of-atmosphere, these are L2A), upstream's
    ``SentinelNormalize``: ``(x − (mean − 2·std)) / (4·std)`` clipped to [0, 1] and quantised
    to 8 bits (``uint8`` then ``ToTensor``), with the 13-band fMoW-Sentinel statistics of the
    kept bands, then resized bicubically to 96 × 96 (or tiled), in upstream's order.
    The S2 model embeds three band groups — (B2, B3, B4, B8), (B5, B6, B7, B8A), (B11, B12) —
    with their own patch projections; every 8 × 8 patch gives one token per group.

    Outputs: pooled = mean (or max) of all patch tokens after the final norm (every group;
    class token excluded); grid = per patch the mean over its group tokens (S2: 12 × 12 at
    96 px, a cell per 8 pixels) or the patch token (RGB: 14 × 14). 1024-d.

    Args:
        variant: ``"rgb"`` (default) or ``"s2"``.
        rgb_max: reflectance × 10000 that becomes full brightness (RGB only).
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family: ClassVar[str] = "satmaepp"
    noncommercial: ClassVar[bool] = False
    license: ClassVar[str] = "Apache-2.0"
    paper: ClassVar[str] = ("Noman et al. 2024, Rethinking Transformers Pre-training for "
                            "Multi-Spectral Satellite Imagery (SatMAE++), CVPR (arXiv:2403.05419)")

    def __init__(self, model_id: str = "satmaepp-rgb", *, variant: str = "rgb",
                 **kwargs: Any) -> None:
        key = str(variant).strip().lower()
        if key not in SOURCES:
            raise SpecError(f"SatMAE++ variant={variant!r} must be one of {', '.join(VARIANTS)}")
        self.variant = key
        super().__init__(model_id, **kwargs)

    # per-variant contract (the class attributes of SatMAEEmbedder, as properties)
    @property
    def bands(self) -> tuple[str, ...]:  # type: ignore[override]
        return S2_BANDS if self.variant == "s2" else ("B04", "B03", "B02")

    @property
    def image_size(self) -> int:  # type: ignore[override]
        return 96 if self.variant == "s2" else 224

    @property
    def title(self) -> str:  # type: ignore[override]
        return ("SatMAE++ group-channel ViT-L/8 (fMoW-Sentinel, 10 bands)" if self.variant == "s2"
                else "SatMAE++ ViT-L/16 (fMoW RGB)")

    @property
    def input_words(self) -> str:  # type: ignore[override]
        return "ten S2 bands" if self.variant == "s2" else "S2 true colour"

    def default_source(self) -> tuple[str, str]:
        return SOURCES[self.variant]

    def encoder_config(self) -> MAEConfig:
        if self.variant == "s2":
            return MAEConfig(img_size=96, patch_size=8, in_chans=10, groups=S2_GROUPS)
        return MAEConfig()

    def build(self) -> torch.nn.Module:
        cfg = self.encoder_config()
        return GroupChannelViT(cfg) if self.variant == "s2" else super().build()

    def fill(self) -> torch.Tensor:
        if self.variant == "s2":
            return torch.tensor(S2_MEAN, dtype=torch.float32)
        return super().fill()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant != "s2":
            return super().normalise(x)
        mean = torch.tensor(S2_MEAN, dtype=torch.float64).view(1, 1, -1, 1, 1)
        std = torch.tensor(S2_STD, dtype=torch.float64).view(1, 1, -1, 1, 1)
        scaled = ((x.double() - (mean - 2 * std)) / (4 * std) * 255.0).clamp(0.0, 255.0)
        return (torch.floor(scaled) / 255.0).to(x.dtype)

    def preprocessing(self) -> dict[str, Any]:
        if self.variant != "s2":
            return super().preprocessing()
        return {
            "units": "S2 L2A reflectance x 10000 (pretraining: fMoW-Sentinel, L1C)",
            "resize": "after normalising: whole place to 96x96, bicubic, antialiased when "
                      "shrinking (or InputPrep.tile())",
            "normalise": "floor(clip((x - (mean - 2 std)) / (4 std) * 255, 0, 255)) / 255 "
                         "(SentinelNormalize, uint8, ToTensor)",
            "mean": list(S2_MEAN),
            "std": list(S2_STD),
            "groups": [[S2_BANDS[i] for i in g] for g in S2_GROUPS],
            "invalid_pixels": "set to the band mean",
        }

    def extra_config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"variant": self.variant}
        if self.variant == "s2":
            extra["grid"] = "per patch: mean of its band-group tokens after the final norm"
        return extra

    def encode(self, x: torch.Tensor, observations: list[Observation]) -> torch.Tensor:
        if self.variant != "s2":
            return super().encode(x, observations)
        out, (h, w) = self.network(x[:, 0])
        return tokens_to_maps(out, len(S2_GROUPS), h, w)


__all__ = ["FMOW_S2_MEAN_13", "FMOW_S2_STD_13", "S2_BANDS", "S2_GROUPS", "S2_MEAN", "S2_STD",
           "SOURCES", "VARIANTS", "SatMAEPPEmbedder"]
