"""The plugin's settings as a page of Settings ▸ Options (QgsOptionsWidgetFactory)."""

from __future__ import annotations

from typing import Any

from qgis.gui import QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtWidgets import QVBoxLayout

from .icons import icon
from .settings import SettingsWidget


class EoembedOptionsPage(QgsOptionsPageWidget):
    """Settings ▸ Options ▸ eoembed: engine Python, caches, device, local weights, diagnostics."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setObjectName("eoembed")  # iface.showOptionsDialog(currentPage="eoembed") opens it
        self.widget = SettingsWidget(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.widget)

    def apply(self) -> None:
        self.widget.save()


class EoembedOptionsFactory(QgsOptionsWidgetFactory):
    """Makes the eoembed page whenever the Options dialog opens."""

    def __init__(self) -> None:
        super().__init__("eoembed", icon("icon"))

    def createWidget(self, parent: Any = None) -> EoembedOptionsPage:  # noqa: N802
        return EoembedOptionsPage(parent)


def register_options_page(iface: Any) -> EoembedOptionsFactory | None:
    """Add the page to Settings ▸ Options; returns the factory to unregister on unload."""
    factory = EoembedOptionsFactory()
    try:
        iface.registerOptionsWidgetFactory(factory)
    except AttributeError:  # an iface without options pages (test doubles)
        return None
    return factory
