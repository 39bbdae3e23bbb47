"""The few names that differ between Qt 5 (QGIS 3) and Qt 6 (QGIS 4) builds."""

from __future__ import annotations

try:  # Qt 6: QAction lives in QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt 5
    from qgis.PyQt.QtWidgets import QAction

try:  # Qt 5: QgsField takes QVariant types
    from qgis.PyQt.QtCore import QVariant

    STRING, DOUBLE = QVariant.String, QVariant.Double
except (ImportError, AttributeError):  # Qt 6: QMetaType types
    from qgis.PyQt.QtCore import QMetaType

    STRING, DOUBLE = QMetaType.Type.QString, QMetaType.Type.Double

__all__ = ["DOUBLE", "STRING", "QAction"]
