"""Results on the map: pooled vectors as a vector layer, grids as styled raster layers in a group.

PCA-RGB styling — the choice made: a raster renderer cannot compute principal components, so
the worker writes, beside each embedding GeoTIFF, a small 3-band uint8 GeoTIFF of the first
three principal components (one basis and one 2–98 % stretch shared by all grids of a run, so
colours compare between features). The group holds, per grid, that PCA-RGB layer (visible,
multiband colour renderer on bands 1-2-3) above the embedding layer itself (all D dims as bands,
hidden by default; it is the one to analyse). Both share the same grid, so they overlay exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsLayerTreeGroup,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .styles import style_pca_rgb


def group_name(model: str) -> str:
    """The layer group a model's results go to."""
    return f"eoembed — {model}"


def result_group(model: str, project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """The group for `model`'s results at the top of the layer tree (created when missing)."""
    root = (project or QgsProject.instance()).layerTreeRoot()
    group = root.findGroup(group_name(model))
    if group is None:
        group = root.insertGroup(0, group_name(model))
    return group


def _add(layer: Any, group: QgsLayerTreeGroup, visible: bool = True, project: QgsProject | None = None) -> Any:
    if not layer.isValid():
        raise RuntimeError(f"QGIS could not open {layer.source()}")
    (project or QgsProject.instance()).addMapLayer(layer, False)
    node = group.insertLayer(0, layer)
    node.setItemVisibilityChecked(visible)
    return layer


def pooled_layer(path: str, name: str) -> QgsVectorLayer:
    """The pooled GeoPackage as a vector layer: the features with id, model and e0…e{D-1}."""
    p = Path(path)
    uri = f"{p}|layername={p.stem}" if p.suffix.lower() == ".gpkg" else str(p)
    return QgsVectorLayer(uri, name, "ogr")


def grid_layers(grid: dict[str, Any], prefix: str) -> tuple[QgsRasterLayer | None, QgsRasterLayer]:
    """(PCA-RGB display layer or None, embedding layer) for one grid of the result."""
    emb = QgsRasterLayer(grid["path"], f"{prefix}{grid['id']} — embedding", "gdal")
    pca = None
    if grid.get("pca_path"):
        pca = QgsRasterLayer(grid["pca_path"], f"{prefix}{grid['id']} — PCA-RGB", "gdal")
        if pca.isValid():
            style_pca_rgb(pca)
    return pca, emb


def add_results(result: dict[str, Any], job: dict[str, Any], project: QgsProject | None = None) -> list[Any]:
    """Add a runner result to the project; returns the layers added (top first)."""
    model = str(result.get("model") or job.get("model"))
    group = result_group(model, project)
    added: list[Any] = []
    if result.get("pooled"):
        added.append(_add(pooled_layer(result["pooled"], f"{job['name']} (pooled)"), group, project=project))
    prefix = "" if len(result.get("grids", [])) > 1 else f"{job['name']} "
    for grid in reversed(result.get("grids", [])):
        pca, emb = grid_layers(grid, prefix)
        added.append(_add(emb, group, visible=pca is None or not pca.isValid(), project=project))
        if pca is not None and pca.isValid():
            added.append(_add(pca, group, project=project))
    return added
