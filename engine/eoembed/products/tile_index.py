"""Published tile indexes of products (CSV or GeoParquet): downloaded once, cached, searched
in memory. A place never costs a bucket listing."""

from __future__ import annotations

import csv
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
import shapely.wkt
from shapely.strtree import STRtree

from ..errors import ProviderError
from .base import utm_epsg
from .remote import Remote

_ZONE = re.compile(r"(?:^|/)(\d{1,2})([NS])(?:/|$)")


@dataclass(frozen=True)
class Tile:
    """One file of a product: its year, path (as the index gives it), footprint and CRS."""

    year: int
    path: str
    footprint: shapely.Geometry
    crs: str


class TileIndex:
    """The tiles of one index file, by year, with a spatial tree per year."""

    def __init__(self, tiles: list[Tile]) -> None:
        self.by_year: dict[int, list[Tile]] = {}
        for t in tiles:
            self.by_year.setdefault(t.year, []).append(t)
        self._trees = {y: STRtree([t.footprint for t in ts]) for y, ts in self.by_year.items()}

    def lookup(self, footprint: shapely.Geometry, year: int) -> list[Tile]:
        """Tiles of `year` whose footprint intersects `footprint` (EPSG:4326)."""
        tree = self._trees.get(year)
        if tree is None:
            return []
        tiles = self.by_year[year]
        return [tiles[i] for i in sorted(tree.query(footprint, predicate="intersects"))]

    @property
    def years(self) -> list[int]:
        return sorted(self.by_year)


def _crs_of(row: dict[str, Any], path: str) -> str:
    crs = str(row.get("crs") or "").strip()
    if crs:
        return crs if ":" in crs else f"EPSG:{crs}"
    zone = str(row.get("utm_zone") or "").strip().upper()
    m = re.fullmatch(r"(\d{1,2})([NS])", zone) or _ZONE.search(path)
    if not m:
        raise ProviderError(f"the tile index row for {path!r} names no CRS or UTM zone; the index is not in "
                            "the published layout")
    return utm_epsg(int(m.group(1)), m.group(2).upper() == "N")


def _footprint(row: dict[str, Any]) -> shapely.Geometry:
    if row.get("WKT"):
        return shapely.wkt.loads(row["WKT"])
    if row.get("geometry") is not None:
        g = row["geometry"]
        return shapely.from_wkb(g) if isinstance(g, (bytes, bytearray)) else shapely.wkt.loads(str(g))
    keys = ("wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
    if all(row.get(k) not in (None, "") for k in keys):
        return shapely.box(*(float(row[k]) for k in keys))
    raise ProviderError("a tile index row has no footprint (WKT, geometry or wgs84_* bounds)")


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="", encoding="utf-8") as f:
        csv.field_size_limit(1 << 30)
        return list(csv.DictReader(f))


def parse_index(path: Path) -> TileIndex:
    """A TileIndex from a downloaded CSV or GeoParquet index file."""
    try:
        rows = _rows(path)
    except Exception as exc:
        raise ProviderError(f"the tile index {path.name} could not be read ({exc}); delete {path} to download "
                            "it again") from None
    tiles = []
    for row in rows:
        p = str(row.get("path") or row.get("location") or "")
        if not p or row.get("year") in (None, ""):
            continue
        tiles.append(Tile(int(row["year"]), p, _footprint(row), _crs_of(row, p)))
    if not tiles:
        raise ProviderError(f"the tile index {path.name} lists no tiles; delete {path} to download it again")
    return TileIndex(tiles)


# The one piece of state: parsed indexes, by URL (the download itself is cached on disk).
_INDEXES: dict[str, TileIndex] = {}
_LOCK = threading.Lock()


def load_index(remote: Remote, url: str, what: str) -> TileIndex:
    """The index at `url`: parsed once per process, downloaded once per machine."""
    with _LOCK:
        idx = _INDEXES.get(url)
        if idx is None:
            idx = _INDEXES[url] = parse_index(remote.cached(url, what))
        return idx


def clear_indexes() -> None:
    """Forget parsed indexes (the disk cache stays)."""
    with _LOCK:
        _INDEXES.clear()
