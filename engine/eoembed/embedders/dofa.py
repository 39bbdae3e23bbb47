"""DOFA base/large: any Sentinel-2 band subset or Sentinel-1 VV/VH, through band wavelengths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch

from ..errors import SpecError, WeightsError
from ..nn.dofa import DOFA, DOFA_CONFIGS, IMAGE, PATCH, load_dofa
from ..providers.base import Observation
from ..sensors import S2_BANDS as S2_CATALOGUE
from ..weights import extract_state_dict, file_sha256, load_checkpoint, resolve
from .base import ModelCard
from .image_model import ImageModelEmbedder, tokens_to_grid

#: the nine S2 channels of DOFA's Sentinel-2 pretraining data (SatlasPretrain), in that order
S2_BANDS = ("B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12")
#: their statistics on the 0–255 scale (zhu-xlab/DOFA pretraining/datasets/ofall_dataset.py)
S2_MEAN = (114.1099739, 114.81779093, 126.63977424, 84.33539309, 97.84789168, 103.94461911, 101.435633,
           72.32804172, 56.66528851)
S2_STD = (77.84352553, 69.96844919, 67.42465279, 64.57022983, 61.72545487, 61.34187099, 60.29744676,
          47.88519516, 42.55886798)
#: 0–255 encoding of SatlasPretrain: true-colour bands from ESA's TCI (reflectance × 10000 over
#: 0–2000 onto 0–255), the others 16-bit ÷ 32 (allenai/satlas Normalization.md)
TCI_BANDS = ("B04", "B03", "B02")
TCI_DIVISOR = 2000.0 / 255.0
OTHER_DIVISOR = 32.0
S1_BANDS = ("VV", "VH")
#: DOFA v1's placeholder wavelength for SAR (µm)
S1_WAVELENGTH_UM = 3.75
#: SSL4EO-S12 S1 statistics in dB (VV, VH)
S1_MEAN = (-12.59, -20.26)
S1_STD = (5.26, 5.91)


def _s2_stats(band: str) -> tuple[float, float, float]:
    """(divisor to 0–255, mean, std) of an S2 band."""
    i = S2_BANDS.index(band)
    return (TCI_DIVISOR if band in TCI_BANDS else OTHER_DIVISOR), S2_MEAN[i], S2_STD[i]


class DOFAEmbedder(ImageModelEmbedder):
    """DOFA (Xiong et al. 2024, "Neural Plasticity-Inspired Multimodal Foundation Model for Earth
    Observation", arXiv:2403.15356): one ViT for any sensor; its patch embedding is generated
    from each band's central wavelength.

    Input (224 px): ``bands`` is any subset, in any order, of the nine S2 bands DOFA was
    pretrained on (B04, B03, B02, B05, B06, B07, B08, B11, B12; reflectance × 10000), or
    ("VV", "VH") Sentinel-1 backscatter in dB. S2 values are put on the 0–255 scale of the
    SatlasPretrain images DOFA saw (B04/B03/B02 as ESA's TCI, reflectance 0–0.2 → 0–255; the
    others ÷ 32), clipped, then standardised with DOFA's published statistics. S1: DOFA was
    pretrained on SatlasPretrain's 8-bit GRD values, which dB backscatter cannot be mapped onto
    exactly; eoembed standardises dB with the SSL4EO-S12 statistics instead (documented
    departure). Wavelengths: the S2 band centres of :mod:`eoembed.sensors`; 3.75 µm for S1.

    Outputs (768 base, 1024 large): pooled = ``fc_norm(mean of patch tokens)`` (upstream's
    ``global_pool``); grid = 14×14 patch tokens before any norm, one cell per 16 px.

    Weights: ``hf:earthflow/DOFA`` ``DOFA_ViT_{base,large}_e100.pth`` (CC-BY-4.0).
    """

    family: ClassVar[str] = "dofa"

    def __init__(
        self,
        model_id: str = "dofa-base",
        *,
        size: Literal["base", "large"] = "base",
        bands: Sequence[str] | None = None,
        fit: Literal["crop", "squash"] = "crop",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, fit=fit, weights_file=weights_file, device=device, weights=weights,
                         batch_size=batch_size)
        if size not in DOFA_CONFIGS:
            raise SpecError(f"DOFA size={size!r} must be 'base' or 'large'")
        chosen = tuple(str(b).strip().upper() for b in (bands if bands is not None else S2_BANDS))
        if not chosen or len(set(chosen)) != len(chosen):
            raise SpecError(f"DOFA bands={bands!r} must name at least one band, each once")
        if set(chosen) <= set(S1_BANDS):
            self.sensor = "s1"
        elif set(chosen) <= set(S2_BANDS):
            self.sensor = "s2"
        else:
            raise SpecError(
                f"DOFA bands={list(chosen)} must be Sentinel-2 bands among {', '.join(S2_BANDS)} "
                f"or Sentinel-1 {', '.join(S1_BANDS)}, not a mix"
            )
        self.size = size
        self._bands = chosen

    @property
    def bands(self) -> tuple[str, ...]:
        return self._bands

    @property
    def image_size(self) -> int:
        return IMAGE

    def wavelengths_um(self) -> tuple[float, ...]:
        """Central wavelength of each input band in µm."""
        if self.sensor == "s1":
            return tuple(S1_WAVELENGTH_UM for _ in self._bands)
        return tuple(float(S2_CATALOGUE[b].wavelength_nm or 0.0) / 1000.0 for b in self._bands)

    def _scaling(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per band: divisor onto the statistics' scale, mean and std."""
        if self.sensor == "s1":
            idx = [S1_BANDS.index(b) for b in self._bands]
            div, mean, std = [1.0] * len(idx), [S1_MEAN[i] for i in idx], [S1_STD[i] for i in idx]
        else:
            div, mean, std = zip(*(_s2_stats(b) for b in self._bands))
        return (torch.tensor(div, dtype=torch.float32), torch.tensor(mean, dtype=torch.float32),
                torch.tensor(std, dtype=torch.float32))

    def default_source(self) -> tuple[str, str]:
        return "hf:earthflow/DOFA", f"DOFA_ViT_{self.size}_e100.pth"

    def fill_values(self) -> torch.Tensor:
        div, mean, _ = self._scaling()
        return mean * div

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        div, mean, std = (t.to(x.device).view(1, -1, 1, 1) for t in self._scaling())
        if self.sensor == "s2":
            x = (x / div).clamp(0.0, 255.0)
        return (x - mean) / std

    def describe(self) -> ModelCard:
        div, mean, std = self._scaling()
        s2 = self.sensor == "s2"
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"DOFA {self.size}: wavelength-conditioned ViT-{self.size[0].upper()}/16 for any band set.",
            bands=self._bands,
            scale_m=10.0,
            image_size=IMAGE,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=DOFA_CONFIGS[self.size].width,
            weights=self.weights_label(),
            license="CC-BY-4.0",
            paper="Xiong et al. 2024, Neural Plasticity-Inspired Multimodal Foundation Model for Earth Observation "
                  "(arXiv:2403.15356)",
            grid_cell_px=PATCH,
            preprocessing={
                **self.fit_record(),
                "units": "S2 reflectance x 10000" if s2 else "S1 backscatter in dB",
                "to_0_255": ("B04/B03/B02 / (2000/255) (ESA TCI), other bands / 32 (SatlasPretrain), "
                             "clipped to [0, 255]") if s2 else "none",
                "divisor": [round(float(v), 6) for v in div],
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
                "standardise": "(x - mean) / std per band",
                "statistics": "DOFA pretraining (SatlasPretrain S2, 0-255)" if s2
                else "SSL4EO-S12 S1 dB (departure: DOFA saw SatlasPretrain 8-bit GRD)",
                "wavelengths_um": list(self.wavelengths_um()),
                "invalid_pixels": "set to the band mean",
            },
            config={"size": self.size, "bands": list(self._bands), "fit": self.fit,
                    "pooled": "fc_norm(mean of patch tokens)", "grid": "patch tokens before any norm"},
        )

    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        state = extract_state_dict(load_checkpoint(path))
        model, counts = load_dofa(state)
        want = DOFA_CONFIGS[self.size]
        if model.config.width != want.width:
            raise WeightsError(
                f"{path.name} holds a DOFA of width {model.config.width}, not the {self.size} model ({want.width}); "
                f"give DOFA_ViT_{self.size}_e100.pth or pick the model id that matches"
            )
        self._model = model.to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             "depth": model.config.depth, **counts}

    def forward(self, x: torch.Tensor, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        model: DOFA = self.network  # type: ignore[assignment]
        pooled, tokens, (h, w) = model(x, torch.tensor(self.wavelengths_um(), device=x.device))
        return pooled, tokens_to_grid(tokens, h, w)
