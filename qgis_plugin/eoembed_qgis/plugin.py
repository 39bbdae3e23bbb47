"""EoembedPlugin: the toolbar action "Embed selected features", its menu, settings and tasks."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsMapLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QDialog

from . import messages, settings
from .compat import QAction
from .icons import icon
from .job import build_job, estimate, suitability
from .task import EmbedTask

MENU = "&eoembed"
ACTION_TEXT = "Embed selected features"
HELP = Path(__file__).resolve().with_name("help") / "index.html"


class EoembedPlugin:
    """The plugin object QGIS holds: actions, their enabled state, and the running tasks."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.settings_action: QAction | None = None
        self.setup_action: QAction | None = None
        self.help_action: QAction | None = None
        self.options_factory: Any = None
        self.setup_dialog: Any = None
        self.tasks: list[EmbedTask] = []
        self._watched: QgsVectorLayer | None = None
        self.provider = None
        self.analysis: Any = None

    # -- life cycle ---------------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        """Register the Processing provider when the processing package is present (once)."""
        if self.provider is not None:
            return
        try:
            from .processing.provider import EoembedProvider  # type: ignore[import-not-found]
        except ImportError:
            return
        self.provider = EoembedProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        parent = self.iface.mainWindow()
        self.action = QAction(icon("embed"), ACTION_TEXT, parent)
        self.action.setObjectName("eoembedEmbedSelected")
        self.action.triggered.connect(self.run)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)
        self.setup_action = QAction(icon("setup"), "Set up the engine…", parent)
        self.setup_action.setObjectName("eoembedSetup")
        self.setup_action.triggered.connect(self.open_setup)
        self.settings_action = QAction(icon("settings"), "Settings and diagnostics…", parent)
        self.settings_action.setObjectName("eoembedSettings")
        self.settings_action.triggered.connect(self.open_settings)
        self.help_action = QAction(icon("help"), "Help", parent)
        self.help_action.setObjectName("eoembedHelp")
        self.help_action.triggered.connect(self.open_help)
        for a in (self.setup_action, self.settings_action, self.help_action):
            self.iface.addPluginToMenu(MENU, a)
        self.iface.currentLayerChanged.connect(self._layer_changed)
        self._layer_changed(self.iface.activeLayer())
        from .analysis_tools import add_analysis_actions

        self.analysis = add_analysis_actions(self.iface, None, MENU)
        from .options_page import register_options_page

        self.options_factory = register_options_page(self.iface)
        self.initProcessing()

    def unload(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        self._watch(None)
        with contextlib.suppress(TypeError, RuntimeError):
            self.iface.currentLayerChanged.disconnect(self._layer_changed)
        for a in (self.action, self.setup_action, self.settings_action, self.help_action):
            if a is not None:
                self.iface.removePluginMenu(MENU, a)
        if self.options_factory is not None:
            with contextlib.suppress(AttributeError, RuntimeError):
                self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
        if self.analysis is not None:
            self.analysis.unload()
            self.analysis = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- enabled state ------------------------------------------------------------------
    def _watch(self, layer: QgsMapLayer | None) -> None:
        if self._watched is not None:
            with contextlib.suppress(TypeError, RuntimeError):
                self._watched.selectionChanged.disconnect(self.update_action)
        self._watched = layer if isinstance(layer, QgsVectorLayer) else None
        if self._watched is not None:
            self._watched.selectionChanged.connect(self.update_action)

    def _layer_changed(self, layer: Any = None) -> None:
        self._watch(self.iface.activeLayer())
        self.update_action()

    def update_action(self, *_args: Any) -> None:
        """Enable the action when the active layer has selected points or polygons; say why not."""
        if self.action is None:
            return
        why = suitability(self.iface.activeLayer())
        self.action.setEnabled(why is None)
        self.action.setToolTip(f"{ACTION_TEXT}: {why}" if why else
                               f"{ACTION_TEXT} ({self.iface.activeLayer().selectedFeatureCount()} selected)")

    # -- actions ------------------------------------------------------------------------
    def open_settings(self) -> None:
        self.iface.showOptionsDialog(self.iface.mainWindow(), currentPage="eoembed")

    def open_setup(self) -> None:
        """The *Set up the engine* dialog (kept open while its task runs)."""
        from .engine_setup import EngineSetupDialog

        if self.setup_dialog is None:
            self.setup_dialog = EngineSetupDialog(self.iface.mainWindow())
        self.setup_dialog.show()
        self.setup_dialog.raise_()

    def open_help(self) -> bool:
        """Open the bundled documentation in the browser."""
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(HELP)))

    def run(self) -> None:
        """Open the dialog for the active layer's selection and start the job.

        Never waits for the engine: the model list comes from the cache, refreshed in the
        background when this engine Python has not answered yet.
        """
        layer = self.iface.activeLayer()
        why = suitability(layer)
        if why is not None:
            messages.info(self.iface, why)
            return
        python = settings.engine_python()
        if not python:
            messages.info(self.iface, "the eoembed engine is not set up yet: eoembed ▸ Set up the engine")
            self.open_setup()
            return
        if not Path(python).exists():
            messages.error(self.iface, f"the engine Python {python} does not exist: run eoembed ▸ Set up the "
                           "engine, or choose another one in Settings ▸ Options ▸ eoembed")
            return
        from . import model_cache
        from .dialog import EmbedDialog

        cards = model_cache.cards(python)
        dlg = EmbedDialog(layer, self.iface.mainWindow(), cards=cards)
        if not model_cache.is_cached(python):
            model_cache.refresh_in_background(python, settings.worker_extra_env(),
                                              on_done=lambda models, err: dlg.update_cards(models, err))
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return
        self.start_job(layer, dlg.options(), cards=cards)

    def start_job(self, layer: QgsVectorLayer, options: dict[str, Any], *, confirm: bool = True,
                  cards: dict[str, Any] | None = None, python: str | None = None) -> EmbedTask | None:
        """Snapshot the selection, estimate, confirm when big, and queue an EmbedTask."""
        from .dialog import confirm_big_job

        options = dict(options)
        if not options.get("weights"):
            options["weights"] = settings.weights_for(str(options.get("model", "")))
        try:
            job = build_job(layer, options)
        except (ValueError, KeyError) as exc:
            messages.error(self.iface, f"the job could not be built: {exc}")
            return None
        left_out = job.pop("left_out", [])
        if left_out:
            messages.log("rasters left out of the imagery:\n" + "\n".join(left_out))
        if not job["places"]:
            messages.info(self.iface, "the selected features have no geometry; nothing to embed")
            return None
        from . import model_cache

        card = (cards or model_cache.cards(python or settings.engine_python())).get(job["model"], {})
        if job["source"].get("kind") == "local" and not job["source"].get("paths") and not card.get("precomputed"):
            why = f" ({left_out[0]}{' …' if len(left_out) > 1 else ''})" if left_out else ""
            messages.error(self.iface, "no usable imagery chosen: add Sentinel-2 raster layers to the project "
                           f"or pick local files{why}", "\n".join(left_out))
            return None
        if left_out:
            messages.info(self.iface, f"{len(left_out)} raster(s) left out of the imagery: {left_out[0]}"
                          f"{' …' if len(left_out) > 1 else ''} (details in the log)", duration=10)
        scale = float((cards or {}).get(job["model"], {}).get("scale_m", 10.0) or 10.0)
        if confirm and not confirm_big_job(self.iface.mainWindow(), estimate(layer, job, scale)):
            return None
        task = EmbedTask(job, self.iface, python or settings.engine_python(), settings.worker_extra_env(),
                         on_done=self._task_done)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        messages.log(f"started {task.description()} → {job['out_dir']}")
        return task

    def _task_done(self, task: EmbedTask) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
