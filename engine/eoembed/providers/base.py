"""The provider contract: a request for pixels in, an Observation (time, band, y, x) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import xarray as xr

from ..grid import GridSpec, roi_grid
from ..specs import FrameSpec, SensorSpec, SpatialSpec, TemporalSpec


@dataclass(frozen=True)
class FetchRequest:
    """Everything a provider needs to deliver pixels: place, grid, window, sensor and frames.

    `sensor.bands` is always resolved (the model's bands); `frames` is None for a single
    composite over the whole window, or a FrameSpec for a time series of composites.
    """

    spatial: SpatialSpec
    grid: GridSpec
    temporal: TemporalSpec
    sensor: SensorSpec
    frames: FrameSpec | None = None

    def key(self) -> str:
        """Identity of the pixels: equal keys fetch identical observations (used to dedup)."""
        frames = self.frames.key() if self.frames else "composite"
        return "|".join((self.grid.key(), self.temporal.key(), self.sensor.key(), frames, self.spatial.key()))


@dataclass
class Observation:
    """Imagery of one place, on the place's grid.

    `data`: float32 ``DataArray (time, band, y, x)`` in the provider's native units (S2 L2A:
    reflectance × 10000 with any BOA offset removed), with ``time`` (frame dates, numpy
    datetime64), ``band`` (canonical names), ``y``/``x`` (pixel centres) coordinates and
    ``crs``/``transform`` attributes. Invalid pixels hold the sensor's `fill_value`.
    `valid`: bool ``(time, y, x)``, True where a real measurement went into the pixel.
    `roi_mask`: bool ``(y, x)``, True inside the place (all True for boxes and points).
    `meta`: provenance — source ids, acquisition dates, coverage, composite, frames.
    """

    data: xr.DataArray
    valid: np.ndarray
    roi_mask: np.ndarray
    grid: GridSpec
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(str(b) for b in self.data.coords["band"].values)

    @property
    def dates(self) -> list[date]:
        return [np.datetime64(t, "D").astype(object) for t in self.data.coords["time"].values]

    @property
    def day_of_year(self) -> np.ndarray:
        """Day of year (1–366) of each frame."""
        return np.array([d.timetuple().tm_yday for d in self.dates], dtype=np.int64)

    @property
    def months(self) -> np.ndarray:
        """Month index 0–11 of each frame."""
        return np.array([d.month - 1 for d in self.dates], dtype=np.int64)

    def values(self, bands: Sequence[str] | None = None) -> np.ndarray:
        """float32 array ``(time, band, y, x)``, in `bands` order when given."""
        arr = self.data if bands is None else self.data.sel(band=list(bands))
        return np.asarray(arr.values, dtype=np.float32)


def make_observation(
    values: np.ndarray,
    valid: np.ndarray,
    grid: GridSpec,
    bands: Sequence[str],
    dates: Sequence[date],
    roi: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
) -> Observation:
    """Build an Observation from plain arrays ``(T, C, H, W)`` and ``(T, H, W)`` on `grid`."""
    t, c, h, w = values.shape
    if (h, w) != (grid.height, grid.width) or c != len(bands) or t != len(dates):
        raise ValueError(
            f"array {values.shape} does not match grid {grid.height}×{grid.width}, "
            f"{len(bands)} bands and {len(dates)} dates"
        )
    data = xr.DataArray(
        np.ascontiguousarray(values, dtype=np.float32),
        dims=("time", "band", "y", "x"),
        coords={
            "time": np.array([np.datetime64(d, "ns") for d in dates]),
            "band": list(bands),
            "y": grid.ys(),
            "x": grid.xs(),
        },
        attrs={"crs": grid.crs, "transform": tuple(grid.transform)[:6]},
    )
    mask = roi if roi is not None else np.ones((h, w), dtype=bool)
    return Observation(data, np.asarray(valid, dtype=bool), mask, grid, dict(meta or {}))


class Provider(ABC):
    """A source of imagery. Subclasses implement :meth:`fetch`; everything else has defaults.

    Providers are thread-safe: the pipeline calls :meth:`fetch` from a thread pool.
    """

    #: short name used in meta and on the command line ("local", "stac", "gee")
    name: str = "provider"

    def grid_for(self, spatial: SpatialSpec, sensor: SensorSpec) -> GridSpec:
        """The pixel grid a place is delivered on; providers may align it to their imagery."""
        return roi_grid(spatial, sensor.scale_m)

    def request(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec,
        sensor: SensorSpec,
        frames: FrameSpec | None = None,
    ) -> FetchRequest:
        """A FetchRequest for a place on this provider's grid."""
        return FetchRequest(spatial, self.grid_for(spatial, sensor), temporal, sensor, frames)

    @abstractmethod
    def fetch(self, request: FetchRequest) -> Observation:
        """Pixels for one request; raises ProviderError with one sentence when impossible."""

    def fetch_many(self, requests: Sequence[FetchRequest], workers: int = 4) -> list[Observation | Exception]:
        """Fetch several requests concurrently; each slot holds an Observation or the error."""

        def one(req: FetchRequest) -> Observation | Exception:
            try:
                return self.fetch(req)
            except Exception as exc:  # isolated per item; the caller decides
                return exc

        if workers <= 1 or len(requests) <= 1:
            return [one(r) for r in requests]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"eoembed-{self.name}") as pool:
            return list(pool.map(one, requests))

    def describe(self) -> dict[str, Any]:
        """What this provider is, for meta (never credentials)."""
        return {"provider": self.name}

