"""Screenshots of the real QGIS window with the plugin, for the README (runs inside QGIS).

    bash scripts/screenshot_qgis_window.sh        # Xvfb + qgis --code this file

Inside QGIS (``iface`` is QGIS's own): adds a Sentinel-2 tile, a layer of points on it, selects
them, runs *Embed selected features* (one grid per feature, model rcf) through the enabled plugin,
waits for the task, then grabs the main window and the Embed dialog with QScreen.grabWindow into
resources/. Quits QGIS when done. Needs ../shared/data.
"""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

REPO = Path(os.environ.get("EOEMBED_REPO", Path.cwd()))
OUT = REPO / "resources"
TILE = REPO / ".." / "shared" / "data" / "s2_l2a_tiles" / "rgb" / "637U_59R_1_3.tif"
STACK = REPO / ".." / "shared" / "data" / "s2_l2a_tiles" / "637U_59R_1_3.tif"
STATE: dict = {}


def grab(name: str, widget=None) -> None:
    widget = widget or iface.mainWindow()
    screen = QgsApplication.primaryScreen()
    screen.grabWindow(widget.winId()).save(str(OUT / name))
    print(f"saved {OUT / name}", flush=True)


def start() -> None:
    from qgis.PyQt.QtCore import Qt

    win = iface.mainWindow()
    win.resize(1600, 1000)
    win.addToolBarBreak(Qt.TopToolBarArea)
    win.addToolBar(Qt.TopToolBarArea, iface.pluginToolBar())  # the plugin's buttons on a row of their own
    iface.pluginToolBar().setVisible(True)
    project = QgsProject.instance()
    rgb = QgsRasterLayer(str(TILE.resolve()), "Sentinel-2 true colour", "gdal")
    stack = QgsRasterLayer(str(STACK.resolve()), "Sentinel-2 L2A (12 bands)", "gdal")
    project.addMapLayer(stack)
    project.addMapLayer(rgb)
    project.layerTreeRoot().findLayer(stack.id()).setItemVisibilityChecked(False)
    e = stack.extent()
    pts = QgsVectorLayer(f"Point?crs={stack.crs().authid()}&field=name:string", "field sites", "memory")
    feats = []
    for i, (fx, fy) in enumerate(((0.3, 0.35), (0.6, 0.55), (0.45, 0.75))):
        f = QgsFeature(pts.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(e.xMinimum() + fx * e.width(), e.yMinimum() + fy * e.height())))
        f["name"] = f"site {i + 1}"
        feats.append(f)
    pts.dataProvider().addFeatures(feats)
    project.addMapLayer(pts)
    pts.selectAll()
    iface.setActiveLayer(pts)
    iface.mapCanvas().setExtent(e)
    plugin = plugins["eoembed_qgis"]
    options = {"model": "rcf", "output": "grid", "source": "project", "buffer_m": 480.0, "id_field": "name",
               "out_dir": str(Path(os.environ.get("EOEMBED_SHOT_DIR", "/tmp")) / "eoembed_shots"),
               "time_mode": "all", "device": "cpu"}
    STATE["task"] = plugin.start_job(pts, options, confirm=False)
    STATE["pts"] = pts
    QTimer.singleShot(500, wait)


def wait() -> None:
    task = STATE["task"]
    if task.outcome is None:
        QTimer.singleShot(500, wait)
        return
    print(f"job {task.outcome}: {task.error}", flush=True)
    root = QgsProject.instance().layerTreeRoot()
    todo = list(root.children())
    while todo:  # expand every group, nested ones too
        node = todo.pop()
        if node.nodeType() == 0:  # a group
            node.setExpanded(True)
            todo += list(node.children())
    pts = STATE["pts"]
    iface.setActiveLayer(pts)
    iface.mapCanvas().refreshAllLayers()
    iface.layerTreeView().expandAll()
    pts.selectAll()  # after refreshAllLayers, which reloads layers and clears their selection
    action = plugins["eoembed_qgis"].action
    print(f"embed action enabled: {action.isEnabled()} ({action.toolTip()}); {pts.selectedFeatureCount()} of {pts.featureCount()} selected, valid {pts.isValid()}", flush=True)
    QTimer.singleShot(3000, shoot)


def shoot() -> None:
    grab("screenshot_qgis_window.png")
    from eoembed_qgis import settings
    from eoembed_qgis.dialog import EmbedDialog
    from eoembed_qgis.model_cache import refresh

    cards = refresh(settings.engine_python(), settings.worker_extra_env())  # a script may wait
    dlg = EmbedDialog(iface.activeLayer(), iface.mainWindow(), cards=cards)
    dlg.show()
    STATE["dlg"] = dlg
    QTimer.singleShot(1500, shoot_dialog)


def shoot_dialog() -> None:
    grab("screenshot_embed_dialog.png", STATE["dlg"])
    STATE["dlg"].close()
    QTimer.singleShot(500, QgsApplication.instance().quit)


QTimer.singleShot(3000, start)
