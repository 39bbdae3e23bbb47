"""The "Embed selected features" dialog: model, time window, output, imagery, device, folder.

Built in code with Qt widgets. It remembers the last choices in QgsSettings (``eoembed/dialog/``)
and reads the model cards from the engine's Python (``worker.py --models``), so no torch is
imported into QGIS. :meth:`EmbedDialog.options` is everything :func:`job.build_job` needs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsRasterLayer, QgsSettings, QgsVectorLayer
from qgis.PyQt.QtCore import QDate, Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from . import imagery, messages, model_cache, settings
from .icons import icon

KEY = "eoembed/dialog/"
#: above these, the dialog asks before starting
CONFIRM_ITEMS = 200
CONFIRM_PIXELS = 50e6
OUTPUT_LABELS = {
    "pooled": "Pooled vector per feature",
    "grid": "Grid raster per feature",
    "grid_extent": "One grid over the selection's extent",
}
SOURCE_LABELS = {
    "project": "Raster layers of this project",
    "local": "Local files or folder",
    "stac": "STAC API",
    "gee": "Google Earth Engine",
}
DEFAULTS: dict[str, Any] = {
    "model": "rcf", "time_mode": "all", "year": 2022, "start": "2022-01-01", "end": "2023-01-01",
    "output": "pooled", "buffer_m": 320.0, "source": "project", "local_paths": [],
    "stac_url": "earth-search", "ee_project": "", "device": "cpu", "out_dir": str(Path.home() / "eoembed"),
    "id_field": "",
}

def model_cards(python: str | None = None, refresh: bool = False) -> dict[str, Any]:
    """Model id → card: from the cache, or asked from the engine now when `refresh` (blocking)."""
    python = python or settings.engine_python()
    if refresh:
        return model_cache.refresh(python, settings.worker_extra_env())
    return model_cache.cards(python)


def state_text(card: dict[str, Any], local: str | None = None) -> str:
    """ready / needs download / needs a local file / unavailable, for the model list."""
    if local:
        return "ready (local weights)" if Path(local).exists() else f"local weights missing: {local}"
    ws = card.get("weights_state") or {}
    if "error" in card:
        return "unavailable"
    return {"ready": "ready", "download": "needs download", "local": "needs a local weights file",
            "unavailable": "unavailable"}.get(ws.get("state"), "state unknown")


def describe_card(card: dict[str, Any]) -> str:
    """The lines of a model card the dialog shows."""
    if "error" in card:
        return f"{card['id']}: {card['error']}"
    aka = f" · also called {', '.join(card['aliases'])}" if card.get("aliases") else ""
    if "bands" not in card:  # the built-in entry, before the engine has answered
        return f"{card.get('summary', card.get('id', ''))}\n(the full card appears once the engine has answered)"
    return (f"{card.get('summary', '')}{aka}\n"
            f"bands: {', '.join(card.get('bands', []))} at {card.get('scale_m', '?'):g} m · "
            f"dims: {card.get('dim')} · outputs: {', '.join(card.get('outputs', []))} · "
            f"time: {card.get('temporal')}\n"
            f"weights: {card.get('weights')} · licence: {card.get('license')}\n"
            f"{(card.get('weights_state') or {}).get('text', '')}")


_DOWNLOADS: list[Any] = []


def start_download(model: str, on_done: Any = None) -> Any:
    """A QgsTask that downloads `model`'s weights through the worker, then refreshes the model list."""
    from qgis.core import QgsApplication, QgsTask

    from .runner import RunnerError, run_worker_command

    python, env = settings.engine_python(), settings.worker_extra_env()
    state: dict[str, Any] = {}

    def work(task: Any) -> bool:
        try:
            state["file"] = run_worker_command(["--download", model], python, timeout=6 * 3600, env=env)["file"]
            state["models"] = model_cache.refresh(python, env)
        except RunnerError as exc:
            state["error"] = str(exc)
        return True

    def finished(exception: Exception | None, result: Any = None) -> None:
        if task in _DOWNLOADS:
            _DOWNLOADS.remove(task)
        err = state.get("error") or (str(exception) if exception else "")
        if err:
            messages.error(None, f"the weights of {model} could not be downloaded: {err}")
        else:
            messages.log(f"downloaded the weights of {model}: {state.get('file')}")
        if on_done is not None:
            on_done(state.get("models"), err)

    task = QgsTask.fromFunction(f"eoembed: downloading the weights of {model}", work, on_finished=finished)
    _DOWNLOADS.append(task)
    QgsApplication.taskManager().addTask(task)
    return task


def load_memory() -> dict[str, Any]:
    """The last choices (defaults where nothing was saved)."""
    s = QgsSettings()
    out = dict(DEFAULTS)
    for k, default in DEFAULTS.items():
        raw = s.value(KEY + k, None)
        if raw is None:
            continue
        if isinstance(default, list):
            with contextlib.suppress(TypeError, ValueError):
                out[k] = list(json.loads(raw)) if isinstance(raw, str) else list(raw)
        elif isinstance(default, float):
            out[k] = float(raw)
        elif isinstance(default, int):
            out[k] = int(raw)
        else:
            out[k] = str(raw)
    return out


def save_memory(options: dict[str, Any]) -> None:
    s = QgsSettings()
    for k in DEFAULTS:
        if k in options:
            v = options[k]
            s.setValue(KEY + k, json.dumps(v) if isinstance(v, list) else v)


class EmbedDialog(QDialog):
    """Choose how to embed the selected features of `layer`."""

    def __init__(self, layer: QgsVectorLayer, parent: QWidget | None = None,
                 cards: dict[str, Any] | None = None) -> None:
        super().__init__(parent)
        self.layer = layer
        self.setWindowTitle("eoembed — Embed selected features")
        self.cards = cards if cards is not None else self._load_cards()
        mem = load_memory()
        form = QFormLayout()

        self.model_combo = QComboBox()
        self._fill_models(self.cards, mem["model"])
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_combo.currentIndexChanged.connect(lambda _i: self._show_card(self.model_id()))
        self.download_button = QPushButton(icon("download"), "Download weights")
        self.download_button.setToolTip("Fetch the chosen model's weights in the background")
        self.download_button.clicked.connect(lambda: self.download_weights())
        mrow = QHBoxLayout()
        mrow.addWidget(self.model_combo, 1)
        mrow.addWidget(self.download_button)
        form.addRow("Model", mrow)
        form.addRow("", self.model_info)

        self.time_all = QRadioButton("All dates")
        self.time_year = QRadioButton("Year")
        self.time_range = QRadioButton("Range")
        self.time_group = QButtonGroup(self)
        for b in (self.time_all, self.time_year, self.time_range):
            self.time_group.addButton(b)
        self.year_spin = QSpinBox()
        self.year_spin.setRange(1972, 2100)
        self.start_edit = QDateEdit()
        self.end_edit = QDateEdit()
        for e in (self.start_edit, self.end_edit):
            e.setDisplayFormat("yyyy-MM-dd")
            e.setCalendarPopup(True)
        trow = QHBoxLayout()
        for w in (self.time_all, self.time_year, self.year_spin, self.time_range, self.start_edit,
                  QLabel("to"), self.end_edit):
            trow.addWidget(w)
        form.addRow("Time window", trow)

        self.output_combo = QComboBox()
        for k, label in OUTPUT_LABELS.items():
            self.output_combo.addItem(label, k)
        form.addRow("Output", self.output_combo)
        self.buffer_spin = QDoubleSpinBox()
        self.buffer_spin.setRange(5.0, 25_000.0)
        self.buffer_spin.setSuffix(" m")
        self.buffer_spin.setDecimals(1)
        self.buffer_spin.setToolTip("Half-side of the square embedded around each point")
        form.addRow("Point buffer", self.buffer_spin)
        self.id_combo = QComboBox()
        self.id_combo.addItem("(feature id)", "")
        for name in layer.fields().names():
            self.id_combo.addItem(name, name)
        form.addRow("Feature id", self.id_combo)

        self.source_combo = QComboBox()
        for k, label in SOURCE_LABELS.items():
            self.source_combo.addItem(label, k)
        self.source_stack = QStackedWidget()
        self.raster_list = QListWidget()
        self.rgb_layers: set[str] = set()
        self._fill_rasters()
        self.local_edit = QLineEdit()
        self.local_edit.setPlaceholderText("files or folders, separated by ;")
        local_w = QWidget()
        lrow = QHBoxLayout(local_w)
        lrow.setContentsMargins(0, 0, 0, 0)
        lrow.addWidget(self.local_edit)
        lbrowse = QPushButton("…")
        lbrowse.clicked.connect(self._browse_local)
        lrow.addWidget(lbrowse)
        self.stac_edit = QLineEdit()
        self.ee_edit = QLineEdit()
        for w in (self.raster_list, local_w, self.stac_edit, self.ee_edit):
            self.source_stack.addWidget(w)
        self.source_combo.currentIndexChanged.connect(self.source_stack.setCurrentIndex)
        form.addRow("Imagery", self.source_combo)
        form.addRow("", self.source_stack)

        self.device_combo = QComboBox()
        self.device_combo.addItems(settings.DEVICES)
        form.addRow("Device", self.device_combo)
        self.out_edit = QLineEdit()
        obrowse = QPushButton("…")
        obrowse.clicked.connect(self._browse_out)
        orow = QHBoxLayout()
        orow.addWidget(self.out_edit)
        orow.addWidget(obrowse)
        form.addRow("Output folder", orow)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Embed")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)
        self.set_options(mem)

    def _load_cards(self) -> dict[str, Any]:
        return model_cache.cards(settings.engine_python())

    def _fill_models(self, cards: dict[str, Any], current: str) -> None:
        """One entry per model (aliases fold into their canonical id), with its weights state."""
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        ids = sorted(m for m, c in cards.items() if c.get("id", m) == m) or [current]
        for mid in ids:
            card = cards.get(mid, {})
            self.model_combo.addItem(f"{mid} — {state_text(card, settings.weights_for(mid))}", mid)
        canonical = next((m for m, c in cards.items() if current in (c.get("aliases") or [])), current)
        self.model_combo.setCurrentIndex(max(self.model_combo.findData(canonical), 0))
        self.model_combo.blockSignals(False)

    def update_cards(self, cards: dict[str, Any] | None, error: str = "") -> None:
        """New cards from the background refresh (keeps the chosen model)."""
        with contextlib.suppress(RuntimeError):  # the dialog may be gone
            if cards:
                self.cards = cards
                self._fill_models(cards, self.model_id())
                self._show_card(self.model_id())
            elif error:
                self.model_info.setText(f"the engine could not list its models: {error}")

    def model_id(self) -> str:
        """The chosen model's canonical id."""
        return str(self.model_combo.currentData() or self.model_combo.currentText())

    def _fill_rasters(self) -> None:
        """The project's rasters: imagery ticked; outputs hidden; others greyed with the reason."""
        for lyr in QgsProject.instance().mapLayers().values():
            if not isinstance(lyr, QgsRasterLayer):
                continue
            path = lyr.source().split("|")[0]
            if lyr.providerType() != "gdal" or not Path(path).is_file():
                continue
            v = imagery.classify(path)
            if "eoembed output" in v.reason:
                continue
            item = QListWidgetItem(lyr.name())
            item.setData(Qt.ItemDataRole.UserRole, lyr.id())
            item.setToolTip(v.reason)
            if v.usable:
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked)
            elif v.needs_confirmation:
                item.setText(f"{lyr.name()} — tick to use as Sentinel-2 true colour (B04, B03, B02)")
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Unchecked)
                self.rgb_layers.add(lyr.id())
            else:
                item.setText(f"{lyr.name()} — not used: {v.reason.split(': ', 1)[-1]}")
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsUserCheckable & ~Qt.ItemFlag.ItemIsEnabled)
            self.raster_list.addItem(item)

    def download_weights(self) -> Any:
        """Fetch the chosen model's checkpoint in a background task (the engine's worker does it)."""
        return start_download(self.model_id(), on_done=lambda models, err: self.update_cards(models, err))

    def _show_card(self, model: str) -> None:
        card = self.cards.get(model)
        self.model_info.setText(describe_card(card) if card else "(the engine did not describe this model)")
        state = ((card or {}).get("weights_state") or {}).get("state")
        self.download_button.setEnabled(state == "download")

    def _browse_local(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Imagery folder", self.local_edit.text())
        if path:
            self.local_edit.setText(path)

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    # -- state --------------------------------------------------------------------------
    def set_options(self, o: dict[str, Any]) -> None:
        """Put `o` (the keys of :data:`DEFAULTS`) into the widgets."""
        if self.model_combo.findData(o["model"]) >= 0:
            self.model_combo.setCurrentIndex(self.model_combo.findData(o["model"]))
        self._show_card(self.model_id())
        {"year": self.time_year, "range": self.time_range}.get(o["time_mode"], self.time_all).setChecked(True)
        self.year_spin.setValue(int(o["year"]))
        self.start_edit.setDate(QDate.fromString(str(o["start"]), "yyyy-MM-dd"))
        self.end_edit.setDate(QDate.fromString(str(o["end"]), "yyyy-MM-dd"))
        self.output_combo.setCurrentIndex(max(self.output_combo.findData(o["output"]), 0))
        self.buffer_spin.setValue(float(o["buffer_m"]))
        self.id_combo.setCurrentIndex(max(self.id_combo.findData(o.get("id_field", "")), 0))
        self.source_combo.setCurrentIndex(max(self.source_combo.findData(o["source"]), 0))
        self.source_stack.setCurrentIndex(self.source_combo.currentIndex())
        self.local_edit.setText(";".join(o["local_paths"]))
        self.stac_edit.setText(str(o["stac_url"]))
        self.ee_edit.setText(str(o["ee_project"] or settings.get("ee_project", "")))
        self.device_combo.setCurrentText(str(o["device"] or settings.get("device", "cpu")))
        self.out_edit.setText(str(o["out_dir"]))

    def options(self) -> dict[str, Any]:
        """The choices as a plain dict (what build_job and the memory use)."""
        mode = "year" if self.time_year.isChecked() else "range" if self.time_range.isChecked() else "all"
        rasters = [self.raster_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.raster_list.count())
                   if self.raster_list.item(i).checkState() == Qt.CheckState.Checked]
        return {
            "model": self.model_id(),
            "confirmed_rgb": [r for r in rasters if r in self.rgb_layers],
            "time_mode": mode,
            "year": self.year_spin.value(),
            "start": self.start_edit.date().toString("yyyy-MM-dd"),
            "end": self.end_edit.date().toString("yyyy-MM-dd"),
            "output": self.output_combo.currentData(),
            "buffer_m": self.buffer_spin.value(),
            "id_field": self.id_combo.currentData() or "",
            "source": self.source_combo.currentData(),
            "raster_layers": rasters,
            "local_paths": [p.strip() for p in self.local_edit.text().split(";") if p.strip()],
            "stac_url": self.stac_edit.text().strip(),
            "ee_project": self.ee_edit.text().strip(),
            "device": self.device_combo.currentText(),
            "out_dir": self.out_edit.text().strip() or DEFAULTS["out_dir"],
        }

    def accept(self) -> None:
        save_memory(self.options())
        super().accept()


def needs_confirm(est: dict[str, float]) -> bool:
    """True when a job is big enough to ask first."""
    return est["items"] > CONFIRM_ITEMS or est["pixels"] > CONFIRM_PIXELS


def confirm_big_job(parent: QWidget | None, est: dict[str, float]) -> bool:
    """Ask before a big job (True when it is small or the user agreed)."""
    if not needs_confirm(est):
        return True
    text = (f"This job embeds {int(est['items']):,} features and fetches about "
            f"{est['pixels'] / 1e6:,.1f} million pixels per band. Continue?")
    return QMessageBox.question(parent, "eoembed — big job", text) == QMessageBox.StandardButton.Yes
