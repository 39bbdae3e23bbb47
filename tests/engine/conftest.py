"""Shared fixtures of the engine tests: the shared data folder and small synthetic GeoTIFFs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`<repo>/../shared`, or skip when this checkout has none."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED.resolve()


@pytest.fixture(scope="session")
def real_tiles(shared_dir: Path) -> list[Path]:
    """The real Sentinel-2 L2A tiles in ../shared/data/s2_l2a_tiles (skip when absent)."""
    tiles = sorted((shared_dir / "data" / "s2_l2a_tiles").glob("*.tif"))
    if not tiles:
        pytest.skip("../shared/data/s2_l2a_tiles holds no tiles")
    return tiles


WriteTiff = Callable[..., Path]


def write_tiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32633",
    transform: Affine | None = None,
    nodata: float | None = None,
    tags: dict[str, Any] | None = None,
    descriptions: Sequence[str] | None = None,
    sidecar: dict[str, Any] | None = None,
) -> Path:
    """Write `data` ``(C, H, W)`` (or ``(H, W)``) as a GeoTIFF with the given georeferencing."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    c, h, w = arr.shape
    transform = transform or Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=c, dtype=arr.dtype.name,
        crs=crs, transform=transform, nodata=nodata,
    ) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    if sidecar is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path


@pytest.fixture(scope="session")
def tiff_writer() -> Callable[..., Path]:
    """The writer itself, ``tiff_writer(path, data, ...)``, for fixtures with a wider scope."""
    return write_tiff


@pytest.fixture
def make_tiff(tmp_path: Path) -> WriteTiff:
    """Factory: ``make_tiff("name.tif", data, crs=..., transform=..., tags=...)`` in tmp_path."""

    def make(name: str, data: np.ndarray, **kwargs: Any) -> Path:
        return write_tiff(tmp_path / name, data, **kwargs)

    return make

