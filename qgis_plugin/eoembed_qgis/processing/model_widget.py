"""The model parameter's widget in QGIS 3.22: an editable combo of model ids, the value a string.

Storing the id (not an index) keeps saved models, batch files and ``qgis_process`` calls on the
same model when the list changes. The ids come from the plugin's model cache (no engine start).
"""

from __future__ import annotations

from processing.gui.wrappers import WidgetWrapper
from qgis.PyQt.QtWidgets import QComboBox

from ..model_cache import model_ids


class ModelWidgetWrapper(WidgetWrapper):
    """An editable combo box listing the cached model ids."""

    def createWidget(self):  # noqa: N802 - QGIS's name
        combo = QComboBox()
        combo.setEditable(True)
        for mid in model_ids():
            combo.addItem(mid, mid)
        return combo

    def setValue(self, value):  # noqa: N802
        self.setComboValue(value)

    def value(self):
        return self.comboValue()
