"""Band catalogues of the sensors eoembed reads, so that band names mean one thing everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError


@dataclass(frozen=True)
class Band:
    """One spectral band: canonical name, native ground sampling distance and centre wavelength."""

    name: str
    resolution_m: float
    wavelength_nm: float | None = None
    description: str = ""


SENTINEL2_L2A: tuple[Band, ...] = (
    Band("B01", 60, 443, "coastal aerosol"),
    Band("B02", 10, 490, "blue"),
    Band("B03", 10, 560, "green"),
    Band("B04", 10, 665, "red"),
    Band("B05", 20, 705, "red edge 1"),
    Band("B06", 20, 740, "red edge 2"),
    Band("B07", 20, 783, "red edge 3"),
    Band("B08", 10, 842, "near infrared"),
    Band("B8A", 20, 865, "narrow near infrared"),
    Band("B09", 60, 945, "water vapour"),
    Band("B10", 60, 1375, "cirrus (L1C only)"),
    Band("B11", 20, 1610, "short-wave infrared 1"),
    Band("B12", 20, 2190, "short-wave infrared 2"),
    Band("SCL", 20, None, "scene classification (L2A)"),
)
S2_BANDS: dict[str, Band] = {b.name: b for b in SENTINEL2_L2A}

# Band layouts of multi-band S2 stacks that carry no band names, keyed by band count.
S2_STACK_LAYOUTS: dict[int, tuple[str, ...]] = {
    13: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    12: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    10: ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    4: ("B02", "B03", "B04", "B08"),
    3: ("B04", "B03", "B02"),
}

#: Scene classification (SCL) classes that are not clear ground: no data, saturated or defective,
#: cloud shadow, cloud (medium and high probability) and thin cirrus.
SCL_INVALID: tuple[int, ...] = (0, 1, 3, 8, 9, 10)

_ALIASES = {
    "blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "nir08": "B8A",
    "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "swir16": "B11", "swir22": "B12",
    "coastal": "B01", "watervapor": "B09", "cirrus": "B10", "scl": "SCL",
}
#: Collections eoembed names, and the id each source knows them by. Only Sentinel-2 L2A is
#: read today; the others are recognised so that requests naming them get a clear answer.
COLLECTION_IDS: dict[str, dict[str, str]] = {
    "sentinel-2-l2a": {"local": "sentinel-2-l2a", "stac": "sentinel-2-l2a", "gee": "COPERNICUS/S2_SR_HARMONIZED"},
    "sentinel-2-l1c": {"local": "sentinel-2-l1c", "stac": "sentinel-2-l1c", "gee": "COPERNICUS/S2_HARMONIZED"},
    "sentinel-1-grd": {"local": "sentinel-1-grd", "stac": "sentinel-1-grd", "gee": "COPERNICUS/S1_GRD"},
    "landsat-c2-l2": {"local": "landsat-c2-l2", "stac": "landsat-c2-l2", "gee": "LANDSAT/LC09/C02/T1_L2"},
}
COLLECTIONS = tuple(COLLECTION_IDS)
#: Collections whose pixels eoembed's providers can deliver.
READABLE_COLLECTIONS = ("sentinel-2-l2a",)

# Other names of the same collections: Earth Engine ids and short names (lower case).
_COLLECTION_ALIASES = {
    "copernicus/s2_sr_harmonized": "sentinel-2-l2a", "copernicus/s2_sr": "sentinel-2-l2a",
    "s2": "sentinel-2-l2a", "s2-l2a": "sentinel-2-l2a", "s2_l2a": "sentinel-2-l2a", "sentinel-2": "sentinel-2-l2a",
    "copernicus/s2_harmonized": "sentinel-2-l1c", "copernicus/s2": "sentinel-2-l1c", "s2-l1c": "sentinel-2-l1c",
    "copernicus/s1_grd": "sentinel-1-grd", "s1": "sentinel-1-grd", "sentinel-1": "sentinel-1-grd",
    "landsat/lc08/c02/t1_l2": "landsat-c2-l2", "landsat/lc09/c02/t1_l2": "landsat-c2-l2",
    "landsat/le07/c02/t1_l2": "landsat-c2-l2", "landsat/lt05/c02/t1_l2": "landsat-c2-l2",
}


def normalize_collection(name: str) -> str:
    """eoembed's name of a collection given by its own name, an Earth Engine id or a short name."""
    key = str(name).strip()
    low = key.lower()
    if low in COLLECTION_IDS:
        return low
    if low in _COLLECTION_ALIASES:
        return _COLLECTION_ALIASES[low]
    raise SpecError(
        f"collection={name!r} is not supported; use one of {', '.join(COLLECTIONS)} or an Earth Engine id "
        "such as 'COPERNICUS/S2_SR_HARMONIZED' (or 'hf:<repo>' / a checkpoint path to choose weights)"
    )


def normalize_band(name: str) -> str:
    """Canonical S2 band name for `name`: 'b2', 'B2', 'B02', 'blue' all give 'B02'."""
    key = str(name).strip()
    low = key.lower().replace("_", "").replace("-", "")
    if low in _ALIASES:
        return _ALIASES[low]
    up = key.upper()
    if up in S2_BANDS:
        return up
    if up.startswith("B") and up[1:].isdigit() and len(up) <= 3:
        padded = f"B{int(up[1:]):02d}"
        if padded in S2_BANDS:
            return padded
    raise SpecError(
        f"band {name!r} is not a Sentinel-2 band; use one of {', '.join(S2_BANDS)}"
    )
