"""Request specifications: where, when, which sensor, what output. Frozen and validated on creation.

Every spec raises :class:`SpecError` with a sentence naming the field and the allowed values.
Spatial specs carry their CRS (anything pyproj reads: ``"EPSG:32633"``, WKT, PROJ strings).
"""

from __future__ import annotations

import calendar
import json
import math
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import shapely
import shapely.geometry
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError

from .errors import SpecError
from .sensors import normalize_band, normalize_collection

#: Largest area one request may cover; bigger areas belong in a batch of smaller ROIs.
MAX_AREA_KM2 = 2_500.0
#: Largest half-side of a :class:`PointBuffer`.
MAX_BUFFER_M = 25_000.0

_GEOD = Geod(ellps="WGS84")
WGS84 = CRS.from_epsg(4326)


@lru_cache(maxsize=1024)
def _crs_from_text(text: str) -> CRS:
    return CRS.from_user_input(text)


@lru_cache(maxsize=1024)
def _transformer(src: CRS, dst: CRS) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


#: transformers by the identity of their (memoised, so long-lived) CRS objects: hashing a pyproj
#: CRS writes its WKT (0.03 ms), so a by-value cache hit costs 0.085 ms — several per place
_BY_ID: dict[tuple[int, int], tuple[CRS, CRS, Transformer]] = {}


def transformer(src: CRS, dst: CRS) -> Transformer:
    """An x/y-ordered Transformer between two CRSs (memoised: building one costs ~0.2 ms)."""
    hit = _BY_ID.get((id(src), id(dst)))
    if hit is not None and hit[0] is src and hit[1] is dst:
        return hit[2]
    t = _transformer(src, dst)
    if len(_BY_ID) < 1024:  # the entry holds src and dst, so their ids are not reused meanwhile
        _BY_ID[(id(src), id(dst))] = (src, dst, t)
    return t


def parse_crs(crs: Any, name: str = "crs") -> CRS:
    """A pyproj CRS from anything pyproj reads, or a SpecError naming the argument."""
    if isinstance(crs, CRS):
        return crs
    try:
        if isinstance(crs, str):
            return _crs_from_text(crs)
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise SpecError(
            f"{name}={crs!r} is not a coordinate reference system; give an EPSG code like "
            "'EPSG:4326', a WKT or a PROJ string"
        ) from exc


#: texts of CRS objects by identity (the CRSs come from memoised parsers, so they live long;
#: each entry holds its CRS, so an id is not reused meanwhile): to_epsg costs 0.05 ms a call
_TEXT_BY_ID: dict[int, tuple[CRS, str]] = {}


def crs_string(crs: CRS) -> str:
    """Short, stable text form of a CRS ('EPSG:32633' when it has an EPSG code, else WKT)."""
    hit = _TEXT_BY_ID.get(id(crs))
    if hit is not None and hit[0] is crs:
        return hit[1]
    epsg = crs.to_epsg(min_confidence=90)
    text = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    if len(_TEXT_BY_ID) < 1024:
        _TEXT_BY_ID[id(crs)] = (crs, text)
    return text


def utm_zone(lon: float, lat: float) -> int:
    """The UTM zone number of a longitude/latitude, with the exceptions MGRS (and so
    Sentinel-2's tiles) uses: zone 32 widened over south-west Norway, 31/33/35/37 over Svalbard."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        return 32
    if 72.0 <= lat <= 84.0 and 0.0 <= lon < 42.0:
        return 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return zone


@lru_cache(maxsize=256)
def _utm_crs(zone: int, north: bool) -> CRS:
    return CRS.from_epsg((32600 if north else 32700) + zone)


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 / UTM zone CRS that contains a longitude/latitude (see :func:`utm_zone`)."""
    return _utm_crs(utm_zone(lon, lat), lat >= 0)


def _finite(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{name}={value!r} is not a number") from exc
    if not math.isfinite(v):
        raise SpecError(f"{name}={value!r} must be a finite number")
    return v


def _check_geographic(crs: CRS, xs: list[float], ys: list[float], what: str) -> None:
    if not crs.is_geographic:
        return
    for x in xs:
        if not -180.0 <= x <= 180.0:
            raise SpecError(f"{what}: longitude {x} is outside [-180, 180] in {crs_string(crs)}")
    for y in ys:
        if not -90.0 <= y <= 90.0:
            raise SpecError(f"{what}: latitude {y} is outside [-90, 90] in {crs_string(crs)}")


class SpatialSpec:
    """Common behaviour of the places eoembed embeds: a footprint with a CRS.

    The *working CRS* is where pixels are square and in ground metres when no imagery says
    otherwise: the UTM zone of the footprint's centre, whatever CRS the place is written in
    (see :mod:`eoembed.working_grid` for the whole rule).
    """

    crs: str

    @property
    def crs_obj(self) -> CRS:
        return _crs_from_text(self.crs)

    def _native_shape(self) -> shapely.Geometry:  # in self.crs
        raise NotImplementedError

    @cached_property
    def working_crs(self) -> CRS:
        c = self.shape(WGS84).centroid
        return utm_crs_for(c.x, c.y)

    def shape(self, crs: Any | None = None) -> shapely.Geometry:
        """The footprint as a shapely geometry in `crs` (default: the spec's own CRS)."""
        geom = self._native_shape()
        if crs is None:
            return geom
        target = parse_crs(crs)
        if target == self.crs_obj:
            return geom
        tr = transformer(self.crs_obj, target)
        return _reproject(tr, _densify(geom))

    def area_km2(self) -> float:
        """Geodesic area of the footprint in square kilometres."""
        geom = self.shape("EPSG:4326")
        area, _ = _GEOD.geometry_area_perimeter(geom)
        return abs(area) / 1e6

    @property
    def is_polygon(self) -> bool:
        """True when only pixels inside the footprint count (masked pooling)."""
        return False

    def key(self) -> str:
        """A stable text key for caching and fingerprints."""
        raise NotImplementedError

    def _check_area(self) -> None:
        area = self.area_km2()
        if area > MAX_AREA_KM2:
            raise SpecError(
                f"{type(self).__name__} covers {area:,.0f} km², more than the {MAX_AREA_KM2:,.0f} km² "
                "one request may cover; split it into smaller areas and embed them as a batch"
            )


def _either(what: str, crs: Any, pairs: tuple[tuple[str, Any, str, Any], ...]) -> list[Any]:
    """Each coordinate from its x/y name or its lon/lat name (then `crs` must be geographic)."""
    out, geographic = [], False
    for name, value, alias, alias_value in pairs:
        if value is not None and alias_value is not None:
            raise SpecError(f"{what}: give {name} or {alias}, not both")
        if value is None and alias_value is None:
            raise SpecError(f"{what} needs {name} (or {alias} in degrees)")
        geographic |= alias_value is not None
        out.append(value if value is not None else alias_value)
    if geographic and not parse_crs(crs).is_geographic:
        raise SpecError(
            f"{what}: lon/lat keywords are degrees in EPSG:4326, but crs={crs!r} is projected; "
            "use the x/y keywords for projected coordinates"
        )
    return out


def _reproject(tr: Transformer, geom: shapely.Geometry) -> shapely.Geometry:
    """`geom` with every vertex passed through the transformer `tr` (2D)."""
    return shapely.transform(geom, lambda x, y: tr.transform(x, y), interleaved=False)


def _densify(geom: shapely.Geometry, parts: int = 16) -> shapely.Geometry:
    """Add vertices along edges so that a reprojected outline follows curved edges."""
    if geom.geom_type in ("Point", "MultiPoint"):
        return geom
    length = geom.length
    if length <= 0:
        return geom
    return shapely.segmentize(geom, max_segment_length=length / (4 * parts))


@dataclass(frozen=True, init=False)
class BBox(SpatialSpec):
    """An axis-aligned box ``(minx, miny, maxx, maxy)`` in `crs` (x = easting or longitude).

    ``BBox(minlon=, minlat=, maxlon=, maxlat=)`` is the same box in EPSG:4326.
    """

    minx: float
    miny: float
    maxx: float
    maxy: float
    crs: str = "EPSG:4326"

    def __init__(
        self,
        minx: float | None = None,
        miny: float | None = None,
        maxx: float | None = None,
        maxy: float | None = None,
        crs: Any = "EPSG:4326",
        *,
        minlon: float | None = None,
        minlat: float | None = None,
        maxlon: float | None = None,
        maxlat: float | None = None,
    ) -> None:
        xy = _either("BBox", crs, (("minx", minx, "minlon", minlon), ("miny", miny, "minlat", minlat),
                                   ("maxx", maxx, "maxlon", maxlon), ("maxy", maxy, "maxlat", maxlat)))
        for name, value in zip(("minx", "miny", "maxx", "maxy"), xy):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "crs", crs)
        self.__post_init__()

    def __post_init__(self) -> None:
        vals = {k: _finite(k, getattr(self, k)) for k in ("minx", "miny", "maxx", "maxy")}
        for k, v in vals.items():
            object.__setattr__(self, k, v)
        crs = parse_crs(self.crs)
        object.__setattr__(self, "crs", crs_string(crs))
        if not vals["minx"] < vals["maxx"]:
            raise SpecError(f"BBox: minx ({vals['minx']}) must be less than maxx ({vals['maxx']})")
        if not vals["miny"] < vals["maxy"]:
            raise SpecError(f"BBox: miny ({vals['miny']}) must be less than maxy ({vals['maxy']})")
        _check_geographic(crs, [vals["minx"], vals["maxx"]], [vals["miny"], vals["maxy"]], "BBox")
        self._check_area()

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.minx, self.miny, self.maxx, self.maxy)

    def _native_shape(self) -> shapely.Geometry:
        return shapely.geometry.box(*self.bounds)

    def key(self) -> str:
        return f"bbox({self.minx!r},{self.miny!r},{self.maxx!r},{self.maxy!r},{self.crs})"


@dataclass(frozen=True, init=False)
class PointBuffer(SpatialSpec):
    """A square of half-side `buffer_m` ground metres around the point ``(x, y)`` given in `crs`.

    The square is axis-aligned in the grid's CRS (a ground CRS, see :class:`SpatialSpec`), so a
    640 m square is exactly 64 × 64 pixels of 10 m whatever CRS the point is written in.
    ``PointBuffer(lon=, lat=, buffer_m=)`` gives the point in EPSG:4326.
    """

    x: float
    y: float
    buffer_m: float
    crs: str = "EPSG:4326"

    def __init__(
        self,
        x: float | None = None,
        y: float | None = None,
        buffer_m: float | None = None,
        crs: Any = "EPSG:4326",
        *,
        lon: float | None = None,
        lat: float | None = None,
    ) -> None:
        px, py = _either("PointBuffer", crs, (("x", x, "lon", lon), ("y", y, "lat", lat)))
        if buffer_m is None:
            raise SpecError("PointBuffer needs buffer_m, the half-side of the square in metres")
        object.__setattr__(self, "x", px)
        object.__setattr__(self, "y", py)
        object.__setattr__(self, "buffer_m", buffer_m)
        object.__setattr__(self, "crs", crs)
        self.__post_init__()

    @property
    def lon(self) -> float:
        """Longitude of the point (EPSG:4326)."""
        return self.center(WGS84)[0]

    @property
    def lat(self) -> float:
        """Latitude of the point (EPSG:4326)."""
        return self.center(WGS84)[1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "x", _finite("x", self.x))
        object.__setattr__(self, "y", _finite("y", self.y))
        buf = _finite("buffer_m", self.buffer_m)
        if not 0 < buf <= MAX_BUFFER_M:
            raise SpecError(
                f"buffer_m={self.buffer_m!r} must be greater than 0 and at most {MAX_BUFFER_M:g} metres"
            )
        object.__setattr__(self, "buffer_m", buf)
        crs = parse_crs(self.crs)
        object.__setattr__(self, "crs", crs_string(crs))
        _check_geographic(crs, [self.x], [self.y], "PointBuffer")

    def center(self, crs: Any) -> tuple[float, float]:
        """The point in `crs`."""
        tr = transformer(self.crs_obj, parse_crs(crs))
        return tr.transform(self.x, self.y)

    @cached_property
    def working_crs(self) -> CRS:
        lon, lat = transformer(self.crs_obj, WGS84).transform(self.x, self.y)
        return utm_crs_for(lon, lat)

    def _native_shape(self) -> shapely.Geometry:
        wc = self.working_crs
        cx, cy = self.center(wc)
        b = self.buffer_m
        square = shapely.geometry.box(cx - b, cy - b, cx + b, cy + b)
        if wc == self.crs_obj:
            return square
        tr = transformer(wc, self.crs_obj)
        return _reproject(tr, _densify(square))

    def shape(self, crs: Any | None = None) -> shapely.Geometry:
        if crs is not None and parse_crs(crs) == self.working_crs:
            cx, cy = self.center(self.working_crs)
            b = self.buffer_m
            return shapely.geometry.box(cx - b, cy - b, cx + b, cy + b)
        return super().shape(crs)

    def key(self) -> str:
        return f"point({self.x!r},{self.y!r},{self.buffer_m!r},{self.crs})"


@dataclass(frozen=True, eq=False)
class Geometry(SpatialSpec):
    """A polygon or multipolygon in any CRS, from WKT, GeoJSON (text or dict) or shapely.

    Only pixels inside the polygon count when pooling (masked pooling).
    """

    geom: Any
    crs: str = "EPSG:4326"

    def __post_init__(self) -> None:
        g = _to_shapely(self.geom)
        if g.is_empty:
            raise SpecError("Geometry is empty; give a polygon with an area")
        if g.geom_type not in ("Polygon", "MultiPolygon"):
            raise SpecError(
                f"Geometry must be a Polygon or MultiPolygon, got a {g.geom_type}; "
                "for a point use PointBuffer(x, y, buffer_m)"
            )
        if not g.is_valid:
            raise SpecError(
                f"Geometry is not valid ({shapely.is_valid_reason(g)}); repair it, e.g. with shapely.make_valid"
            )
        coords = shapely.get_coordinates(g)
        if not math.isfinite(float(abs(coords).sum())):
            raise SpecError("Geometry has coordinates that are not finite numbers")
        object.__setattr__(self, "geom", g)
        crs = parse_crs(self.crs)
        object.__setattr__(self, "crs", crs_string(crs))
        _check_geographic(crs, list(coords[:, 0]), list(coords[:, 1]), "Geometry")
        self._check_area()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    @property
    def is_polygon(self) -> bool:
        return True

    def _native_shape(self) -> shapely.Geometry:
        return self.geom

    def key(self) -> str:
        return f"geom({self.geom.wkt},{self.crs})"


def _to_shapely(geom: Any) -> shapely.Geometry:
    if isinstance(geom, shapely.Geometry):
        return geom
    if isinstance(geom, str):
        text = geom.strip()
        if text.startswith("{"):
            try:
                geom = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SpecError(f"Geometry: the GeoJSON text does not parse ({exc.msg})") from exc
        else:
            try:
                return shapely.from_wkt(text)
            except shapely.errors.GEOSException as exc:
                raise SpecError(f"Geometry: the WKT text does not parse ({exc})") from exc
    if isinstance(geom, dict):
        if geom.get("type") == "Feature":
            geom = geom.get("geometry") or {}
        try:
            return shapely.geometry.shape(geom)
        except Exception as exc:  # shapely raises several types for bad GeoJSON
            raise SpecError(f"Geometry: the GeoJSON object is not a geometry ({exc})") from exc
    if hasattr(geom, "__geo_interface__"):
        return shapely.geometry.shape(geom.__geo_interface__)
    raise SpecError(
        f"Geometry: cannot read a geometry from a {type(geom).__name__}; give WKT, GeoJSON or shapely"
    )


def _parse_date(name: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError as exc:
            raise SpecError(f"{name}={value!r} is not an ISO date like '2022-06-01'") from exc
    raise SpecError(f"{name}={value!r} is not a date; give an ISO date like '2022-06-01'")


@dataclass(frozen=True, init=False)
class TemporalSpec:
    """A half-open time window ``[start, end)`` of whole days.

    ``TemporalSpec(mode="year", year=2022)`` and ``TemporalSpec(mode="range", start=, end=)``
    are the same as :meth:`year` and :meth:`range`.
    """

    start: date
    end: date

    def __init__(self, start: Any = None, end: Any = None, *, mode: str | None = None,
                 year: int | None = None) -> None:
        if mode is not None and mode not in ("year", "range"):
            raise SpecError(f"TemporalSpec mode={mode!r} must be 'year' or 'range'")
        if mode == "year" or (mode is None and year is not None):
            if start is not None or end is not None:
                raise SpecError("TemporalSpec: give year= or start/end, not both")
            whole = TemporalSpec.year(year)  # type: ignore[arg-type]
            start, end = whole.start, whole.end
        elif mode == "range" and (start is None or end is None):
            raise SpecError("TemporalSpec needs start and end (ISO dates, end excluded) or year=")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        self.__post_init__()

    def __post_init__(self) -> None:
        s = _parse_date("start", self.start)
        e = _parse_date("end", self.end)
        if s.year < 1970 or e.year > 2100:
            raise SpecError(f"time window {s}..{e} must lie between 1970 and 2100")
        if not s < e:
            raise SpecError(
                f"time window is empty or reversed: start {s} must be before end {e} (end is exclusive)"
            )
        object.__setattr__(self, "start", s)
        object.__setattr__(self, "end", e)

    @classmethod
    def range(cls, start: Any, end: Any) -> TemporalSpec:
        """The window from `start` (included) to `end` (excluded), ISO dates or date objects."""
        return cls(start, end)

    @classmethod
    def year(cls, year: int) -> TemporalSpec:
        """The calendar year `year`, 1 January to 1 January."""
        if isinstance(year, bool) or not isinstance(year, int):
            raise SpecError(f"year={year!r} must be a whole number like 2022")
        if not 1970 <= year <= 2099:
            raise SpecError(f"year={year} must be between 1970 and 2099")
        return cls(date(year, 1, 1), date(year + 1, 1, 1))

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def contains(self, when: date | datetime) -> bool:
        d = when.date() if isinstance(when, datetime) else when
        return self.start <= d < self.end

    def split(self, n: int) -> list[TemporalSpec]:
        """`n` consecutive windows of (nearly) equal whole-day length covering this one."""
        if not isinstance(n, int) or n < 1:
            raise SpecError(f"frame count n={n!r} must be a whole number ≥ 1")
        if n > self.days:
            raise SpecError(f"cannot split {self.days} days into {n} frames; use at most {self.days}")
        edges = [self.start + timedelta(days=round(i * self.days / n)) for i in range(n + 1)]
        return [TemporalSpec(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def months(self) -> list[TemporalSpec]:
        """Calendar-month windows overlapping this one, clipped to it."""
        out = []
        cur = self.start
        while cur < self.end:
            last = calendar.monthrange(cur.year, cur.month)[1]
            nxt = min(date(cur.year, cur.month, last) + timedelta(days=1), self.end)
            out.append(TemporalSpec(cur, nxt))
            cur = nxt
        return out

    @property
    def midpoint(self) -> date:
        return self.start + timedelta(days=self.days // 2)

    def key(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


EmptyFramePolicy = Literal["skip", "fill", "nearest", "error"]


@dataclass(frozen=True)
class FrameSpec:
    """How a time window becomes frames for temporal models.

    ``count`` equal bins or calendar ``monthly`` bins, each composited on its own.
    ``empty`` says what a bin with no imagery becomes: ``"skip"`` drops it, ``"fill"`` keeps
    it as `fill_value` marked invalid, ``"nearest"`` copies the nearest non-empty frame,
    ``"error"`` refuses the request. The policy applied is recorded in the result's meta.
    """

    count: int | None = None
    monthly: bool = False
    empty: EmptyFramePolicy = "skip"

    def __post_init__(self) -> None:
        if self.monthly and self.count is not None:
            raise SpecError("FrameSpec: give either count=N or monthly=True, not both")
        count = self.count
        if not self.monthly and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 366):
            raise SpecError(f"FrameSpec: count={self.count!r} must be a whole number from 1 to 366")
        if self.empty not in ("skip", "fill", "nearest", "error"):
            raise SpecError(
                f"FrameSpec: empty={self.empty!r} must be 'skip', 'fill', 'nearest' or 'error'"
            )

    @classmethod
    def bins(cls, count: int, empty: EmptyFramePolicy = "skip") -> FrameSpec:
        return cls(count=count, empty=empty)

    @classmethod
    def by_month(cls, empty: EmptyFramePolicy = "skip") -> FrameSpec:
        return cls(monthly=True, empty=empty)

    def windows(self, temporal: TemporalSpec) -> list[TemporalSpec]:
        return temporal.months() if self.monthly else temporal.split(self.count)  # type: ignore[arg-type]

    def key(self) -> str:
        return f"frames(monthly)/{self.empty}" if self.monthly else f"frames({self.count})/{self.empty}"


def _is_checkpoint(text: str) -> bool:
    """True when a collection string names weights: ``hf:<repo>`` or a path on disk."""
    if text.startswith("hf:"):
        return True
    if text.startswith(("/", "./", "../", "~")) or text.endswith((".pt", ".pth", ".ckpt", ".safetensors", ".bin")):
        return True
    return "/" in text and Path(text).expanduser().exists()


@dataclass(frozen=True)
class SensorSpec:
    """Which imagery to read and how to composite it.

    `collection` is eoembed's name (``"sentinel-2-l2a"``) or an Earth Engine id
    (``"COPERNICUS/S2_SR_HARMONIZED"``), kept as `requested_collection`; ``"hf:<repo>[@rev]"``
    or a checkpoint path instead chooses the model's weights (`checkpoint`) and reads S2 L2A.
    `bands` None means "what the model needs"; `scale_m` is the output pixel size in metres;
    `cloudy_pct` the largest scene cloud cover accepted; `fill_value` fills pixels no scene
    covers; `composite` is ``"median"`` (per-pixel median over dates) or ``"mosaic"``
    (the most recent valid pixel).
    """

    collection: str = "sentinel-2-l2a"
    bands: tuple[str, ...] | None = None
    scale_m: float = 10.0
    cloudy_pct: float = 30.0
    fill_value: float = 0.0
    composite: Literal["median", "mosaic"] = "median"
    checkpoint: str | None = None
    requested_collection: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        text = str(self.collection).strip()
        if _is_checkpoint(text):
            if self.checkpoint is not None and self.checkpoint != text:
                raise SpecError(f"collection={text!r} names weights, and so does checkpoint={self.checkpoint!r}; give one")
            object.__setattr__(self, "checkpoint", text)
            text = "sentinel-2-l2a"
        name = normalize_collection(text)
        if self.requested_collection is None:
            object.__setattr__(self, "requested_collection", text)
        object.__setattr__(self, "collection", name)
        if self.bands is not None:
            if isinstance(self.bands, str) or not len(self.bands):
                raise SpecError("bands must be a non-empty list of band names like ['B04', 'B03', 'B02']")
            names = tuple(normalize_band(b) for b in self.bands)
            if len(set(names)) != len(names):
                raise SpecError(f"bands {list(self.bands)} name a band twice")
            object.__setattr__(self, "bands", names)
        scale = _finite("scale_m", self.scale_m)
        if not 0.5 <= scale <= 1000:
            raise SpecError(f"scale_m={self.scale_m!r} must be between 0.5 and 1000 metres")
        object.__setattr__(self, "scale_m", scale)
        cloudy = _finite("cloudy_pct", self.cloudy_pct)
        if not 0 <= cloudy <= 100:
            raise SpecError(f"cloudy_pct={self.cloudy_pct!r} must be between 0 and 100")
        object.__setattr__(self, "cloudy_pct", cloudy)
        object.__setattr__(self, "fill_value", _finite("fill_value", self.fill_value))
        if self.composite not in ("median", "mosaic"):
            raise SpecError(f"composite={self.composite!r} must be 'median' or 'mosaic'")

    def with_bands(self, bands: tuple[str, ...]) -> SensorSpec:
        return replace(self, bands=tuple(bands))

    def key(self) -> str:
        bands = ",".join(self.bands) if self.bands else "*"
        return f"{self.collection}[{bands}]@{self.scale_m:g}m<{self.cloudy_pct:g}%/{self.composite}/fill={self.fill_value:g}"


@dataclass(frozen=True)
class FetchSpec:
    """Overrides of how the model's own sensor is fetched (None keeps the model's default)."""

    scale_m: float | None = None
    cloudy_pct: float | None = None
    fill_value: float | None = None
    composite: Literal["median", "mosaic"] | None = None

    def sensor(self, scale_m: float) -> SensorSpec:
        """The sensor spec these overrides make from a model whose native scale is `scale_m`."""
        base = SensorSpec(scale_m=scale_m)
        given = {k: v for k, v in vars(self).items() if v is not None}
        return replace(base, **given)


def _no_extra(what: str, unknown: dict[str, Any]) -> None:
    if "scale_m" in unknown:
        raise SpecError(f"{what}() takes no scale_m; set the pixel size with fetch=FetchSpec(scale_m=...)")
    if unknown:
        raise SpecError(f"{what}() does not take {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class OutputSpec:
    """What to return: one ``pooled`` vector per place, or a georeferenced ``grid``."""

    mode: Literal["pooled", "grid"] = "pooled"
    pooling: Literal["mean", "max"] = "mean"

    def __post_init__(self) -> None:
        if self.mode not in ("pooled", "grid"):
            raise SpecError(f"output mode={self.mode!r} must be 'pooled' or 'grid'")
        if self.pooling not in ("mean", "max"):
            raise SpecError(f"pooling={self.pooling!r} must be 'mean' or 'max'")

    @classmethod
    def pooled(cls, pooling: Literal["mean", "max"] = "mean", **unknown: Any) -> OutputSpec:
        _no_extra("OutputSpec.pooled", unknown)
        return cls("pooled", pooling)

    @classmethod
    def grid(cls, *, grid_orientation: str = "north_up", **unknown: Any) -> OutputSpec:
        """A georeferenced grid; grids are always north-up on the place's CRS."""
        _no_extra("OutputSpec.grid", unknown)
        if grid_orientation != "north_up":
            raise SpecError(
                f"grid_orientation={grid_orientation!r}: eoembed grids are always north-up and "
                "georeferenced on the place's CRS; leave grid_orientation unset or 'north_up'"
            )
        return cls("grid")

    def key(self) -> str:
        return f"{self.mode}/{self.pooling}" if self.mode == "pooled" else "grid"


@dataclass(frozen=True)
class InputPrep:
    """How a place's pixels meet the model's input size.

    ``"resize"`` resamples the whole place to the model's image size (one forward pass);
    ``"tile"`` cuts it into model-size tiles at native resolution (up to `max_tiles`) and
    stitches the grids or averages the pooled vectors; ``"auto"`` tiles places larger than
    the model's image size when they need at most `max_tiles` tiles, else resizes.
    `tile_size` / `tile_stride`, when given, must be the model's image size (tiles do not
    overlap).
    """

    mode: Literal["resize", "tile", "auto"] = "resize"
    max_tiles: int = 64
    tile_size: int | None = None
    tile_stride: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("resize", "tile", "auto"):
            raise SpecError(f"InputPrep mode={self.mode!r} must be 'resize', 'tile' or 'auto'")
        if isinstance(self.max_tiles, bool) or not isinstance(self.max_tiles, int) or not 1 <= self.max_tiles <= 4096:
            raise SpecError(f"max_tiles={self.max_tiles!r} must be a whole number from 1 to 4096")
        for name in ("tile_size", "tile_stride"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SpecError(f"{name}={v!r} must be a whole number of pixels ≥ 1")
        if self.tile_stride is not None and self.tile_stride != (self.tile_size or self.tile_stride):
            raise SpecError(
                f"tile_stride={self.tile_stride} differs from tile_size={self.tile_size}: "
                "eoembed tiles do not overlap; leave tile_stride unset"
            )

    @classmethod
    def resize(cls) -> InputPrep:
        return cls("resize")

    @classmethod
    def tile(cls, max_tiles: int = 64, *, tile_size: int | None = None, tile_stride: int | None = None,
             **unknown: Any) -> InputPrep:
        _check_prep_extras(unknown)
        return cls("tile", max_tiles, tile_size, tile_stride)

    @classmethod
    def auto(cls, max_tiles: int = 64, *, tile_size: int | None = None, tile_stride: int | None = None,
             **unknown: Any) -> InputPrep:
        _check_prep_extras(unknown)
        return cls("auto", max_tiles, tile_size, tile_stride)

    @classmethod
    def parse(cls, value: Any) -> InputPrep | None:
        """An InputPrep from None, an InputPrep or the strings 'resize', 'tile', 'auto'."""
        if value is None or isinstance(value, InputPrep):
            return value
        if isinstance(value, str) and value.strip().lower() in ("resize", "tile", "auto"):
            return cls(value.strip().lower())  # type: ignore[arg-type]
        raise SpecError(f"input_prep={value!r} must be 'resize', 'tile', 'auto' or an InputPrep")

    def resolve(self, height: int, width: int, image_size: int | None) -> InputPrep:
        """The concrete mode for a place of height × width pixels ('auto' decided here)."""
        if self.mode != "auto":
            return self
        if not image_size or (height <= image_size and width <= image_size):
            return InputPrep("resize", self.max_tiles)
        tiles = -(-height // image_size) * -(-width // image_size)
        return InputPrep("tile" if tiles <= self.max_tiles else "resize", self.max_tiles, self.tile_size)

    def key(self) -> str:
        return self.mode if self.mode == "resize" else f"{self.mode}<={self.max_tiles}"


#: The name rs-embed users know this spec by.
InputPrepSpec = InputPrep


def _check_prep_extras(unknown: dict[str, Any]) -> None:
    pad = unknown.pop("pad_edges", True)
    if pad is not True:
        raise SpecError("pad_edges=False: eoembed always pads edge tiles with invalid fill; leave pad_edges unset")
    for ignored in ("max_tiles_hard", "tile_snap_frac"):
        unknown.pop(ignored, None)
    if unknown:
        raise SpecError(f"InputPrep does not take {', '.join(sorted(unknown))}")
