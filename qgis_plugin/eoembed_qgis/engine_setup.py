"""*Set up the engine*: a QgsTask that builds the managed environment, and its dialog.

The task runs the steps of :mod:`engine_env` in the background with progress, a live log and
cancel; the dialog chooses the base Python, an offline folder of wheels and CPU/CUDA, and offers
*Set up*, *Repair* (rebuild from scratch) and *Update* (reinstall the bundled wheel).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import engine_env, messages, settings


class EngineSetupTask(QgsTask):
    """Build (or repair/update) the engine venv in the profile folder; logs go to `logged`."""

    logged = pyqtSignal(str)

    def __init__(self, base: str, wheel: Path, target: Path | None = None, *, find_links: str | None = None,
                 cuda: bool = False, recreate: bool = False,
                 on_done: Callable[[EngineSetupTask], None] | None = None) -> None:
        super().__init__("eoembed: setting up the engine", QgsTask.Flag.CanCancel)
        self.base, self.wheel = base, wheel
        self.target = target or settings.managed_dir()
        self.find_links, self.cuda, self.recreate = find_links, cuda, recreate
        self.on_done = on_done
        self.lines: list[str] = []
        self.python: str | None = None
        self.error: engine_env.SetupError | None = None
        self.outcome: str | None = None

    def _log(self, line: str) -> None:
        self.lines.append(line)
        self.logged.emit(line)

    def run(self) -> bool:
        try:
            self.python = engine_env.set_up(self.base, self.target, self.wheel, self._log, self.isCanceled,
                                            self.setProgress, find_links=self.find_links, cuda=self.cuda,
                                            recreate=self.recreate)
            return True
        except engine_env.SetupError as exc:
            self.error = exc
            return False
        except Exception as exc:  # noqa: BLE001 - never a traceback in QGIS's face
            self.error = engine_env.SetupError(f"the engine set-up failed unexpectedly ({exc})")
            return False

    def finished(self, result: bool) -> None:  # noqa: FBT001
        if result:
            self.outcome = "done"
            settings.put("engine_python", "")  # use the managed environment
            messages.info(None, f"the eoembed engine is ready ({self.python})")
            from .model_cache import refresh_in_background

            refresh_in_background(self.python, settings.worker_extra_env())
        else:
            self.outcome = "canceled" if isinstance(self.error, engine_env.SetupCanceled) else "failed"
            err = self.error or engine_env.SetupError("the engine set-up stopped")
            messages.log(f"{err}\n{err.details}")
        if self.on_done is not None:
            self.on_done(self)


def start_setup(base: str, wheel: Path, **kwargs: Any) -> EngineSetupTask:
    """Queue an EngineSetupTask (kept alive by the caller through the returned object)."""
    task = EngineSetupTask(base, wheel, **kwargs)
    QgsApplication.taskManager().addTask(task)
    return task


class EngineSetupDialog(QDialog):
    """Set up, repair or update the managed engine environment, with its log."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("eoembed — Set up the engine")
        self.task: EngineSetupTask | None = None
        wheel = engine_env.bundled_wheel()
        intro = QLabel(
            "The engine (PyTorch and the models) runs in its own Python environment, made here:\n"
            f"{settings.managed_dir()}\n"
            f"It installs {wheel.name if wheel else '(no bundled engine wheel: a plugin run from a checkout)'} "
            "with its dependencies (about 1 GB; CPU PyTorch unless CUDA is ticked).")
        intro.setWordWrap(True)
        form = QFormLayout()
        try:
            found = engine_env.find_base_python(str(settings.get("base_python", "")) or None)
        except engine_env.SetupError as exc:
            found = ""
            intro.setText(intro.text() + f"\n\n{exc}")
        self.base_edit = QLineEdit(found)
        form.addRow("Base Python", self._with_browse(self.base_edit, False))
        self.wheels_edit = QLineEdit(str(settings.get("wheel_folder", "")))
        self.wheels_edit.setPlaceholderText("(optional) a folder of wheels for an offline install")
        form.addRow("Offline wheels", self._with_browse(self.wheels_edit, True))
        self.cuda_check = QCheckBox("Install PyTorch with CUDA (NVIDIA GPU)")
        form.addRow("", self.cuda_check)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.setup_button = buttons.addButton("Set up", QDialogButtonBox.ButtonRole.ActionRole)
        self.repair_button = buttons.addButton("Repair", QDialogButtonBox.ButtonRole.ActionRole)
        self.update_button = buttons.addButton("Update", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = buttons.addButton("Cancel set-up", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button.setEnabled(False)
        self.setup_button.clicked.connect(lambda: self.start(recreate=False))
        self.repair_button.clicked.connect(lambda: self.start(recreate=True))
        self.update_button.clicked.connect(lambda: self.start(recreate=False))
        self.cancel_button.clicked.connect(self.cancel)
        buttons.rejected.connect(self.reject)
        for b in (self.setup_button, self.repair_button, self.update_button):
            b.setEnabled(wheel is not None)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.bar)
        lay.addWidget(self.log)
        lay.addWidget(buttons)

    def _with_browse(self, edit: QLineEdit, folder: bool) -> QWidget:
        w = QWidget()
        row = QHBoxLayout(w)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        b = QPushButton("…")

        def browse() -> None:
            path = (QFileDialog.getExistingDirectory(self, "Folder of wheels", edit.text()) if folder
                    else QFileDialog.getOpenFileName(self, "Base Python", edit.text())[0])
            if path:
                edit.setText(path)

        b.clicked.connect(browse)
        row.addWidget(b)
        return w

    def start(self, recreate: bool = False) -> EngineSetupTask | None:
        """Start the set-up task (Repair: `recreate`)."""
        wheel = engine_env.bundled_wheel()
        base = self.base_edit.text().strip()
        ok, why = engine_env.check_python(base) if base else (False, "choose a base Python")
        if wheel is None or not ok:
            self.log.appendPlainText(why if wheel else "this plugin has no bundled engine wheel")
            return None
        settings.put("base_python", base)
        settings.put("wheel_folder", self.wheels_edit.text().strip())
        self.log.clear()
        self.task = EngineSetupTask(base, wheel, find_links=self.wheels_edit.text().strip() or None,
                                    cuda=self.cuda_check.isChecked(), recreate=recreate, on_done=self._done)
        self.task.logged.connect(self.log.appendPlainText)
        self.task.progressChanged.connect(lambda p: self.bar.setValue(int(p)))
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _done(self, task: EngineSetupTask) -> None:
        self.cancel_button.setEnabled(False)
        self.log.appendPlainText(f"set-up {task.outcome}" + (f": {task.error}" if task.error else ""))
