"""CROMA base/large on Sentinel-2 (12 bands), Sentinel-1 (VV, VH) or both (joint encoder)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..errors import SpecError, WeightsError
from ..nn.croma import CROMA, CROMA_CONFIGS, PATCH, load_croma
from ..providers.base import Observation
from ..weights import file_sha256, load_checkpoint, resolve
from .base import ModelCard
from .image_model import ImageModelEmbedder, tokens_to_grid

#: SSL4EO-S12 L1C order without the cirrus band B10, as CROMA's optical encoder reads it
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S1_BANDS = ("VV", "VH")
#: SSL4EO-S12 statistics (pretraining data of CROMA): S2 L1C without B10, and S1 in dB
S2_MEAN = (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 2195.2, 1537.4)
S2_STD = (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 1340.0, 1142.9)
S1_MEAN = (-12.59, -20.26)
S1_STD = (5.26, 5.91)
MODALITIES = ("optical", "sar", "both")
_OUTPUT = {"optical": "optical", "sar": "SAR", "both": "joint"}
_PARTS = {"optical": ("s2_encoder", "s2_GAP_FFN"), "sar": ("s1_encoder", "s1_GAP_FFN"),
          "both": ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")}


class CROMAEmbedder(ImageModelEmbedder):
    """CROMA (Fuller, Millard & Green 2023, "CROMA: Remote Sensing Representations with
    Contrastive Radar-Optical Masked Autoencoders", NeurIPS; arXiv:2311.00566).

    Input: ``modality="optical"`` reads S2 B01–B12 without B10 (reflectance × 10000);
    ``"sar"`` reads S1 VV, VH backscatter in dB; ``"both"`` reads all 14 and runs the joint
    radar-optical encoder. Normalisation: upstream maps each channel from mean ± 2σ onto
    [0, 1] with mean and σ computed **over the whole batch** (README), which makes a place's
    embedding depend on its batch-mates; here mean and σ are the fixed SSL4EO-S12 statistics
    (CROMA's pretraining data; L1C for S2), so results never depend on the batch. The image is
    ``image_size`` px (default 120, as pretrained; any multiple of 8 works thanks to 2D-ALiBi).

    Outputs (D = 768 base, 1024 large): pooled = upstream's ``optical_GAP`` / ``SAR_GAP`` (mean
    of the patch encodings through the pooled head) or ``joint_GAP`` (mean of the joint
    encodings); grid = the matching patch encodings, one cell per 8 input pixels.

    Weights: ``hf:antofuller/CROMA`` ``CROMA_base.pt`` / ``CROMA_large.pt`` (MIT).
    """

    family: ClassVar[str] = "croma"

    def __init__(
        self,
        model_id: str = "croma-base",
        *,
        size: Literal["base", "large"] = "base",
        modality: Literal["optical", "sar", "both"] = "optical",
        image_size: int = 120,
        fit: Literal["crop", "squash"] = "crop",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, fit=fit, weights_file=weights_file, device=device, weights=weights,
                         batch_size=batch_size)
        if size not in CROMA_CONFIGS:
            raise SpecError(f"CROMA size={size!r} must be 'base' or 'large'")
        if modality not in MODALITIES:
            raise SpecError(f"CROMA modality={modality!r} must be 'optical' (S2), 'sar' (S1) or 'both'")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 1024 \
                or image_size % PATCH:
            raise SpecError(f"CROMA image_size={image_size!r} must be a multiple of {PATCH} from 8 to 1024 px")
        self.size = size
        self.modality = modality
        self._image_size = image_size

    @property
    def bands(self) -> tuple[str, ...]:
        return {"optical": S2_BANDS, "sar": S1_BANDS, "both": S1_BANDS + S2_BANDS}[self.modality]

    @property
    def image_size(self) -> int:
        return self._image_size

    def _stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean = {"optical": S2_MEAN, "sar": S1_MEAN, "both": S1_MEAN + S2_MEAN}[self.modality]
        std = {"optical": S2_STD, "sar": S1_STD, "both": S1_STD + S2_STD}[self.modality]
        return mean, std

    def default_source(self) -> tuple[str, str]:
        return "hf:antofuller/CROMA", f"CROMA_{self.size}.pt"

    def fill_values(self) -> torch.Tensor:
        return torch.tensor(self._stats()[0], dtype=torch.float32)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Each channel from fixed mean ± 2σ onto [0, 1], clipped."""
        mean, std = (torch.tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) for v in self._stats())
        return ((x - (mean - 2 * std)) / (4 * std)).clamp(0.0, 1.0)

    def describe(self) -> ModelCard:
        mean, std = self._stats()
        cfg = CROMA_CONFIGS[self.size]
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"CROMA {self.size} ({self.modality}): radar-optical contrastive MAE with 2D-ALiBi, patch 8.",
            bands=self.bands,
            scale_m=10.0,
            image_size=self.image_size,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=cfg.dim,
            weights=self.weights_label(),
            license="MIT",
            paper="Fuller et al. 2023, CROMA, NeurIPS (arXiv:2311.00566)",
            grid_cell_px=PATCH,
            preprocessing={
                **self.fit_record(),
                "units": {"optical": "S2 reflectance x 10000", "sar": "S1 backscatter in dB",
                          "both": "S1 backscatter in dB, S2 reflectance x 10000"}[self.modality],
                "normalization": "(x - (mean - 2 std)) / (4 std), clipped to [0, 1] per band",
                "statistics": "fixed SSL4EO-S12 (S2 L1C, S1 dB) instead of upstream's per-batch statistics",
                "mean": list(mean),
                "std": list(std),
                "invalid_pixels": "set to the band mean",
            },
            config={"size": self.size, "modality": self.modality, "image_size": self.image_size, "fit": self.fit,
                    "pooled": f"{_OUTPUT[self.modality]}_GAP", "grid": f"{_OUTPUT[self.modality]}_encodings"},
        )

    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        model = load_croma(load_checkpoint(path))
        want = CROMA_CONFIGS[self.size]
        got = model.config
        if got.dim != want.dim or (got.s1_channels, got.s2_channels) != (2, 12):
            raise WeightsError(
                f"{path.name} holds a CROMA of width {got.dim}, not the {self.size} model ({want.dim}); "
                f"give CROMA_{self.size}.pt or pick the model id that matches"
            )
        model.keep_only(set(_PARTS[self.modality]))  # every tensor was checked; free the unused side
        self._model = model.to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             "depth": got.depth, "parts_kept": list(_PARTS[self.modality])}

    def forward(self, x: torch.Tensor, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        model: CROMA = self.network  # type: ignore[assignment]
        sar = x[:, :2] if self.modality in ("sar", "both") else None
        optical = x[:, -12:] if self.modality in ("optical", "both") else None
        out = model(sar=sar, optical=optical)
        key = _OUTPUT[self.modality]
        side = self.image_size // PATCH
        return out[f"{key}_GAP"], tokens_to_grid(out[f"{key}_encodings"], side, side)
