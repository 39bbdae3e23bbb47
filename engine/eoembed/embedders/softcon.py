"""SoftCon ViT-S/14 and ViT-B/14 on 13-band Sentinel-2 L1C or Sentinel-1 VV/VH."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..errors import SpecError, WeightsError
from ..nn.softcon import IMAGE, PATCH, SOFTCON_CONFIGS, SoftConViT, load_softcon
from ..providers.base import Observation
from ..weights import extract_state_dict, file_sha256, load_checkpoint, resolve
from .base import ModelCard
from .image_model import ImageModelEmbedder, tokens_to_grid

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
#: SSL4EO-S12 statistics, SoftCon's pretraining data (S2 L1C, 13 bands; S1 in dB)
S2_MEAN = (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0, 2195.2, 1537.4)
S2_STD = (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5, 1340.0, 1142.9)
S1_MEAN = (-12.59, -20.26)
S1_STD = (5.26, 5.91)
NORMALIZATIONS = ("softcon", "zscore")
_ARCH_NAMES = {"vits14": "ViT-S/14", "vitb14": "ViT-B/14"}


class SoftConEmbedder(ImageModelEmbedder):
    """SoftCon (Wang et al. 2024, "Multi-Label Guided Soft Contrastive Learning for Efficient
    Earth Observation Pretraining", arXiv:2405.20462): DINOv2 ViTs continually pretrained on
    SSL4EO-S12 with land-cover-guided soft contrastive learning.

    Input (224 px): ``modality="s2"`` reads the 13 L1C bands B01–B12 with B10 (reflectance ×
    10000); ``"s1"`` reads VV, VH in dB. Normalisation ``"softcon"`` (default, the README's):
    each band from mean ± 2σ (SSL4EO-S12 statistics) onto 0–255, clipped, truncated to 8 bits,
    then read as [0, 1] (÷ 255); ``"zscore"``: ``(x − mean) / σ`` as torchgeo does.

    Outputs (384 ViT-S, 768 ViT-B): pooled = the normed class token; grid = the normed 16×16
    patch tokens, one cell per 14 px.

    Weights: ``hf:wangyi111/softcon`` ``B13_vit{s,b}14_softcon.pth`` / ``B2_…`` (Apache-2.0).
    """

    family: ClassVar[str] = "softcon"

    def __init__(
        self,
        model_id: str = "softcon-vits14",
        *,
        arch: Literal["vits14", "vitb14"] = "vits14",
        modality: Literal["s2", "s1"] = "s2",
        normalization: Literal["softcon", "zscore"] = "softcon",
        fit: Literal["crop", "squash"] = "crop",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, fit=fit, weights_file=weights_file, device=device, weights=weights,
                         batch_size=batch_size)
        if arch not in SOFTCON_CONFIGS:
            raise SpecError(f"SoftCon arch={arch!r} must be 'vits14' or 'vitb14'")
        if modality not in ("s2", "s1"):
            raise SpecError(f"SoftCon modality={modality!r} must be 's2' (13 bands) or 's1' (VV, VH)")
        if normalization not in NORMALIZATIONS:
            raise SpecError(f"SoftCon normalization={normalization!r} must be 'softcon' (README) or 'zscore'")
        self.arch, self.modality, self.normalization = arch, modality, normalization

    @property
    def bands(self) -> tuple[str, ...]:
        return S2_BANDS if self.modality == "s2" else S1_BANDS

    @property
    def image_size(self) -> int:
        return IMAGE

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = (S2_MEAN, S2_STD) if self.modality == "s2" else (S1_MEAN, S1_STD)
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def default_source(self) -> tuple[str, str]:
        return "hf:wangyi111/softcon", f"B{len(self.bands)}_{self.arch}_softcon.pth"

    def fill_values(self) -> torch.Tensor:
        return self._stats()[0]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = (t.to(x.device).view(1, -1, 1, 1) for t in self._stats())
        if self.normalization == "zscore":
            return (x - mean) / std
        return torch.floor(((x - (mean - 2 * std)) / (4 * std) * 255.0).clamp(0.0, 255.0)) / 255.0

    def describe(self) -> ModelCard:
        mean, std = self._stats()
        width = SOFTCON_CONFIGS[self.arch][0]
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"SoftCon {_ARCH_NAMES[self.arch]} ({self.modality.upper()}): "
                    "DINOv2 continually pretrained on SSL4EO-S12.",
            bands=self.bands,
            scale_m=10.0,
            image_size=IMAGE,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=width,
            weights=self.weights_label(),
            license="Apache-2.0",
            paper="Wang et al. 2024, Multi-Label Guided Soft Contrastive Learning (arXiv:2405.20462)",
            grid_cell_px=PATCH,
            preprocessing={
                **self.fit_record(),
                "units": "S2 L1C reflectance x 10000" if self.modality == "s2" else "S1 backscatter in dB",
                "normalization": self.normalization,
                "formula": ("floor(clip((x - (mean - 2 std)) / (4 std) * 255, 0, 255)) / 255"
                            if self.normalization == "softcon" else "(x - mean) / std"),
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
                "statistics": "SSL4EO-S12",
                "invalid_pixels": "set to the band mean",
            },
            config={"arch": self.arch, "modality": self.modality, "normalization": self.normalization, "fit": self.fit,
                    "pooled": "normed class token", "grid": "normed patch tokens"},
        )

    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        model, counts = load_softcon(extract_state_dict(load_checkpoint(path)))
        cfg = model.config
        if cfg.width != SOFTCON_CONFIGS[self.arch][0] or cfg.in_chans != len(self.bands):
            raise WeightsError(
                f"{path.name} holds a SoftCon ViT of width {cfg.width} over {cfg.in_chans} bands, not {self.arch} "
                f"over {len(self.bands)}; give {self.default_source()[1]} or pick the model id and modality that match"
            )
        self._model = model.to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             "depth": cfg.depth, **counts}

    def forward(self, x: torch.Tensor, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        model: SoftConViT = self.network  # type: ignore[assignment]
        cls, tokens, (h, w) = model(x)
        return cls, tokens_to_grid(tokens, h, w)
