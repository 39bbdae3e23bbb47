"""Grid rasters in and analysis rasters out, for the analysis tools and Processing algorithms.

Everything here runs in QGIS's own Python with GDAL and numpy only (:mod:`grid_math` does the
maths); the engine is never imported. Text queries are the exception that needs a model: the
text is embedded by the engine's worker process and only the vector comes back.
Every output GeoTIFF is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osgeo import gdal, ogr, osr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsMapLayer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
)

if TYPE_CHECKING:
    import numpy as np

gdal.UseExceptions()

#: the GeoTIFF metadata item the engine writes a grid's provenance (model, …) into
META_ITEM = "eoembed_meta"


class AnalysisError(Exception):
    """An analysis could not be done; the message is one sentence for the user."""


@dataclass
class Grid:
    """An embedding raster read with GDAL: values ``(D, H, W)`` (NaN = no data) and its place."""

    values: np.ndarray
    geotransform: tuple[float, ...]
    crs_wkt: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.values.shape[1]), int(self.values.shape[2])

    def crs(self) -> QgsCoordinateReferenceSystem:
        return QgsCoordinateReferenceSystem.fromWkt(self.crs_wkt)


def raster_path(layer: QgsMapLayer) -> str:
    """The file behind a raster layer (GDAL layers only)."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        raise AnalysisError("choose an embedding raster (a GeoTIFF written by eoembed)")
    path = layer.source().split("|")[0]
    if not Path(path).is_file():
        raise AnalysisError(f"the raster {layer.name()!r} is not a local file ({path})")
    return path


def read_grid(path: str) -> Grid:
    """The embedding grid in a GeoTIFF (float32 ``(D, H, W)``, nodata as NaN)."""
    import numpy as np
    try:
        ds = gdal.Open(str(path))
    except RuntimeError as exc:
        raise AnalysisError(f"{Path(path).name} is not a readable raster ({exc})") from exc
    if ds.RasterCount < 2:
        raise AnalysisError(f"{Path(path).name} has one band; an embedding raster has one band per dimension")
    values = ds.ReadAsArray().astype(np.float32)
    for i in range(ds.RasterCount):
        nd = ds.GetRasterBand(i + 1).GetNoDataValue()
        if nd is not None and np.isfinite(nd):
            values[i][values[i] == nd] = np.nan
    try:
        meta = json.loads(ds.GetMetadataItem(META_ITEM) or "{}")
    except ValueError:
        meta = {}
    return Grid(values, tuple(ds.GetGeoTransform()), ds.GetProjection(), meta)


def grid_meta(path: str) -> dict[str, Any]:
    """The provenance the engine wrote into a grid GeoTIFF (model, …), without reading pixels."""
    try:
        return json.loads(gdal.Open(str(path)).GetMetadataItem(META_ITEM) or "{}")
    except (RuntimeError, ValueError):
        return {}


def _write(path: str | Path, data: np.ndarray, like: Grid, dtype: int, nodata: float,
           names: list[str], meta: dict[str, Any]) -> str:
    """Write ``(B, H, W)`` `data` on `like`'s cells as a GeoTIFF, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part.tif")
    b, h, w = data.shape
    try:
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp), w, h, b, dtype, ["COMPRESS=DEFLATE"])
        ds.SetGeoTransform(like.geotransform)
        ds.SetProjection(like.crs_wkt)
        for i in range(b):
            band = ds.GetRasterBand(i + 1)
            band.SetNoDataValue(nodata)
            band.SetDescription(names[i])
            band.WriteArray(data[i])
        ds.SetMetadataItem(META_ITEM, json.dumps(meta, default=str))
        ds.FlushCache()
        ds = None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


def write_map(values: np.ndarray, like: Grid, path: str | Path, band: str, analysis: dict[str, Any]) -> str:
    """A one-band float32 analysis raster (NaN = no data) on `like`'s cells."""
    import numpy as np
    meta = {**like.meta, "analysis": analysis}
    return _write(path, values[None].astype(np.float32), like, gdal.GDT_Float32, float("nan"), [band], meta)


def write_rgb(rgb: np.ndarray, like: Grid, path: str | Path) -> str:
    """A 3-band uint8 PCA view (0 = no data) on `like`'s cells."""
    return _write(path, rgb, like, gdal.GDT_Byte, 0, ["PC1", "PC2", "PC3"], {**like.meta, "analysis": "pca_rgb"})


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """'EPSG:xxxx' when the CRS has one, else its WKT."""
    auth = crs.authid()
    if auth.upper().startswith("EPSG:"):
        return auth
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def _to_grid(geom: QgsGeometry, crs: str | None, grid: Grid) -> QgsGeometry:
    """`geom` (in `crs`; None = the grid's) in the grid's CRS."""
    geom = QgsGeometry(geom)
    if crs:
        src = QgsCoordinateReferenceSystem(crs) if not crs.lstrip().startswith(("PROJCRS", "GEOGCRS", "PROJCS", "GEOGCS")) \
            else QgsCoordinateReferenceSystem.fromWkt(crs)
        dst = grid.crs()
        if src.isValid() and dst.isValid() and src != dst:
            geom.transform(QgsCoordinateTransform(src, dst, QgsProject.instance()))
    return geom


def reference_at(grid: Grid, x: float, y: float, crs: str | None = None) -> np.ndarray:
    """The vector of the cell containing (x, y) (in `crs`); AnalysisError outside or without data."""
    import numpy as np
    p = _to_grid(QgsGeometry.fromPointXY(QgsPointXY(x, y)), crs, grid).asPoint()
    x0, dx, _, y0, _, dy = grid.geotransform
    col, row = int(np.floor((p.x() - x0) / dx)), int(np.floor((p.y() - y0) / dy))
    h, w = grid.shape
    if not (0 <= row < h and 0 <= col < w):
        xs, ys = sorted((x0, x0 + w * dx)), sorted((y0, y0 + h * dy))
        raise AnalysisError(f"the point ({p.x():.2f}, {p.y():.2f}) is outside the grid (x {xs[0]:.2f}..{xs[1]:.2f}, "
                            f"y {ys[0]:.2f}..{ys[1]:.2f}); click inside the embedding raster")
    vec = grid.values[:, row, col]
    if not np.isfinite(vec).all():
        raise AnalysisError(f"the grid cell at ({p.x():.2f}, {p.y():.2f}) has no data; pick a cell that has values")
    return vec.astype(np.float64)


def geometry_mask(grid: Grid, geom: QgsGeometry, all_touched: bool = False) -> np.ndarray:
    """``(H, W)`` True for the cells whose centre lies in `geom` (grid CRS); GDAL rasterizes it."""
    h, w = grid.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(grid.geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(grid.crs_wkt)
    mem.SetProjection(grid.crs_wkt)
    vds = ogr.GetDriverByName("Memory").CreateDataSource("")
    lyr = vds.CreateLayer("ref", srs)
    feat = ogr.Feature(lyr.GetLayerDefn())
    feat.SetGeometry(ogr.CreateGeometryFromWkt(geom.asWkt(17)))
    lyr.CreateFeature(feat)
    gdal.RasterizeLayer(mem, [1], lyr, burn_values=[1], options=["ALL_TOUCHED=TRUE"] if all_touched else [])
    return mem.ReadAsArray().astype(bool)


def reference_in(grid: Grid, wkt: str, crs: str | None = None) -> np.ndarray:
    """Mean vector of the cells whose centres lie inside the geometry (every touched cell if none)."""
    from . import grid_math
    geom = _to_grid(QgsGeometry.fromWkt(wkt), crs, grid)
    if geom.isEmpty():
        raise AnalysisError("the reference geometry is empty; give a point or polygon inside the grid")
    if geom.type() == 0:  # points: the cell under the (first) point
        p = geom.asPoint() if not geom.isMultipart() else geom.asMultiPoint()[0]
        return reference_at(grid, p.x(), p.y())
    valid = grid_math.valid_cells(grid.values)
    inside = geometry_mask(grid, geom)
    if not (inside & valid).any():
        inside = geometry_mask(grid, geom, all_touched=True)
    try:
        return grid_math.mean_vector(grid.values, inside)
    except grid_math.GridMathError as exc:
        raise AnalysisError(str(exc)) from exc


def similarity_to_point(grid_path: str, x: float, y: float, crs: str | None, out_path: str | Path) -> str:
    """Cosine similarity of every cell to the cell at (x, y) (in `crs`), written to `out_path`."""
    from . import grid_math
    grid = read_grid(grid_path)
    ref = reference_at(grid, x, y, crs)
    sim = grid_math.cosine_similarity(grid.values, ref)
    return write_map(sim, grid, out_path, "similarity", {"kind": "cosine_similarity", "point": [x, y]})


def similarity_to_geometry(grid_path: str, wkt: str, crs: str | None, out_path: str | Path) -> str:
    """Cosine similarity of every cell to the mean vector of the cells inside a geometry."""
    from . import grid_math
    grid = read_grid(grid_path)
    sim = grid_math.cosine_similarity(grid.values, reference_in(grid, wkt, crs))
    return write_map(sim, grid, out_path, "similarity", {"kind": "cosine_similarity"})


def clusters(grid_path: str, k: int, seed: int, out_path: str | Path) -> str:
    """k-means classes of the grid's cells, written to `out_path`."""
    from . import grid_math
    grid = read_grid(grid_path)
    try:
        labels = grid_math.kmeans(grid.values, int(k), seed=int(seed))
    except grid_math.GridMathError as exc:
        raise AnalysisError(str(exc)) from exc
    return write_map(labels, grid, out_path, "cluster", {"kind": "kmeans", "k": int(k), "seed": int(seed)})


def pca_view(grid_path: str, out_path: str | Path) -> str:
    """A 3-band PCA colour view of the grid, written to `out_path`."""
    from . import grid_math
    grid = read_grid(grid_path)
    try:
        rgb = grid_math.pca_rgb(grid.values)
    except grid_math.GridMathError as exc:
        raise AnalysisError(str(exc)) from exc
    return write_rgb(rgb, grid, out_path)


def text_similarity(grid_path: str, text: str, out_path: str | Path, model: str | None = None) -> str:
    """Cosine similarity of every cell to a text prompt (CLIP models; the grid's own model).

    The text is embedded by the engine's worker process; the similarity is computed here.
    """
    import numpy as np

    from . import grid_math, settings
    from .runner import RunnerError, run_worker_command

    grid = read_grid(grid_path)
    made_by = grid.meta.get("model")
    model = model or made_by
    if not model:
        raise AnalysisError("the raster does not say which model made it; text queries need a CLIP grid")
    if made_by and made_by != model:
        raise AnalysisError(f"the grid was made by {made_by!r}, not {model!r}; text and image must share a CLIP model")
    try:
        res = run_worker_command(["--text", model, text], settings.engine_python(), timeout=600,
                                 env=settings.worker_extra_env())
    except RunnerError as exc:
        raise AnalysisError(str(exc)) from exc
    vec = np.asarray(res["vector"], dtype=np.float64)
    try:
        sim = grid_math.cosine_similarity(grid.values, vec)
    except grid_math.GridMathError as exc:
        raise AnalysisError(str(exc)) from exc
    return write_map(sim, grid, out_path, "similarity", {"kind": "text_similarity", "texts": [text]})
