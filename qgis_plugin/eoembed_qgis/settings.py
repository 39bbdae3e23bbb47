"""Plugin settings (engine Python, Earth Engine project, HF cache, device) and diagnostics.

Stored in QgsSettings under ``eoembed/``. The diagnostics run the engine's Python with
``worker.py --probe`` and report versions, paths and what is missing, with the exact fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .runner import RunnerError, default_python, run_worker_command

PREFIX = "eoembed/"
DEVICES = ("cpu", "auto", "cuda", "mps")


def get(key: str, default: Any = "") -> Any:
    """One plugin setting (``eoembed/<key>``)."""
    return QgsSettings().value(PREFIX + key, default)


def put(key: str, value: Any) -> None:
    QgsSettings().setValue(PREFIX + key, value)


def managed_dir() -> Path:
    """Where *Set up the engine* puts its virtual environment: ``<profile>/eoembed/engine``."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "eoembed" / "engine"


def managed_python() -> Path:
    """The managed environment's interpreter (it may not exist yet)."""
    d = managed_dir()
    return d / "Scripts" / "python.exe" if os.name == "nt" else d / "bin" / "python"


def engine_python() -> str:
    """The Python that runs the engine: the chosen one, else the managed environment, else
    $EOEMBED_PYTHON or a checkout's .venv; "" when none exists (then *Set up the engine*)."""
    chosen = str(get("engine_python", "") or "")
    if chosen:
        return chosen
    managed = managed_python()
    if managed.exists():
        return str(managed)
    return default_python()


def worker_extra_env() -> dict[str, str]:
    """Variables the worker gets from the settings (HF cache, Earth Engine project)."""
    env = {}
    if get("hf_cache", ""):
        env["HF_HOME"] = str(get("hf_cache"))
    if get("ee_project", ""):
        env["EOEMBED_EE_PROJECT"] = str(get("ee_project"))
    return env


def fix_hint(python: str) -> str:
    """What the user does to get a working engine for `python` (the managed one or a chosen one)."""
    if not python or Path(python) == managed_python():
        return "eoembed ▸ Set up the engine ▸ Repair"
    return ("eoembed ▸ Set up the engine (a managed environment), or install the engine wheel "
            f"bundled in the plugin's wheels/ folder with `{python} -m pip install <wheel>`")


def diagnostics(python: str | None = None) -> tuple[bool, str]:
    """(engine usable, a text report of versions, paths and what is missing with the fix)."""
    python = python or engine_python()
    try:
        info = run_worker_command("--probe", python, timeout=60, env=worker_extra_env())
    except RunnerError as exc:
        return False, (f"The engine Python {python} could not be run: {exc}\n"
                       f"Fix: {fix_hint(python)}.\n\n"
                       f"{exc.details}")
    lines = [f"engine Python: {info.get('python')} ({info.get('python_version')})",
             f"CUDA available: {info.get('cuda')}"]
    for name, pkg in sorted(info.get("packages", {}).items()):
        lines.append(f"  {name} {pkg.get('version')}  ({pkg.get('path')})")
    missing = info.get("missing", [])
    core = [m for m in missing if m.split()[0] in ("eoembed", "torch", "numpy", "rasterio", "pyproj",
                                                   "shapely", "pyarrow", "pyogrio", "xarray")]
    if missing:
        lines.append("missing: " + "; ".join(missing))
    for k, v in info.get("env", {}).items():
        lines.append(f"  ${k} = {v}")
    ok = not core
    if not ok:
        lines.insert(0, f"The eoembed engine is not usable from {python}: missing {', '.join(m.split()[0] for m in core)}. "
                        f"Fix: {fix_hint(python)}.")
    return ok, "\n".join(lines)


class SettingsWidget(QWidget):
    """The plugin's settings (shown in Settings ▸ Options ▸ eoembed), with a Diagnostics button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout()
        self.python_edit = QLineEdit(str(get("engine_python", "")))
        self.python_edit.setPlaceholderText(
            f"(the managed environment: {managed_python()})" if managed_python().exists()
            else default_python() or "(none yet: eoembed ▸ Set up the engine)")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_python)
        row = QHBoxLayout()
        row.addWidget(self.python_edit)
        row.addWidget(browse)
        form.addRow("Engine Python", row)
        self.ee_edit = QLineEdit(str(get("ee_project", "")))
        form.addRow("Earth Engine project", self.ee_edit)
        self.hf_edit = QLineEdit(str(get("hf_cache", "")))
        self.hf_edit.setPlaceholderText("default Hugging Face cache (~/.cache/huggingface)")
        form.addRow("Hugging Face cache", self.hf_edit)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(str(get("device", "cpu")))
        form.addRow("Device", self.device_combo)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.weights_edit = QPlainTextEdit(str(get("weights_paths", "")))
        self.weights_edit.setPlaceholderText("one per line: model id = local checkpoint file or folder")
        self.weights_edit.setMaximumHeight(70)
        form.addRow("Local weights", self.weights_edit)
        diag = QPushButton("Diagnostics")
        diag.clicked.connect(self.run_diagnostics)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(diag)
        lay.addWidget(self.report)

    def _browse_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Engine Python", self.python_edit.text())
        if path:
            self.python_edit.setText(path)

    def run_diagnostics(self) -> str:
        """Probe the (edited) engine Python and show the report; returns it."""
        _ok, text = diagnostics(self.python_edit.text().strip() or engine_python())
        self.report.setPlainText(text)
        return text

    def save(self) -> None:
        put("engine_python", self.python_edit.text().strip())
        put("ee_project", self.ee_edit.text().strip())
        put("hf_cache", self.hf_edit.text().strip())
        put("device", self.device_combo.currentText())
        put("weights_paths", self.weights_edit.toPlainText().strip())


def weights_for(model: str) -> str | None:
    """The local weights file/folder set for `model` in the settings ("id = path" lines), or None."""
    for line in str(get("weights_paths", "") or "").splitlines():
        key, sep, path = line.partition("=")
        if sep and key.strip().lower() == model.lower() and path.strip():
            return path.strip()
    return None


class SettingsDialog(QDialog):
    """The settings widget in a dialog of its own (Save / Cancel)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("eoembed — Settings")
        self.page = SettingsWidget(self)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.page)
        lay.addWidget(buttons)

    def accept(self) -> None:
        self.page.save()
        super().accept()
