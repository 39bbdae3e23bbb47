"""The plugin lives in QGIS's own Python: the engine and its heavy libraries never enter it.

This suite runs in the system Python that QGIS uses (``.venv-qgis`` adds only pytest), where
eoembed is not importable; these tests prove that, and that no plugin module imports an
engine-side package at any level (the worker script is the one that runs in the engine's Python).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FORBIDDEN, REPO

PLUGIN = REPO / "qgis_plugin" / "eoembed_qgis"
#: modules that run in the engine's Python, not QGIS's
ENGINE_SIDE = {"worker.py"}


def test_the_suite_runs_where_eoembed_is_not_importable() -> None:
    with pytest.raises(ImportError):
        importlib.import_module("eoembed")
    assert not Path(sys.executable).resolve().is_relative_to((REPO / ".venv").resolve())


@pytest.mark.parametrize("path", sorted(p.relative_to(PLUGIN).as_posix() for p in PLUGIN.rglob("*.py")))
def test_no_plugin_module_imports_the_engine(path: str) -> None:
    if path in ENGINE_SIDE:
        return
    tree = ast.parse((PLUGIN / path).read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names += [a.value for a in node.args if isinstance(a, ast.Constant)]
    bad = sorted({n for n in names if n.split(".")[0] in FORBIDDEN})
    assert not bad, f"{path} imports {', '.join(bad)} inside QGIS"


def test_importing_every_plugin_module_loads_no_engine_package() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        f"sys.path.insert(0, {str(REPO / 'qgis_plugin')!r})\n"
        "import eoembed_qgis\n"
        "for m in pkgutil.walk_packages(eoembed_qgis.__path__, 'eoembed_qgis.'):\n"
        "    if m.name != 'eoembed_qgis.worker':\n"
        "        importlib.import_module(m.name)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print('LOADED', bad)\n"
    )
    import os

    env = {**os.environ, "PYTHONPATH": "/usr/share/qgis/python/plugins"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "LOADED []" in proc.stdout, proc.stdout + proc.stderr[-2000:]
