"""The plugin's icons (SVG files in ``icons/``), by name."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon

ICONS = Path(__file__).resolve().with_name("icons")


def icon_path(name: str) -> str:
    """The SVG file of icon `name` (e.g. "embed", "similarity_point")."""
    return str(ICONS / f"{name}.svg")


def icon(name: str) -> QIcon:
    """Icon `name` as a QIcon."""
    return QIcon(icon_path(name))
