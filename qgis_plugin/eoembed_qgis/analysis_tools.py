"""Map tools on embedding rasters: similarity to a clicked point or to features, text queries.

The plugin adds the actions with :func:`add_analysis_actions`; the functions below them do the
work and are usable (and tested) without a GUI. Each result is a GeoTIFF written beside the
embedding raster and added, styled, to the model's layer group.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsGeometry,
    QgsMapLayer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
    QgsVectorLayer,
)
from qgis.gui import QgsMapToolEmitPoint
from qgis.PyQt.QtWidgets import QInputDialog

from . import analysis_io, messages
from .analysis_io import AnalysisError
from .compat import QAction
from .icons import icon
from .layers import result_group
from .styles import style_clusters, style_similarity

#: fewest bands a raster needs to count as an embedding grid (PCA views have 3)
MIN_GRID_BANDS = 4


def is_grid_layer(layer: QgsMapLayer | None) -> bool:
    """True for a GeoTIFF raster layer with one band per embedding dimension."""
    return (isinstance(layer, QgsRasterLayer) and layer.isValid() and layer.providerType() == "gdal"
            and layer.bandCount() >= MIN_GRID_BANDS)


def find_grid_layer(active: QgsMapLayer | None, project: QgsProject | None = None) -> QgsRasterLayer | None:
    """The embedding raster to analyse: the active layer if it is one, else the topmost one."""
    if is_grid_layer(active):
        return active  # type: ignore[return-value]
    root = (project or QgsProject.instance()).layerTreeRoot()
    for node in root.findLayers():
        if is_grid_layer(node.layer()):
            return node.layer()
    return None


def _out_path(grid: QgsRasterLayer, kind: str, out_dir: str | Path | None) -> Path:
    src = Path(analysis_io.raster_path(grid))
    folder = Path(out_dir) if out_dir else src.parent
    return folder / f"{src.stem}_{kind}_{uuid.uuid4().hex[:6]}.tif"


def _model_of(grid: QgsRasterLayer) -> str:
    with contextlib.suppress(Exception):
        return str(analysis_io.grid_meta(analysis_io.raster_path(grid)).get("model") or "analysis")
    return "analysis"


def add_result_layer(path: str, name: str, kind: str, model: str, project: QgsProject | None = None,
                     k: int | None = None) -> QgsRasterLayer:
    """Open an analysis raster, style it (similarity ramp or cluster palette), add it on top."""
    layer = QgsRasterLayer(path, name, "gdal")
    if not layer.isValid():
        raise AnalysisError(f"QGIS could not open the result {path}")
    if kind == "clusters":
        style_clusters(layer, k)
    else:
        style_similarity(layer)
    project = project or QgsProject.instance()
    project.addMapLayer(layer, False)
    result_group(model, project).insertLayer(0, layer)
    return layer


def similarity_from_point(grid: QgsRasterLayer, point: QgsPointXY, crs: QgsCoordinateReferenceSystem,
                          project: QgsProject | None = None, out_dir: str | Path | None = None) -> QgsRasterLayer:
    """Similarity of every cell of `grid` to the cell under `point` (in `crs`), as a new layer."""
    out = _out_path(grid, "similarity", out_dir)
    try:
        path = analysis_io.similarity_to_point(analysis_io.raster_path(grid), point.x(), point.y(),
                                               analysis_io.crs_text(crs), out)
    except ValueError as exc:  # GridMathError: a reference without data
        raise AnalysisError(str(exc)) from exc
    name = f"similarity to ({point.x():.0f}, {point.y():.0f})"
    return add_result_layer(path, name, "similarity", _model_of(grid), project)


def similarity_from_features(grid: QgsRasterLayer, features: QgsVectorLayer, selected_only: bool = True,
                             project: QgsProject | None = None, out_dir: str | Path | None = None) -> QgsRasterLayer:
    """Similarity of every cell of `grid` to the mean vector of the cells under the features."""
    feats = list(features.getSelectedFeatures() if selected_only else features.getFeatures())
    geoms = [f.geometry() for f in feats if f.hasGeometry()]
    if not geoms:
        what = "selected " if selected_only else ""
        raise AnalysisError(f"{features.name()!r} has no {what}features to compare with; select some")
    wkt = QgsGeometry.unaryUnion(geoms).asWkt(17)
    out = _out_path(grid, "similarity", out_dir)
    try:
        path = analysis_io.similarity_to_geometry(analysis_io.raster_path(grid), wkt,
                                                  analysis_io.crs_text(features.crs()), out)
    except ValueError as exc:
        raise AnalysisError(str(exc)) from exc
    name = f"similarity to {len(geoms)} feature(s) of {features.name()}"
    return add_result_layer(path, name, "similarity", _model_of(grid), project)


def text_query_file(grid_path: str, text: str, out_path: str | Path) -> str:
    """Write the similarity of every cell to `text` (the grid's CLIP model); no Qt objects used,
    so it can run in a background task.

    Raises AnalysisError with one sentence when the model has no text encoder or its weights
    cannot be loaded.
    """
    if not text or not text.strip():
        raise AnalysisError("type what to look for, e.g. 'a solar farm'")
    try:
        return analysis_io.text_similarity(grid_path, text.strip(), out_path)
    except AnalysisError:
        raise
    except Exception as exc:  # CapabilityError, WeightsError, ModelError: all one sentence
        raise AnalysisError(messages.first_sentence(str(exc))) from exc


def text_query(grid: QgsRasterLayer, text: str, project: QgsProject | None = None,
               out_dir: str | Path | None = None) -> QgsRasterLayer:
    """Similarity of every cell to a text prompt, added as a layer (synchronous)."""
    path = text_query_file(analysis_io.raster_path(grid), text, _out_path(grid, "text", out_dir))
    return add_result_layer(path, f"“{text.strip()}”", "similarity", _model_of(grid), project)


class SimilarityMapTool(QgsMapToolEmitPoint):
    """Click on the map: the similarity of every cell of the embedding raster to the clicked cell."""

    def __init__(self, iface: Any) -> None:
        super().__init__(iface.mapCanvas())
        self.iface = iface

    def canvasReleaseEvent(self, event: Any) -> None:  # noqa: N802
        grid = find_grid_layer(self.iface.activeLayer())
        if grid is None:
            messages.error(self.iface, "there is no embedding raster to compare with; run Embed area first")
            return
        point = self.toMapCoordinates(event.pos())
        crs = self.canvas().mapSettings().destinationCrs()
        try:
            similarity_from_point(grid, point, crs)
        except Exception as exc:
            messages.error(self.iface, str(exc))


class AnalysisActions:
    """The analysis actions in the toolbar and menu, and what they need to stay alive."""

    def __init__(self, iface: Any, toolbar: Any = None, menu: Any = None) -> None:
        self.iface, self.toolbar, self.menu = iface, toolbar, menu
        parent = iface.mainWindow()
        self.tool = SimilarityMapTool(iface)
        self.point_action = QAction(icon("similarity_point"), "Similarity from a clicked point", parent)
        self.point_action.setObjectName("eoembedSimilarityPoint")
        self.point_action.setCheckable(True)
        self.point_action.triggered.connect(self.activate_tool)
        self.tool.setAction(self.point_action)
        self.features_action = QAction(icon("similarity_features"), "Similarity to the selected features", parent)
        self.features_action.setObjectName("eoembedSimilarityFeatures")
        self.features_action.triggered.connect(self.from_selection)
        self.text_action = QAction(icon("text"), "Find by text (CLIP models)…", parent)
        self.text_action.setObjectName("eoembedTextQuery")
        self.text_action.triggered.connect(self.ask_text)
        self.actions = [self.point_action, self.features_action, self.text_action]
        self.tasks: list[QgsTask] = []
        for a in self.actions:
            if toolbar is not None:
                toolbar.addAction(a)
            else:
                iface.addToolBarIcon(a)
            if isinstance(menu, str):
                iface.addPluginToMenu(menu, a)
            elif menu is not None:
                menu.addAction(a)

    def activate_tool(self) -> None:
        self.iface.mapCanvas().setMapTool(self.tool)

    def _vector_and_grid(self) -> tuple[QgsVectorLayer, QgsRasterLayer] | None:
        vec = self.iface.activeLayer()
        if not isinstance(vec, QgsVectorLayer) or vec.selectedFeatureCount() == 0:
            messages.error(self.iface, "select the reference features in the active vector layer first")
            return None
        grid = find_grid_layer(None)
        if grid is None:
            messages.error(self.iface, "there is no embedding raster to compare with; run Embed area first")
            return None
        return vec, grid

    def from_selection(self) -> None:
        pair = self._vector_and_grid()
        if pair is None:
            return
        try:
            similarity_from_features(pair[1], pair[0])
        except Exception as exc:
            messages.error(self.iface, str(exc))

    def ask_text(self) -> None:
        grid = find_grid_layer(self.iface.activeLayer())
        if grid is None:
            messages.error(self.iface, "there is no embedding raster to search; run Embed area with a CLIP model")
            return
        text, ok = QInputDialog.getText(self.iface.mainWindow(), "eoembed", "Find places that look like:")
        if ok and text.strip():
            self.start_text_query(grid, text)

    def start_text_query(self, grid: QgsRasterLayer, text: str) -> QgsTask:
        """Run the text query in a background task (loading a CLIP text encoder takes a while)."""
        path_holder: dict[str, str] = {}
        model = _model_of(grid)
        grid_path, out = analysis_io.raster_path(grid), _out_path(grid, "text", None)

        def work(task: QgsTask) -> str:  # a worker thread: plain paths only, no layers
            path_holder["path"] = text_query_file(grid_path, text, out)
            return path_holder["path"]

        def done(exception: Exception | None, result: Any = None) -> None:
            if exception is not None:
                messages.error(self.iface, str(exception))
            elif path_holder.get("path"):
                add_result_layer(path_holder["path"], f"“{text.strip()}”", "similarity", model)
            with contextlib.suppress(ValueError):
                self.tasks.remove(task)

        task = QgsTask.fromFunction(f"eoembed text query “{text}”", work, on_finished=done)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def unload(self) -> None:
        """Remove the actions and the map tool (call from the plugin's unload)."""
        canvas = self.iface.mapCanvas()
        if canvas is not None and canvas.mapTool() is self.tool:
            canvas.unsetMapTool(self.tool)
        for a in self.actions:
            if self.toolbar is not None:
                self.toolbar.removeAction(a)
            else:
                self.iface.removeToolBarIcon(a)
            if isinstance(self.menu, str):
                self.iface.removePluginMenu(self.menu, a)
            elif self.menu is not None:
                self.menu.removeAction(a)
        for t in list(self.tasks):
            with contextlib.suppress(RuntimeError):
                t.cancel()


def add_analysis_actions(iface: Any, toolbar: Any = None, menu: Any = None) -> AnalysisActions:
    """Add the analysis actions to `toolbar` (a QToolBar; None: the plugins toolbar) and `menu`
    (a QMenu, or a plugin menu name such as "&eoembed"). Keep the returned object and call its
    ``unload()`` when the plugin unloads."""
    return AnalysisActions(iface, toolbar, menu)
