"""Which rasters are imagery the engine may read, and why the others are left out (GDAL only).

The rules follow the engine's local provider (band names from descriptions, a ``BANDNAME`` tag
or a sidecar JSON, else the Sentinel-2 stack order by band count), and add what only QGIS can
know: the plugin's own outputs are never imagery, an 8-bit RGB picture is a quicklook, and three
unnamed bands count as Sentinel-2 true colour (B04, B03, B02) only when the user confirms it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal

gdal.UseExceptions()

#: band names the engine understands (Sentinel-2 bands and the scene classification)
S2_BAND = re.compile(r"^(B0?[1-9]|B1[0-2]|B8A|SCL)$", re.IGNORECASE)
#: unnamed stacks the engine reads by band count (its documented Sentinel-2 layouts)
STACK_COUNTS = {13: "B01–B12 with B10", 12: "B01–B12 without B10", 10: "B02–B12 without B01/B09/B10",
                4: "B02, B03, B04, B08"}
#: band descriptions of the plugin's and engine's outputs
OUTPUT_BANDS = re.compile(r"^(emb_\d+|PC[123]|similarity|cluster)$")
IMAGE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


@dataclass(frozen=True)
class Verdict:
    """What a raster is for the engine: usable, usable after the user confirms, or not, and why."""

    usable: bool
    reason: str
    needs_confirmation: bool = False


def classify(path: str | Path) -> Verdict:
    """Decide whether the raster file at `path` is Sentinel-2 imagery the engine can read."""
    name = Path(path).name
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as exc:
        return Verdict(False, f"{name}: GDAL cannot read it ({str(exc).splitlines()[0]})")
    if ds.GetMetadataItem("eoembed_meta") is not None:
        return Verdict(False, f"{name}: an eoembed output (embeddings or an analysis), not imagery")
    count = ds.RasterCount
    bands = [ds.GetRasterBand(i + 1) for i in range(count)]
    names = [b.GetDescription().strip() or (b.GetMetadataItem("BANDNAME") or "").strip() for b in bands]
    if names and all(OUTPUT_BANDS.match(n) for n in names):
        return Verdict(False, f"{name}: an eoembed output (bands {', '.join(names[:3])}…), not imagery")
    if count == 3 and bands[0].DataType == gdal.GDT_Byte and not all(S2_BAND.match(n or "") for n in names):
        return Verdict(False, f"{name}: an 8-bit RGB picture (a quicklook?), not reflectance")
    if not all(names):
        side = _sidecar_bands(Path(path))
        if side and len(side) == count:
            names = side
    if all(names) and names:
        bad = [n for n in names if not S2_BAND.match(n)]
        if bad:
            return Verdict(False, f"{name}: band names {', '.join(bad[:4])} are not Sentinel-2 bands")
        return Verdict(True, f"{name}: bands {', '.join(names[:4])}{'…' if count > 4 else ''}")
    band_in_name = Path(path).stem.rsplit("_", 1)[-1]
    if count == 1 and S2_BAND.match(band_in_name):
        return Verdict(True, f"{name}: one band, {band_in_name.upper()} (from the file name)")
    if count == 3:
        return Verdict(False, f"{name}: 3 unnamed bands; used as Sentinel-2 true colour (B04, B03, B02) "
                              "only if you confirm it", needs_confirmation=True)
    if count in STACK_COUNTS:
        return Verdict(True, f"{name}: {count} unnamed bands, read as the Sentinel-2 stack {STACK_COUNTS[count]}")
    return Verdict(False, f"{name}: {count} bands without names; add band descriptions (B02, B03, …) "
                          "or a sidecar JSON with \"bands\"")


def _sidecar_bands(path: Path) -> list[str]:
    side = path.with_suffix(path.suffix + ".json")
    if not side.is_file():
        side = path.with_suffix(".json")
    try:
        return [str(b) for b in json.loads(side.read_text()).get("bands") or []]
    except (OSError, ValueError, AttributeError):
        return []


def expand(paths: list[str]) -> list[str]:
    """Files and folders → the raster files inside (recursively), in a stable order."""
    out: list[str] = []
    for p in paths:
        pp = Path(p)
        if pp.is_dir():
            out += sorted(str(f) for f in pp.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            out.append(str(pp))
    return list(dict.fromkeys(out))


def usable_files(paths: list[str], confirmed: set[str] | None = None) -> tuple[list[str], list[str]]:
    """(files the engine may read, one reason per left-out file); `confirmed` 3-band files count."""
    keep, left_out = [], []
    for f in expand(paths):
        v = classify(f)
        if v.usable or (v.needs_confirmation and str(f) in (confirmed or set())):
            keep.append(f)
        else:
            left_out.append(v.reason)
    return keep, left_out
