"""Jobs from QGIS state: snapshot the selected features and build the worker's job dict.

The snapshot is taken when the task is created (on the main thread), so later edits or a new
selection cannot change a running job. Nothing here touches widgets.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsFeatureRequest,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)

from . import imagery

OUTPUTS = ("pooled", "grid", "grid_extent")
SOURCES = ("project", "local", "stac", "gee")


def suitability(layer: QgsMapLayer | None) -> str | None:
    """Why `layer`'s selection cannot be embedded, or None when it can (the action's tooltip)."""
    if layer is None:
        return "Select a point or polygon layer in the Layers panel first"
    if not isinstance(layer, QgsVectorLayer):
        return f"The active layer {layer.name()!r} is not a vector layer; choose a point or polygon layer"
    if layer.geometryType() not in (QgsWkbTypes.PointGeometry, QgsWkbTypes.PolygonGeometry):
        return f"Layer {layer.name()!r} holds lines; eoembed embeds points and polygons"
    if not layer.crs().isValid():
        return f"Layer {layer.name()!r} has no CRS; set one in its properties"
    if layer.selectedFeatureCount() == 0:
        return f"Select the features of {layer.name()!r} to embed"
    return None


def snapshot(layer: QgsVectorLayer, id_field: str | None = None) -> list[dict[str, str]]:
    """The selected features as ``{"id", "wkt", "fid"}`` in the layer's CRS (empty geometries skipped).

    `id_field` names the attribute that identifies a feature; None uses the feature id. Ids are
    made unique: a repeated value gets ``_2``, ``_3`` …; an empty one becomes ``fid<feature id>``.
    """
    names = layer.fields().names()
    use_field = id_field if id_field and id_field in names else None
    request = QgsFeatureRequest().setFilterFids(layer.selectedFeatureIds())
    if use_field is None:
        request.setNoAttributes()
    items = []
    seen: set[str] = set()
    for f in layer.getFeatures(request):
        g = f.geometry()
        if g is None or g.isEmpty():
            continue
        value = f[use_field] if use_field else f.id()
        fid = str(value) if value not in (None, "") and str(value) != "NULL" else f"fid{f.id()}"
        base, n = fid, 1
        while fid in seen:  # duplicate ids get a suffix, so every output name is unique
            n += 1
            fid = f"{base}_{n}"
        seen.add(fid)
        items.append({"id": fid, "wkt": g.asWkt(precision=17), "fid": int(f.id())})
    items.sort(key=lambda it: it["id"])
    return items


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """'EPSG:xxxx' when the CRS has an authority id, else its WKT (what pyproj reads)."""
    auth = crs.authid()
    if auth and auth.upper().startswith("EPSG:"):
        return auth
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT2_2019)


def raster_layer_paths(layer_ids: list[str] | None = None, confirmed: list[str] | None = None,
                       left_out: list[str] | None = None) -> list[str]:
    """File paths of the project's (chosen) raster layers that are imagery the engine can read.

    The plugin's own outputs and rasters whose bands cannot be identified are left out (their
    reasons appended to `left_out`); 3 unnamed bands count only for layer ids in `confirmed`.
    """
    paths = []
    for lyr in QgsProject.instance().mapLayers().values():
        if not isinstance(lyr, QgsRasterLayer) or lyr.providerType() != "gdal":
            continue
        if layer_ids is not None and lyr.id() not in layer_ids:
            continue
        path = lyr.source().split("|")[0]
        if not Path(path).is_file() or path in paths:
            continue
        v = imagery.classify(path)
        if v.usable or (v.needs_confirmation and lyr.id() in (confirmed or [])):
            paths.append(path)
        elif left_out is not None:
            left_out.append(v.reason)
    return paths


def source_dict(options: dict[str, Any], left_out: list[str] | None = None) -> dict[str, Any]:
    """The job's imagery source from the dialog's options (unusable rasters left out, see imagery)."""
    kind = options.get("source", "project")
    if kind == "project":
        return {"kind": "local", "paths": raster_layer_paths(options.get("raster_layers"),
                                                             options.get("confirmed_rgb"), left_out)}
    if kind == "local":
        keep, out = imagery.usable_files([p for p in options.get("local_paths", []) if p],
                                         set(options.get("confirmed_rgb_files") or []))
        if left_out is not None:
            left_out += out
        return {"kind": "local", "paths": keep}
    if kind == "stac":
        return {"kind": "stac", "url": options.get("stac_url") or "earth-search"}
    if kind == "gee":
        return {"kind": "gee", "project": options.get("ee_project") or None}
    raise ValueError(f"source {kind!r} must be one of {', '.join(SOURCES)}")


def temporal_dict(options: dict[str, Any]) -> dict[str, str] | None:
    """``{"start", "end"}`` (end excluded) from 'year' / 'range' options, or None for all dates."""
    mode = options.get("time_mode", "all")
    if mode == "year":
        y = int(options["year"])
        return {"start": f"{y:04d}-01-01", "end": f"{y + 1:04d}-01-01"}
    if mode == "range":
        return {"start": str(options["start"]), "end": str(options["end"])}
    return None


def build_job(layer: QgsVectorLayer, options: dict[str, Any], places: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The worker's job dict for the selection of `layer` (snapshotted now unless given)."""
    if options.get("output", "pooled") not in OUTPUTS:
        raise ValueError(f"output {options.get('output')!r} must be one of {', '.join(OUTPUTS)}")
    places = snapshot(layer, options.get("id_field")) if places is None else places
    model = options.get("model", "rcf")
    safe_layer = "".join(c if c.isalnum() else "_" for c in layer.name())[:40] or "layer"
    name = options.get("name") or f"{safe_layer}_{model}_{time.strftime('%Y%m%d_%H%M%S')}"
    left_out: list[str] = []
    source = source_dict(options, left_out)
    return {
        "layer_id": layer.id(),
        "left_out": left_out,
        "model": model,
        "model_config": dict(options.get("model_config") or {}),
        "weights": options.get("weights") or None,
        "places": places,
        "crs": crs_text(layer.crs()),
        "buffer_m": float(options.get("buffer_m", 320.0)),
        "temporal": temporal_dict(options),
        "output": options.get("output", "pooled"),
        "source": source,
        "device": options.get("device") or "cpu",
        "out_dir": str(options.get("out_dir") or Path.home() / "eoembed"),
        "name": name,
    }


def estimate(layer: QgsVectorLayer, job: dict[str, Any], scale_m: float = 10.0) -> dict[str, float]:
    """Items and pixels the job will fetch (per band, before compositing), for the confirm box."""
    da = QgsDistanceArea()
    da.setSourceCrs(layer.crs(), QgsProject.instance().transformContext())
    da.setEllipsoid("WGS84")
    from qgis.core import QgsGeometry

    side = 2 * job["buffer_m"] / scale_m
    pixels = 0.0
    extent = QgsRectangle()
    extent.setMinimal()
    for it in job["places"]:
        g = QgsGeometry.fromWkt(it["wkt"])
        box = g.boundingBox()
        if g.type() == QgsWkbTypes.PointGeometry:
            pixels += side * side
        else:
            pixels += da.measureArea(QgsGeometry.fromRect(box)) / (scale_m * scale_m)
        extent.combineExtentWith(box)
    if job["output"] == "grid_extent" and job["places"]:
        pad = _degrees_or_metres(layer, job["buffer_m"], extent)
        grown = QgsRectangle(extent)
        grown.grow(pad)
        pixels = da.measureArea(QgsGeometry.fromRect(grown)) / (scale_m * scale_m)
    return {"items": float(len(job["places"])), "pixels": float(math.ceil(pixels))}


def _degrees_or_metres(layer: QgsVectorLayer, metres: float, extent: QgsRectangle) -> float:
    if not layer.crs().isGeographic():
        return metres
    wgs = QgsCoordinateReferenceSystem("EPSG:4326")
    tr = QgsCoordinateTransform(layer.crs(), wgs, QgsProject.instance())
    c = tr.transform(extent.center())
    return metres / (111_320.0 * max(math.cos(math.radians(c.y())), 0.01))
