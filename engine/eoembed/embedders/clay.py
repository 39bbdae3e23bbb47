"""Clay v1.5 (large): Sentinel-2 L2A, Landsat C2 L2 or Sentinel-1 RTC, with wavelength, GSD,
date and location conditioning."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal

import torch
from pyproj import CRS, Transformer

from ..errors import SpecError, WeightsError
from ..nn.clay import CLAY_CONFIGS, PATCH, ClayEncoder, encoder_state, load_clay
from ..providers.base import Observation
from ..weights import extract_state_dict, file_sha256, load_checkpoint, resolve
from .base import ModelCard
from .image_model import ImageModelEmbedder, tokens_to_grid


@dataclass(frozen=True)
class ClaySensor:
    """One entry of Clay's ``configs/metadata.yaml``: bands (eoembed names), constants, GSD."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    wavelengths_um: tuple[float, ...]
    gsd: float
    units: str


#: Clay-foundation/model configs/metadata.yaml (band order as there)
SENSORS = {
    "sentinel-2-l2a": ClaySensor(
        ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
        (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0),
        (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0),
        (0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19), 10.0,
        "S2 L2A reflectance x 10000"),
    "landsat-c2l2-sr": ClaySensor(
        ("SR_B4", "SR_B3", "SR_B2", "SR_B5", "SR_B6", "SR_B7"),
        (13705.0, 13310.0, 12474.0, 17801.0, 14615.0, 12701.0),
        (9578.0, 9408.0, 10144.0, 8277.0, 5300.0, 4522.0),
        (0.65, 0.56, 0.48, 0.86, 1.6, 2.2), 30.0,
        "Landsat Collection 2 Level-2 surface reflectance digital numbers (SR_B*)"),
    "sentinel-1-rtc": ClaySensor(
        ("VV", "VH"), (-12.113, -18.673), (8.314, 8.017), (3.5, 4.0), 10.0,
        "S1 RTC backscatter in dB"),
}
IMAGE = 256
#: local solar time of the sun-synchronous morning overpass of Sentinel-2 and Landsat (hours)
OVERPASS_LOCAL_HOUR = 10.5


def time_code(week: int, hour: int) -> list[float]:
    """Clay's time input: ``[sin, cos](week·2π/52)`` then ``[sin, cos](hour·2π/24)``."""
    w, h = week * 2 * math.pi / 52, hour * 2 * math.pi / 24
    return [math.sin(w), math.cos(w), math.sin(h), math.cos(h)]


def latlon_code(lat: float, lon: float) -> list[float]:
    """Clay's location input: ``[sin, cos](lat)`` then ``[sin, cos](lon)`` (radians)."""
    a, b = math.radians(lat), math.radians(lon)
    return [math.sin(a), math.cos(a), math.sin(b), math.cos(b)]


@lru_cache(maxsize=32)
def _to_wgs84(crs: str) -> Transformer:
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


@lru_cache(maxsize=32)
def _projected(crs: str) -> bool:
    return bool(CRS.from_user_input(crs).is_projected)


class ClayEmbedder(ImageModelEmbedder):
    """Clay v1.5 (Clay Foundation 2024, github.com/Clay-foundation/model): a sensor-agnostic MAE
    whose patch embedding is generated from band wavelengths (DOFA style), with ground sampling
    distance, date and location added to every patch token.

    Input (256 px, patch 8): ``sensor`` picks a band set of Clay's metadata: "sentinel-2-l2a"
    (B02–B12 without B01/B09/B10), "landsat-c2l2-sr" (SR_B4, SR_B3, SR_B2, SR_B5, SR_B6, SR_B7)
    or "sentinel-1-rtc" (VV, VH in dB); ``(x − mean) / std`` with Clay's constants. Side inputs,
    as Clay's embedding tutorial builds them: wavelengths in µm; GSD = metres per input pixel
    after the resize (the place's pixel size × crop side / 256 in a projected CRS, else the
    sensor's GSD × crop side / 256); week of the first frame's date; hour = the UTC hour of a
    10:30 local-solar-time overpass at the place's longitude (composites have no time of day);
    latitude/longitude of the place's centre.

    Outputs (1024): pooled = the class token (as Clay's ``EmbeddingEncoder``); grid = the 32×32
    patch tokens after the final norm, one cell per 8 input pixels.

    Weights: ``hf:made-with-clay/Clay`` ``v1.5/clay-v1.5.ckpt`` (code Apache-2.0; the Hub card
    says OpenRAIL), encoder only.
    """

    family: ClassVar[str] = "clay"
    default_batch_size: ClassVar[int] = 4

    def __init__(
        self,
        model_id: str = "clay-v1.5",
        *,
        sensor: Literal["sentinel-2-l2a", "landsat-c2l2-sr", "sentinel-1-rtc"] = "sentinel-2-l2a",
        fit: Literal["crop", "squash"] = "crop",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, fit=fit, weights_file=weights_file, device=device, weights=weights,
                         batch_size=batch_size)
        if sensor not in SENSORS:
            raise SpecError(f"Clay sensor={sensor!r} must be one of {', '.join(SENSORS)}")
        self.sensor = sensor
        self.spec = SENSORS[sensor]

    @property
    def bands(self) -> tuple[str, ...]:
        return self.spec.bands

    @property
    def image_size(self) -> int:
        return IMAGE

    def default_source(self) -> tuple[str, str]:
        return "hf:made-with-clay/Clay", "v1.5/clay-v1.5.ckpt"

    def fill_values(self) -> torch.Tensor:
        return torch.tensor(self.spec.mean, dtype=torch.float32)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.spec.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def side_inputs(self, obs: Observation) -> dict[str, object]:
        """GSD (m), week, hour, latitude and longitude Clay is given for `obs`."""
        r, c, h, w = self.crop_window(obs.grid.height, obs.grid.width)
        side = max(h, w)
        pixel = abs(obs.grid.transform.a) if _projected(obs.grid.crs) else self.spec.gsd
        left, bottom, right, top = obs.grid.bounds
        lon, lat = _to_wgs84(obs.grid.crs).transform((left + right) / 2, (bottom + top) / 2)
        week = obs.dates[0].isocalendar()[1] if obs.dates else 0
        hour = int(math.floor((OVERPASS_LOCAL_HOUR - lon / 15.0) % 24))
        return {"gsd_m": pixel * side / IMAGE, "week": int(week), "hour": hour,
                "lat": float(lat), "lon": float(lon)}

    def extra_meta(self, obs: Observation) -> dict[str, object]:
        return {"side_inputs": self.side_inputs(obs)}

    def describe(self) -> ModelCard:
        s = self.spec
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"Clay v1.5 large ({self.sensor}): wavelength-, GSD-, date- and location-conditioned MAE.",
            bands=s.bands,
            scale_m=s.gsd,
            image_size=IMAGE,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=CLAY_CONFIGS["large"].dim,
            weights=self.weights_label(),
            license="Apache-2.0 (code); OpenRAIL (Hugging Face card of the weights)",
            paper="Clay Foundation 2024, Clay v1.5 (github.com/Clay-foundation/model)",
            grid_cell_px=PATCH,
            preprocessing={
                **self.fit_record(),
                "units": s.units,
                "mean": list(s.mean),
                "std": list(s.std),
                "standardise": "(x - mean) / std per band (Clay configs/metadata.yaml)",
                "wavelengths_um": list(s.wavelengths_um),
                "gsd": "metres per input pixel after the resize",
                "time": "[sin, cos](week * 2pi / 52), [sin, cos](hour * 2pi / 24); week of the first frame's date, "
                        "hour = UTC hour of a 10:30 local solar time overpass",
                "latlon": "[sin, cos](lat), [sin, cos](lon) of the place's centre",
                "invalid_pixels": "set to the band mean",
            },
            config={"sensor": self.sensor, "fit": self.fit, "size": "large",
                    "pooled": "class token", "grid": "patch tokens after the final norm"},
        )

    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        state = encoder_state(extract_state_dict(load_checkpoint(path), container_keys=("state_dict",)))
        model = load_clay(state)
        if model.config.dim != CLAY_CONFIGS["large"].dim:
            raise WeightsError(
                f"{path.name} holds a Clay encoder of width {model.config.dim}, not v1.5 large (1024); "
                "give v1.5/clay-v1.5.ckpt from hf:made-with-clay/Clay"
            )
        self._model = model.to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             "depth": model.config.depth}

    def forward(self, x: torch.Tensor, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        model: ClayEncoder = self.network  # type: ignore[assignment]
        sides = [self.side_inputs(o) for o in observations]
        gsds = {round(float(s["gsd_m"]), 6) for s in sides}  # type: ignore[arg-type]
        if len(gsds) > 1:  # one GSD per forward pass, as upstream
            parts = [self.forward(x[i : i + 1], [o]) for i, o in enumerate(observations)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        time = torch.tensor([time_code(s["week"], s["hour"]) for s in sides], dtype=torch.float32)  # type: ignore[arg-type]
        latlon = torch.tensor([latlon_code(s["lat"], s["lon"]) for s in sides], dtype=torch.float32)  # type: ignore[arg-type]
        waves = torch.tensor(self.spec.wavelengths_um, device=x.device)
        cls, tokens, (h, w) = model(x, waves, float(sides[0]["gsd_m"]), time, latlon)  # type: ignore[arg-type]
        return cls, tokens_to_grid(tokens, h, w)
