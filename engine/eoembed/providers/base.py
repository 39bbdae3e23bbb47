"""The provider contract: a request for pixels in, an Observation (time, band, y, x) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import xarray as xr

from ..grid import GridSpec
from ..specs import FrameSpec, SensorSpec, SpatialSpec, TemporalSpec
from ..working_grid import Lattice, working_grid


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


class Observation:
    """Imagery of one place, on the place's grid.

    `data`: float32 ``DataArray (time, band, y, x)`` in the provider's native units (S2 L2A:
    reflectance × 10000 with any BOA offset removed), with ``time`` (frame dates, numpy
    datetime64), ``band`` (canonical names), ``y``/``x`` (pixel centres) coordinates and
    ``crs``/``transform`` attributes. Invalid pixels hold the sensor's `fill_value`.
    `valid`: bool ``(time, y, x)``, True where a real measurement went into the pixel.
    `roi_mask`: bool ``(y, x)``, True inside the place (all True for boxes and points).
    `meta`: provenance — source ids, acquisition dates, coverage, composite, frames.

    The labelled ``data`` view is built on first access; models read plain arrays with
    :meth:`values`, which keeps the hot path free of xarray's construction cost.
    """

    __slots__ = ("array", "bands", "dates", "valid", "roi_mask", "grid", "meta", "_data")

    def __init__(
        self,
        array: np.ndarray,
        bands: Sequence[str],
        dates: Sequence[date],
        valid: np.ndarray,
        roi_mask: np.ndarray,
        grid: GridSpec,
        meta: dict[str, Any] | None = None,
    ) -> None:
        t, c, h, w = array.shape
        if (h, w) != (grid.height, grid.width) or c != len(bands) or t != len(dates):
            raise ValueError(
                f"array {array.shape} does not match grid {grid.height}×{grid.width}, "
                f"{len(bands)} bands and {len(dates)} dates"
            )
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.bands: tuple[str, ...] = tuple(bands)
        self.dates: list[date] = list(dates)
        self.valid = np.asarray(valid, dtype=bool)
        self.roi_mask = np.asarray(roi_mask, dtype=bool)
        self.grid = grid
        self.meta: dict[str, Any] = dict(meta or {})
        self._data: xr.DataArray | None = None

    @property
    def data(self) -> xr.DataArray:
        """The labelled ``(time, band, y, x)`` view (shares memory with :attr:`array`)."""
        if self._data is None:
            self._data = xr.DataArray(
                self.array,
                dims=("time", "band", "y", "x"),
                coords={
                    "time": np.array([np.datetime64(d, "ns") for d in self.dates]),
                    "band": list(self.bands),
                    "y": self.grid.ys(),
                    "x": self.grid.xs(),
                },
                attrs={"crs": self.grid.crs, "transform": tuple(self.grid.transform)[:6]},
            )
        return self._data

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
        if bands is None or tuple(bands) == self.bands:
            return self.array
        try:
            idx = [self.bands.index(b) for b in bands]
        except ValueError as exc:
            raise KeyError(f"the observation has bands {list(self.bands)}, not all of {list(bands)}") from exc
        return self.array[:, idx]

    def __repr__(self) -> str:
        t, c, h, w = self.array.shape
        return f"<Observation {t}×{c}×{h}×{w} in {self.grid.crs} bands={','.join(self.bands)}>"


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
    mask = roi if roi is not None else np.ones(values.shape[-2:], dtype=bool)
    meta = dict(meta or {})
    meta.setdefault("grid", {"crs": grid.crs, "basis": grid.basis or "given"})
    return Observation(values, bands, dates, valid, mask, grid, meta)


class Provider(ABC):
    """A source of imagery. Subclasses implement :meth:`fetch`; everything else has defaults.

    Providers are thread-safe: the pipeline calls :meth:`fetch` from a thread pool.
    """

    #: short name used in meta and on the command line ("local", "stac", "gee")
    name: str = "provider"

    def lattices(self, spatial: SpatialSpec, sensor: SensorSpec,
                 temporal: TemporalSpec | None = None) -> list[Lattice]:
        """Pixel lattices of the imagery that may lie under the place (none known: empty)."""
        return []

    def grid_for(self, spatial: SpatialSpec, sensor: SensorSpec, temporal: TemporalSpec | None = None) -> GridSpec:
        """The pixel grid a place is delivered on: the one rule of :mod:`eoembed.working_grid`
        applied to this provider's :meth:`lattices`."""
        return working_grid(spatial, sensor.scale_m, self.lattices(spatial, sensor, temporal))

    def request(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec,
        sensor: SensorSpec,
        frames: FrameSpec | None = None,
    ) -> FetchRequest:
        """A FetchRequest for a place on this provider's grid."""
        return FetchRequest(spatial, self.grid_for(spatial, sensor, temporal), temporal, sensor, frames)

    #: places worth fetching at once: a few where fetching is CPU work (local files), many where
    #: it is waiting on a network (remote providers raise it)
    fetch_concurrency: int = 4

    def prepare(self, places: Sequence[SpatialSpec], temporal: TemporalSpec, sensor: SensorSpec) -> None:
        """Told the places about to be requested and fetched together (a chunk of a batch), so
        that work they share is done once (a remote catalogue searched once for all of them);
        nothing by default."""
        return None

    def close(self) -> None:
        """Release what the provider keeps open (threads, files, connections); nothing by default."""
        return None

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

