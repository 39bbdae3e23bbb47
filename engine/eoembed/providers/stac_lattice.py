"""Pixel lattices of STAC items: from the projection extension (``proj:*``) or a COG header.

The grid rule (:mod:`eoembed.working_grid`) puts a place's grid on these lattices, so the STAC
provider delivers the same grid as the local provider over the same COGs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import shapely

from ..specs import crs_string, parse_crs
from ..working_grid import Lattice


def _crs_of(fields: dict[str, Any]) -> str | None:
    """The CRS text of ``proj:code`` / ``proj:epsg`` / ``proj:wkt2`` / ``proj:projjson``, if any."""
    if fields.get("proj:code"):
        return str(fields["proj:code"])
    epsg = fields.get("proj:epsg")
    if epsg not in (None, ""):
        try:
            return f"EPSG:{int(epsg)}"
        except (TypeError, ValueError):
            return None
    for key in ("proj:wkt2", "proj:projjson"):
        if fields.get(key):
            return fields[key] if isinstance(fields[key], str) else None
    return None


def _origin_res(fields: dict[str, Any]) -> tuple[float, tuple[float, float]] | None:
    """Pixel size and top-left corner of a north-up, square-pixel ``proj:transform`` (or
    ``proj:bbox`` with ``proj:shape``); None when absent or not north-up."""
    tr = fields.get("proj:transform")
    try:
        if tr and len(tr) >= 6:
            a, b, c, d, e, f = (float(v) for v in tr[:6])
            if b == 0 and d == 0 and a > 0 and abs(a + e) <= 1e-9 * a:
                return a, (c, f)
            return None
        bbox, shape = fields.get("proj:bbox"), fields.get("proj:shape")
        if bbox and shape and len(bbox) == 4 and len(shape) == 2:
            x0, y0, x1, y1 = (float(v) for v in bbox)
            rx, ry = (x1 - x0) / float(shape[1]), (y1 - y0) / float(shape[0])
            if rx > 0 and abs(rx - ry) <= 1e-9 * rx:
                return rx, (x0, y1)
    except (TypeError, ValueError):
        return None
    return None


def proj_lattices(item: dict[str, Any], band_assets: Iterable[str], footprint: shapely.Geometry | None,
                  item_id: str) -> list[Lattice]:
    """Lattices an item's projection metadata declares: the item's own and each band asset's
    (assets inherit the item's CRS). Unparseable entries are left out."""
    props = item.get("properties") or {}
    assets = item.get("assets") or {}
    base = _crs_of(props)
    out: dict[tuple, Lattice] = {}
    for fields in [props] + [assets[k] for k in band_assets if isinstance(assets.get(k), dict)]:
        crs = _crs_of(fields) or base
        geo = _origin_res(fields)
        if crs is None or geo is None:
            continue
        try:
            crs = crs_string(parse_crs(crs))
        except Exception:  # a CRS text pyproj does not read: no lattice from it
            continue
        lat = Lattice(crs, geo[0], geo[1], footprint, item_id)
        out.setdefault(lat.order_key(), lat)
    return list(out.values())


def header_lattice(src: Any, footprint: shapely.Geometry | None, item_id: str) -> Lattice | None:
    """The lattice of an open COG (rasterio dataset), from its header; None when not north-up."""
    t = src.transform
    if src.crs is None or t.b or t.d or t.a <= 0 or abs(t.a + t.e) > 1e-9 * t.a:
        return None
    return Lattice(crs_string(parse_crs(src.crs.to_wkt())), float(t.a), (float(t.c), float(t.f)), footprint, item_id)
