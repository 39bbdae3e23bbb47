"""GUI-thread time of the QGIS plugin: start-up (import + enable), and the first Embed press.

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python benchmarks/bench_plugin_gui.py [--runs 5]

Runs in QGIS's own Python (the system one) with a fresh profile folder per run, the engine set
to this checkout's .venv (nothing may start it on the GUI thread). Measures, in milliseconds:

* ``import``: importing the plugin package and ``classFactory`` (what QGIS does at start-up);
* ``enable``: ``initGui()`` (actions, map tool, Options page, Processing provider + algorithms);
* ``first_press``: the toolbar action up to the dialog being ready to show (model list read,
  background refresh queued), with the dialog's ``exec`` returning at once.

Each run is a fresh process, so module imports are counted every time. The median is printed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_RUN = r'''
import json, sys, time
from pathlib import Path
profile = Path(sys.argv[1])
from qgis.PyQt.QtCore import QCoreApplication, QSettings
QCoreApplication.setOrganizationName("QGIS"); QCoreApplication.setApplicationName("QGIS3")
QSettings.setDefaultFormat(QSettings.IniFormat)
QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(profile))
from qgis.core import QgsApplication, QgsProject, QgsVectorLayer, QgsFeature, QgsGeometry
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtWidgets import QMainWindow, QDialog
app = QgsApplication([], True, str(profile))
app.initQgis()
sys.path.insert(0, "/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import QToolBar


class Iface(QObject):
    """The parts of QgisInterface the plugin uses, on real widgets (no QGIS desktop here)."""
    currentLayerChanged = pyqtSignal(object)

    def __init__(self):
        super().__init__()
        self.win = QMainWindow(); self.canvas = QgsMapCanvas(self.win); self.bar = QgsMessageBar(self.win)
        self.toolbar = QToolBar(self.win); self.menu = {}; self.layer = None

    def mainWindow(self): return self.win
    def mapCanvas(self): return self.canvas
    def messageBar(self): return self.bar
    def activeLayer(self): return self.layer
    def setActiveLayer(self, layer): self.layer = layer; self.currentLayerChanged.emit(layer)
    def addToolBarIcon(self, a): self.toolbar.addAction(a)
    def removeToolBarIcon(self, a): self.toolbar.removeAction(a)
    def addPluginToMenu(self, name, a): self.menu.setdefault(name, []).append(a)
    def removePluginMenu(self, name, a): self.menu.get(name, []).remove(a)
    def registerOptionsWidgetFactory(self, f): self.options = f
    def unregisterOptionsWidgetFactory(self, f): self.options = None


iface = Iface()
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
import eoembed_qgis
plugin = eoembed_qgis.classFactory(iface)
t1 = time.perf_counter()
plugin.initGui()
t2 = time.perf_counter()
layer = QgsVectorLayer("Point?crs=EPSG:4326", "pts", "memory")
f = QgsFeature(); f.setGeometry(QgsGeometry.fromWkt("POINT(10 50)"))
layer.dataProvider().addFeatures([f]); QgsProject.instance().addMapLayer(layer)
iface.setActiveLayer(layer); layer.selectAll()
from eoembed_qgis import dialog
dialog.EmbedDialog.exec = lambda self: QDialog.Rejected
t3 = time.perf_counter()
plugin.action.trigger()
t4 = time.perf_counter()
print("RESULT " + json.dumps({"import": 1e3 * (t1 - t0), "enable": 1e3 * (t2 - t1), "first_press": 1e3 * (t4 - t3)}))
sys.stdout.flush()
import os; os._exit(0)
'''


def main(argv: list[str]) -> int:
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 5
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = {"EOEMBED_PYTHON": str(REPO / ".venv" / "bin" / "python"), "QT_QPA_PLATFORM": "offscreen",
                   "PATH": "/usr/bin:/bin", "HOME": tmp}
            proc = subprocess.run([sys.executable, "-c", ONE_RUN, tmp, str(REPO / "qgis_plugin")],
                                  capture_output=True, text=True, env=env, timeout=300)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-3000:])
                return 1
            results.append(json.loads(line[7:]))
    summary = {k: round(statistics.median(r[k] for r in results), 1) for k in results[0]}
    summary["startup"] = round(summary["import"] + summary["enable"], 1)
    print(json.dumps({"runs": runs, "median_ms": summary, "all": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
