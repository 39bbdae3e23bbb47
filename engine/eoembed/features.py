"""Places from vector files: every feature of a GeoJSON / GeoPackage / Shapefile as a spatial spec.

Points become :class:`PointBuffer` squares (``buffer_m`` half-side), polygons become
:class:`Geometry` (masked pooling). Features keep their id (an attribute or the row number).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyogrio.raw
import shapely

from .errors import SpecError
from .specs import Geometry, PointBuffer, SpatialSpec, crs_string, parse_crs


@dataclass(frozen=True)
class Place:
    """One feature to embed: its id, the spec to fetch, and its geometry as given."""

    id: str
    spatial: SpatialSpec
    geometry: shapely.Geometry
    crs: str


def read_places(
    path: str | Path,
    *,
    id_field: str | None = None,
    buffer_m: float = 320.0,
    layer: str | int | None = None,
) -> list[Place]:
    """Read every feature of a vector file as a Place, in the file's CRS.

    Raises SpecError naming the file and the problem (missing file, no CRS, unknown id field,
    empty or unsupported geometries with their row numbers).
    """
    p = Path(path)
    if not p.exists():
        raise SpecError(f"vector file {str(p)!r} does not exist")
    try:
        meta, _fids, wkb, fields = pyogrio.raw.read(p, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise SpecError(f"could not read {p.name} as a vector file ({exc})") from exc
    if not meta.get("crs"):
        raise SpecError(f"{p.name} has no CRS; set one (e.g. EPSG:4326) in the file")
    _check_geojson_crs_member(p)
    crs = crs_string(parse_crs(meta["crs"]))
    names = [str(n) for n in meta.get("fields", [])]
    if id_field is not None and id_field not in names:
        raise SpecError(f"id field {id_field!r} is not in {p.name}; its fields are {', '.join(names) or 'none'}")
    ids = [str(v) for v in fields[names.index(id_field)]] if id_field else [str(i) for i in range(len(wkb))]
    places = []
    for row, (fid, blob) in enumerate(zip(ids, wkb)):
        geom = shapely.from_wkb(blob) if blob is not None else None
        places.append(_place(fid, geom, crs, buffer_m, p.name, row))
    if not places:
        raise SpecError(f"{p.name} has no features")
    return places


def require_unique_ids(places: Sequence[Place]) -> None:
    """SpecError when two places share an id (every command refuses them the same way)."""
    seen: dict[str, int] = {}
    for i, p in enumerate(places):
        if p.id in seen:
            raise SpecError(
                f"places #{seen[p.id]} and #{i} share the id {p.id!r}; ids must be unique (use another id field)"
            )
        seen[p.id] = i


_GEOJSON_CHECK_MAX_BYTES = 64 * 2**20


def _check_geojson_crs_member(p: Path) -> None:
    """A GeoJSON ``crs`` member that names no CRS is an error (GDAL would silently read
    the file as EPSG:4326 instead)."""
    if p.suffix.lower() not in (".geojson", ".json") or p.stat().st_size > _GEOJSON_CHECK_MAX_BYTES:
        return
    try:
        doc = json.loads(p.read_bytes())
    except (ValueError, OSError):
        return  # GDAL read it; whatever it is, it has no crs member to check
    member = doc.get("crs") if isinstance(doc, dict) else None
    if member is None:
        return
    props = member.get("properties") if isinstance(member, dict) else None
    props = props if isinstance(props, dict) else {}
    name = props.get("name") or (f"EPSG:{props['code']}" if props.get("code") is not None else None)
    try:
        if not name:
            raise SpecError("no name")
        parse_crs(str(name))
    except SpecError:
        shown = json.dumps(member)[:120]
        raise SpecError(
            f'{p.name}: its "crs" member {shown} names no coordinate reference system eoembed can read; '
            "fix it (e.g. \"urn:ogc:def:crs:EPSG::32633\") or remove it if the coordinates are lon/lat"
        ) from None


def place_from_geometry(fid: str, geom: shapely.Geometry, crs: Any, buffer_m: float) -> Place:
    """A Place from one geometry (used by callers that already hold features, like QGIS)."""
    return _place(fid, geom, crs_string(parse_crs(crs)), buffer_m, "input", 0)


def _place(fid: str, geom: Any, crs: str, buffer_m: float, name: str, row: int) -> Place:
    if geom is None or geom.is_empty:
        raise SpecError(f"{name}: feature {fid} (row {row}) has no geometry; remove it or give it one")
    kind = geom.geom_type
    if kind == "Point":
        spec: SpatialSpec = PointBuffer(geom.x, geom.y, buffer_m, crs=crs)
    elif kind in ("Polygon", "MultiPolygon"):
        spec = Geometry(geom, crs=crs)
    elif kind == "MultiPoint" and len(geom.geoms) == 1:
        pt = geom.geoms[0]
        spec = PointBuffer(pt.x, pt.y, buffer_m, crs=crs)
    else:
        raise SpecError(f"{name}: feature {fid} (row {row}) is a {kind}; eoembed embeds points and polygons")
    return Place(fid, spec, geom, crs)

