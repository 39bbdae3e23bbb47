"""The model list without waiting: cards cached in the profile folder, refreshed in the background.

Nothing here starts the engine on the caller's thread. :func:`cards` reads the cache file (or
returns the built-in fallback); :func:`refresh_in_background` runs ``worker.py --models`` in a
QgsTask and rewrites the cache when it answers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsTask

from .runner import RunnerError, run_worker_command

#: what the lists offer before the engine has ever answered (rcf needs no weights)
FALLBACK = {"rcf": {"id": "rcf", "summary": "Random convolutional features (no weights; any bands)",
                    "precomputed": False, "weights": None}}
_TASKS: list[QgsTask] = []


def cache_path() -> Path:
    """``<profile>/eoembed/models.json``."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "eoembed" / "models.json"


def _read() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def cards(python: str | None = None) -> dict[str, dict[str, Any]]:
    """Model id → card as last reported by `python`'s engine (any engine's if None), else FALLBACK."""
    data = _read()
    entry = data.get(python) if python else next(iter(data.values()), None)
    if entry is None and python is None:
        entry = None
    got = (entry or {}).get("models") or {}
    return got or dict(FALLBACK)


def is_cached(python: str) -> bool:
    """True when `python`'s engine has answered at least once."""
    return python in _read()


def model_ids(python: str | None = None) -> list[str]:
    """Canonical model ids (aliases folded into their model), sorted."""
    out = []
    for mid, card in cards(python).items():
        if card.get("id", mid) == mid:
            out.append(mid)
    return sorted(out)


def store(python: str, models: dict[str, Any]) -> None:
    """Write `python`'s model cards into the cache file (atomically)."""
    data = _read()
    data[python] = {"models": models, "time": time.time()}
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def refresh(python: str, env: dict[str, str] | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Ask `python`'s engine for its model cards now (blocking: call it from a task) and cache them."""
    models = run_worker_command("--models", python, timeout=timeout, env=env)["models"]
    store(python, models)
    return models


def refresh_in_background(python: str, env: dict[str, str] | None = None,
                          on_done: Callable[[dict[str, Any] | None, str], None] | None = None) -> QgsTask | None:
    """Refresh the cache in a QgsTask (one at a time); `on_done(models or None, error)` on the main thread."""
    if any(getattr(t, "_python", None) == python for t in _TASKS):
        return None
    state: dict[str, Any] = {}

    def work(task: QgsTask) -> bool:
        try:
            state["models"] = refresh(python, env)
        except RunnerError as exc:
            state["error"] = str(exc)
        return True

    def finished(exception: Exception | None, result: Any = None) -> None:
        if task in _TASKS:
            _TASKS.remove(task)
        if on_done is not None:
            on_done(state.get("models"), state.get("error") or (str(exception) if exception else ""))

    task = QgsTask.fromFunction("eoembed: reading the model list", work, on_finished=finished)
    task._python = python
    _TASKS.append(task)
    QgsApplication.taskManager().addTask(task)
    return task
