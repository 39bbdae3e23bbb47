"""Grid rasters in and analysis rasters out, for the analysis tools and Processing algorithms.

The computations are :mod:`eoembed.analysis` (numpy only), run in QGIS's process on the grid
GeoTIFFs the engine wrote; every output is written atomically by the engine's GeoTIFF writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsMapLayer, QgsRasterLayer


class AnalysisError(Exception):
    """An analysis could not be done; the message is one sentence for the user."""


def raster_path(layer: QgsMapLayer) -> str:
    """The file behind a raster layer (GDAL layers only)."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        raise AnalysisError("choose an embedding raster (a GeoTIFF written by eoembed)")
    path = layer.source().split("|")[0]
    if not Path(path).is_file():
        raise AnalysisError(f"the raster {layer.name()!r} is not a local file ({path})")
    return path


def read_grid(path: str) -> Any:
    """The embedding grid in a GeoTIFF as an :class:`eoembed.Embedding`."""
    from eoembed.export import read_geotiff

    grid = read_geotiff(path)
    if grid.dim < 2:
        raise AnalysisError(f"{Path(path).name} has one band; an embedding raster has one band per dimension")
    return grid


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """'EPSG:xxxx' when the CRS has one, else its WKT."""
    auth = crs.authid()
    if auth.upper().startswith("EPSG:"):
        return auth
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def write_map(result: Any, path: str | Path) -> str:
    """Write a one-band analysis Embedding to `path` (GeoTIFF, atomically)."""
    from eoembed.export import write_geotiff

    return str(write_geotiff(result, path))


def similarity_to_point(grid_path: str, x: float, y: float, crs: str | None, out_path: str | Path) -> str:
    """Cosine similarity of every cell to the cell at (x, y) (in `crs`), written to `out_path`."""
    import eoembed

    grid = read_grid(grid_path)
    ref = eoembed.reference_at(grid, x, y, crs=crs)
    return write_map(eoembed.cosine_similarity_map(grid, ref), out_path)


def similarity_to_geometry(grid_path: str, wkt: str, crs: str | None, out_path: str | Path) -> str:
    """Cosine similarity of every cell to the mean vector of the cells inside a geometry."""
    import eoembed

    grid = read_grid(grid_path)
    ref = eoembed.reference_in(grid, wkt, crs=crs)
    return write_map(eoembed.cosine_similarity_map(grid, ref), out_path)


def clusters(grid_path: str, k: int, seed: int, out_path: str | Path) -> str:
    """k-means classes of the grid's cells, written to `out_path`."""
    import eoembed

    return write_map(eoembed.kmeans(read_grid(grid_path), k, seed=seed), out_path)


def text_similarity(grid_path: str, text: str, out_path: str | Path, model: str | None = None) -> str:
    """Cosine similarity of every cell to a text prompt (CLIP models; the grid's own model)."""
    import eoembed

    grid = read_grid(grid_path)
    model = model or grid.meta.get("model")
    if not model:
        raise AnalysisError("the raster does not say which model made it; text queries need a CLIP grid")
    return write_map(eoembed.text_similarity_map(model, grid, text), out_path)
