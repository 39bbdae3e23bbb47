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
COLLECTIONS = ("sentinel-2-l2a",)


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
