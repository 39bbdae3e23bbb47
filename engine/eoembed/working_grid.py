"""The one rule for the grid a place is delivered on, shared by every provider.

1. **Ground units.** Pixels are laid out in a CRS whose metres are ground metres at the place:
   projected, in metres, with a scale factor within :data:`GROUND_TOLERANCE` of 1 in both
   directions there (UTM, national grids near their origin). Web Mercator, geographic CRSs and
   any CRS that stretches distances at the place are never working CRSs, whatever the place's
   own CRS: the place is carried into the imagery's CRS or into its UTM zone.
2. **The imagery's lattice.** When imagery under the place's centre is in a ground CRS, the
   grid is in that CRS with pixel corners on that imagery's pixel corners; imagery whose pixel
   size equals the requested scale is preferred (reads then need no resampling), then imagery
   in the place's own UTM zone, then the smallest CRS code and origin (so that the choice
   never depends on the order a source lists its imagery).
3. **Otherwise** the UTM zone of the place's centre (with the Norway and Svalbard exceptions
   Sentinel-2's MGRS tiles follow), pixel corners on multiples of the pixel size — which is
   Sentinel-2's own lattice in its zone.

The place's own CRS only says where the place is; it never chooses the grid, so one piece of
ground gives one grid whatever CRS it is written in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import shapely
from pyproj import CRS, Proj

from .grid import GridSpec, roi_grid
from .specs import WGS84, PointBuffer, SpatialSpec, crs_string, parse_crs, transformer, utm_crs_for

#: Largest departure of a CRS's scale factor from 1 at the place for it to count as ground metres.
GROUND_TOLERANCE = 0.005
_NEVER_METHODS = ("popular visualisation pseudo mercator",)
_RES_TOL = 1e-6  # relative: two pixel sizes this close are equal


@dataclass(frozen=True)
class Lattice:
    """The pixel lattice of one piece of imagery: CRS, pixel size, a pixel corner, coverage.

    `footprint` is the area it covers in lon/lat (None: unknown, taken as covering the place);
    `source` names the imagery (a scene or item id) for meta.
    """

    crs: str
    res: float
    origin: tuple[float, float]
    footprint: shapely.Geometry | None = None
    source: str = ""

    @property
    def offset(self) -> tuple[float, float]:
        """The pixel corner nearest the CRS origin's lower left: the lattice without its tile."""
        return (self.origin[0] % self.res, self.origin[1] % self.res)

    def order_key(self) -> tuple[str, float, float, float]:
        """A key that does not depend on the source: CRS, pixel size, offset (to a micrometre)."""
        return (self.crs, self.res, round(self.offset[0], 6), round(self.offset[1], 6))


def place_lonlat(spatial: SpatialSpec) -> tuple[float, float]:
    """Longitude and latitude of the place's centre (a point's own position, else the centroid)."""
    if isinstance(spatial, PointBuffer):
        return transformer(spatial.crs_obj, WGS84).transform(spatial.x, spatial.y)
    c = spatial.shape("EPSG:4326").centroid
    return float(c.x), float(c.y)


def place_zone(spatial: SpatialSpec) -> CRS:
    """The UTM zone CRS of the place's centre."""
    return utm_crs_for(*place_lonlat(spatial))


@lru_cache(maxsize=256)
def _metric_proj(crs_text: str) -> Proj | None:
    """The Proj of a projected CRS in metres whose scale can be asked for, else None (memoised:
    building a Proj costs more than the rest of a place's grid)."""
    crs = parse_crs(crs_text)
    if not crs.is_projected:
        return None
    if {ax.unit_name for ax in crs.axis_info[:2]} - {"metre", "meter"}:
        return None
    op = crs.coordinate_operation
    if op is not None and op.method_name.lower() in _NEVER_METHODS:
        return None
    return Proj(crs)


@lru_cache(maxsize=512)
def _scale_factors(crs_text: str, lon: float, lat: float) -> tuple[float, float] | None:
    proj = _metric_proj(crs_text)
    if proj is None:
        return None
    try:
        f = proj.get_factors(lon, lat)
    except Exception:  # a projection pyproj cannot differentiate there
        return None
    return float(f.meridional_scale), float(f.parallel_scale)


def is_ground_crs(crs: Any, lon: float, lat: float) -> bool:
    """True when one unit of `crs` is one ground metre (within GROUND_TOLERANCE) at lon/lat."""
    text = crs if isinstance(crs, str) else crs_string(parse_crs(crs))
    factors = _scale_factors(text, round(lon, 3), round(lat, 3))
    return factors is not None and all(abs(k - 1.0) <= GROUND_TOLERANCE for k in factors)


def choose_lattice(spatial: SpatialSpec, scale_m: float, lattices: Iterable[Lattice]) -> Lattice | None:
    """The imagery lattice the place's grid is put on, or None when no imagery qualifies."""
    lon, lat = place_lonlat(spatial)
    centre = shapely.Point(lon, lat)
    zone = crs_string(utm_crs_for(lon, lat))
    usable: dict[tuple, Lattice] = {}
    for lt in lattices:
        if (lt.footprint is None or lt.footprint.intersects(centre)) and is_ground_crs(lt.crs, lon, lat):
            seen = usable.get(lt.order_key())
            if seen is None or lt.source < seen.source:  # one name per lattice, whatever the order
                usable[lt.order_key()] = lt
    if not usable:
        return None

    def rank(lt: Lattice) -> tuple[bool, bool, tuple]:
        return (abs(lt.res - scale_m) > _RES_TOL * scale_m, lt.crs != zone, lt.order_key())

    return min(usable.values(), key=rank)


def working_grid(spatial: SpatialSpec, scale_m: float, lattices: Iterable[Lattice] = ()) -> GridSpec:
    """The grid of `scale_m` pixels a place is delivered on (the rule in this module's docstring)."""
    chosen = choose_lattice(spatial, scale_m, lattices)
    if chosen is None:
        return roi_grid(spatial, scale_m, crs=place_zone(spatial), basis="utm zone of the place")
    basis = f"lattice of {chosen.source}" if chosen.source else "imagery lattice"
    if abs(chosen.res - scale_m) > _RES_TOL * scale_m:
        basis += f" ({chosen.res:g} m pixels, corners shared)"
    # anchored at the lattice's offset, not a tile's corner: tiles on one lattice give one grid
    return roi_grid(spatial, scale_m, crs=chosen.crs, anchor=chosen.offset, basis=basis)

