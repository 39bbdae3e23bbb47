"""Prithvi-EO-2.0 (tiny-TL, 100M-TL, 300M, 300M-TL, 600M, 600M-TL) on Sentinel-2 as HLS bands:
one composite or several frames in, a vector or a georeferenced patch grid out."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pyproj import Transformer

from ..errors import SpecError, WeightsError
from ..nn.prithvi import PRESETS, PrithviEncoder, load_prithvi
from ..providers.base import Observation
from ..specs import FrameSpec
from ..weights import extract_state_dict, file_sha256, load_checkpoint, resolve
from .base import ModelCard
from .fixed_vit import FixedViTEmbedder

#: S2 bands standing in for HLS B02, B03, B04, B05 (NIR narrow = S2 B8A), B06, B07
HLS_BANDS_FROM_S2 = ("B02", "B03", "B04", "B8A", "B11", "B12")
#: HLS standardisation of Prithvi-EO-2.0, reflectance × 10000 (HF config.json, terratorch
#: PRITHVI_V2_MEAN / PRITHVI_V2_STD)
HLS_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
HLS_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)
#: variant → (HF repository, checkpoint file)
SOURCES = {
    "tiny-tl": ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt"),
    "100m-tl": ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    "300m": ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "300m-tl": ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "600m": ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "600m-tl": ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
}
VARIANTS = tuple(SOURCES)
#: frames fetched in temporal mode (the 100M–600M models were pretrained on 4)
DEFAULT_FRAMES = 4


class PrithviEmbedder(FixedViTEmbedder):
    """Prithvi-EO-2.0 (Szwarcman et al. 2024, "Prithvi-EO-2.0: A Versatile Multi-Temporal
    Foundation Model for Earth Observation Applications", arXiv:2412.02732; Apache-2.0): a ViT
    MAE pretrained on HLS (Harmonized Landsat Sentinel-2) time series, for land-cover, flood,
    burn-scar and crop mapping features (:class:`eoembed.nn.prithvi.PrithviEncoder`).

    Input: Sentinel-2 L2A B02, B03, B04, B8A, B11, B12 (the HLS bands Blue, Green, Red,
    NIR-narrow, SWIR1, SWIR2; B8A, not B08, is HLS's NIR band) as reflectance × 10000,
    standardised ``(x − mean) / std`` with the published HLS constants, at 30 m (HLS's
    resolution) by default, resized to 224 × 224 (or tiled). ``temporal=False`` (default): one
    composite, T = 1; ``temporal=True``: ``frames`` equal bins over the window (default 4, as
    in pretraining), 3D patches over T frames. TL variants also take each frame's (year, day of
    year) and the place's centre (latitude, longitude), as upstream; ``coords=False`` omits them.
    Invalid pixels take the band mean (0 after standardisation).

    Outputs: pooled = mean (or max) of the patch tokens over frames and patches (class token
    excluded); grid = patch tokens averaged over frames, 14 × 14 at 224 px (16 × 16 for 600M).

    Args:
        variant: ``"tiny-tl"`` (default), ``"100m-tl"``, ``"300m"``, ``"300m-tl"``, ``"600m"``
            or ``"600m-tl"``.
        temporal: several frames instead of one composite.
        frames: frame count in temporal mode.
        coords: feed the TL variants their time and location inputs.
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family: ClassVar[str] = "prithvi"
    bands = HLS_BANDS_FROM_S2
    image_size = 224
    resize_mode = "bilinear"

    def __init__(self, model_id: str = "prithvi-eo-2.0-tiny-tl", *, variant: str = "tiny-tl",
                 temporal: bool = False, frames: int = DEFAULT_FRAMES, coords: bool = True,
                 **kwargs: Any) -> None:
        key = str(variant).strip().lower()
        if key not in PRESETS:
            raise SpecError(f"Prithvi variant={variant!r} must be one of {', '.join(VARIANTS)}")
        if not isinstance(temporal, bool):
            raise SpecError(f"Prithvi temporal={temporal!r} must be True (frames) or False")
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 12:
            raise SpecError(f"Prithvi frames={frames!r} must be a whole number from 1 to 12")
        if not isinstance(coords, bool):
            raise SpecError(f"Prithvi coords={coords!r} must be True or False")
        super().__init__(model_id, **kwargs)
        self.variant = key
        self.config = PRESETS[key]
        self.temporal = temporal
        self.frames = frames
        self.coords = coords and self.config.coords

    @property
    def temporal_input(self) -> bool:  # type: ignore[override]
        return self.temporal

    def default_source(self) -> tuple[str, str]:
        return SOURCES[self.variant]

    def fill(self) -> torch.Tensor:
        return torch.tensor(HLS_MEAN, dtype=torch.float32)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(HLS_MEAN, dtype=x.dtype).view(1, 1, -1, 1, 1)
        std = torch.tensor(HLS_STD, dtype=x.dtype).view(1, 1, -1, 1, 1)
        return (x - mean) / std

    def describe(self) -> ModelCard:
        cfg = self.config
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"Prithvi-EO-2.0 {self.variant} on S2 as HLS bands: image vector or patch grid, "
                    f"{f'{self.frames} frames' if self.temporal else 'one composite'}.",
            bands=self.bands,
            scale_m=30.0,
            image_size=self.image_size,
            temporal="series" if self.temporal else "single",
            outputs=("pooled", "grid"),
            dim=cfg.width,
            weights=self.weights_label(),
            license="Apache-2.0",
            paper="Szwarcman et al. 2024, Prithvi-EO-2.0 (arXiv:2412.02732)",
            grid_cell_px=cfg.patch_size,
            frames=FrameSpec.bins(self.frames) if self.temporal else None,
            preprocessing={
                "units": "S2 L2A reflectance x 10000 (HLS surface reflectance scale)",
                "hls_bands": "B02 Blue, B03 Green, B04 Red, B05 NIR-narrow = S2 B8A, "
                             "B06 SWIR1 = S2 B11, B07 SWIR2 = S2 B12",
                "normalise": "(x - mean) / std per band",
                "mean": list(HLS_MEAN),
                "std": list(HLS_STD),
                "resize": f"whole place to {self.image_size}x{self.image_size}, bilinear, "
                          "antialiased when shrinking (or InputPrep.tile())",
                "invalid_pixels": "set to the band mean (0 after standardisation)",
                "side_inputs": ("per frame (year, day of year); place centre (lat, lon) in "
                                "degrees" if self.coords else "none"),
            },
            config={
                "variant": self.variant, "temporal": self.temporal,
                "frames": self.frames if self.temporal else 1, "coords": self.coords,
                "patch_size": cfg.patch_size, "depth": cfg.depth,
                "pooled": "mean of patch tokens over frames (class token excluded)",
                "grid": "patch tokens after the final norm, averaged over frames",
            },
        )

    # -- weights --------------------------------------------------------------------------
    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        state = extract_state_dict(load_checkpoint(path))
        model = PrithviEncoder(self.config)
        counts = load_prithvi(model, state, what=f"Prithvi-EO-2.0 {self.variant} ({path.name})")
        if counts["loaded"] == 0:
            raise WeightsError(f"{path.name} holds no Prithvi encoder weights")
        self._model = model.eval().to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             **counts}

    # -- inference ------------------------------------------------------------------------
    def frame_dates(self, obs: Observation) -> list:
        """The dates of the frames `obs` feeds the network."""
        return list(obs.dates if self.temporal else obs.dates[:1])

    def encode(self, x: torch.Tensor, observations: list[Observation]) -> torch.Tensor:
        b = x.shape[0]
        tc = lc = None
        if self.coords:
            tc = torch.tensor([[[d.year, d.timetuple().tm_yday] for d in self.frame_dates(o)]
                               for o in observations], dtype=torch.float32, device=x.device)
            lc = torch.tensor([centre_latlon(o) for o in observations], dtype=torch.float32,
                              device=x.device)
        out, (t, h, w) = self.network(x.permute(0, 2, 1, 3, 4), tc, lc)
        return out[:, 1:].reshape(b, t, h, w, -1).permute(0, 1, 4, 2, 3)  # B T D h w

    def meta_for(self, obs: Observation) -> dict[str, Any]:
        dates = self.frame_dates(obs)
        meta: dict[str, Any] = {"frames": {"count": len(dates),
                                           "dates": [d.isoformat() for d in dates]}}
        if self.coords:
            lat, lon = centre_latlon(obs)
            meta["side_inputs"] = {"year_doy": [[d.year, d.timetuple().tm_yday] for d in dates],
                                   "lat_lon": [round(lat, 6), round(lon, 6)]}
        return meta


def centre_latlon(obs: Observation) -> tuple[float, float]:
    """(latitude, longitude) in degrees of the centre of `obs`'s grid."""
    left, bottom, right, top = obs.grid.bounds
    to_wgs84 = Transformer.from_crs(obs.grid.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_wgs84.transform((left + right) / 2, (bottom + top) / 2)
    return float(lat), float(lon)


__all__ = ["DEFAULT_FRAMES", "HLS_BANDS_FROM_S2", "HLS_MEAN", "HLS_STD", "SOURCES", "VARIANTS",
           "PrithviEmbedder", "centre_latlon"]
