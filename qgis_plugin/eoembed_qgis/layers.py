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


def copy_attributes(pooled: QgsVectorLayer, source: QgsVectorLayer, places: list[dict[str, Any]]) -> int:
    """Give the pooled layer the source features' own attributes (matched by feature id).

    Source fields whose names clash with the pooled layer's (id, model, e0…) get a ``src_``
    prefix. Returns the number of features updated.
    """
    from qgis.core import QgsFeatureRequest, QgsField

    fid_of = {str(p["id"]): int(p["fid"]) for p in places if "fid" in p}
    if not fid_of or not pooled.isValid():
        return 0
    taken = set(pooled.fields().names())
    names = []
    new_fields = []
    for f in source.fields():
        name = f.name() if f.name() not in taken else f"src_{f.name()}"
        names.append(name)
        new_fields.append(QgsField(name, f.type(), f.typeName(), f.length(), f.precision()))
    prov = pooled.dataProvider()
    if not prov.addAttributes(new_fields):
        return 0
    pooled.updateFields()
    index = [pooled.fields().indexOf(n) for n in names]
    wanted = set(fid_of.values())
    src = {f.id(): f.attributes() for f in source.getFeatures(QgsFeatureRequest().setFilterFids(list(wanted)))}
    changes = {}
    for feat in pooled.getFeatures():
        fid = fid_of.get(str(feat["id"]))
        if fid in src:
            changes[feat.id()] = dict(zip(index, src[fid]))
    prov.changeAttributeValues(changes)
    return len(changes)


def add_results(result: dict[str, Any], job: dict[str, Any], project: QgsProject | None = None,
                source: QgsVectorLayer | None = None) -> list[Any]:
    """Add a runner result to the project; returns the layers added (top first).

    Pooled vectors keep the `source` features' attributes. Several grids go into a group of
    their own with only the PCA views visible, the embedding rasters in a hidden sub-group.
    """
    model = str(result.get("model") or job.get("model"))
    group = result_group(model, project)
    added: list[Any] = []
    if result.get("pooled"):
        pooled = pooled_layer(result["pooled"], f"{job['name']} (pooled)")
        if source is not None:
            copy_attributes(pooled, source, job.get("places") or [])
        added.append(_add(pooled, group, project=project))
    grids = result.get("grids", [])
    if len(grids) > 1:
        group = group.insertGroup(0, f"{job['name']} — {len(grids)} grids")
        emb_group = group.addGroup("embeddings (for analysis)")
        emb_group.setItemVisibilityChecked(False)
        emb_group.setExpanded(False)
    else:
        emb_group = group
    prefix = "" if len(grids) > 1 else f"{job['name']} "
    for grid in reversed(grids):
        pca, emb = grid_layers(grid, prefix)
        added.append(_add(emb, emb_group, visible=(pca is None or not pca.isValid()) and len(grids) == 1,
                          project=project))
        if pca is not None and pca.isValid():
            added.append(_add(pca, group, project=project))
    return added
