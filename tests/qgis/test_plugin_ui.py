"""The toolbar action's enabled state and the dialog's defaults and memory, in a real QGIS."""

from __future__ import annotations

import pytest
from conftest import memory_layer
from qgis.core import QgsProject

CARDS = {
    "rcf": {"id": "rcf", "summary": "Random convolutional features", "bands": ["B02", "B03"], "scale_m": 10.0,
            "dim": 512, "outputs": ["pooled", "grid"], "temporal": "single", "weights": "none", "license": "Apache-2.0"},
    "other": {"id": "other", "summary": "x", "bands": ["B04"], "scale_m": 20.0, "dim": 8, "outputs": ["pooled"],
              "temporal": "series", "weights": "hub:x", "license": "MIT"},
}


@pytest.mark.parametrize(
    ("kind", "select", "enabled", "why"),
    [
        ("Point", False, False, "Select the features"),
        ("Point", True, True, None),
        ("Polygon", True, True, None),
        ("LineString", True, False, "holds lines"),
    ],
)
def test_action_enabled_only_for_selected_points_or_polygons(plugin, qgis_iface, qgis_new_project,
                                                            kind, select, enabled, why):
    wkt = {"Point": "POINT(10 50)", "Polygon": "POLYGON((10 50,10.01 50,10.01 50.01,10 50))",
           "LineString": "LINESTRING(10 50,10.01 50.01)"}[kind]
    layer = memory_layer(kind, "EPSG:4326", [wkt, wkt])
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    qgis_iface.currentLayerChanged.emit(None)
    if select:
        layer.selectByIds([layer.allFeatureIds()[0]])  # selectionChanged must update the action
    assert plugin.action.isEnabled() is enabled
    if why:
        assert why in plugin.action.toolTip()
    else:
        assert "1 selected" in plugin.action.toolTip()


def test_action_follows_selection_and_active_layer_changes(plugin, qgis_iface, qgis_new_project, project_rasters):
    layer = memory_layer("Point", "EPSG:4326", ["POINT(10 50)"])
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    qgis_iface.currentLayerChanged.emit(None)
    layer.selectAll()
    assert plugin.action.isEnabled()
    layer.removeSelection()
    assert not plugin.action.isEnabled()
    layer.selectAll()
    qgis_iface.setActiveLayer(project_rasters[0])
    qgis_iface.currentLayerChanged.emit(None)
    assert not plugin.action.isEnabled()
    assert "not a vector layer" in plugin.action.toolTip()


def test_dialog_defaults_then_remembers_last_choices(qgis_new_project, clean_settings, project_rasters, tmp_path):
    from eoembed_qgis.dialog import DEFAULTS, EmbedDialog

    layer = memory_layer("Point", "EPSG:4326", ["POINT(10 50)"])
    QgsProject.instance().addMapLayer(layer)
    dlg = EmbedDialog(layer, cards=CARDS)
    o = dlg.options()
    assert (o["model"], o["output"], o["time_mode"], o["source"], o["device"]) == ("rcf", "pooled", "all", "project", "cpu")
    assert o["buffer_m"] == DEFAULTS["buffer_m"] == 320.0
    assert sorted(o["raster_layers"]) == sorted(r.id() for r in project_rasters)
    assert "dims: 512" in dlg.model_info.text() and "licence: Apache-2.0" in dlg.model_info.text()

    dlg.model_combo.setCurrentIndex(dlg.model_combo.findData("other"))
    assert "dims: 8" in dlg.model_info.text() and "hub:x" in dlg.model_info.text()
    dlg.time_year.setChecked(True)
    dlg.year_spin.setValue(2020)
    dlg.output_combo.setCurrentIndex(dlg.output_combo.findData("grid_extent"))
    dlg.buffer_spin.setValue(500)
    dlg.id_combo.setCurrentIndex(dlg.id_combo.findData("name"))
    dlg.out_edit.setText(str(tmp_path))
    dlg.accept()

    again = EmbedDialog(layer, cards=CARDS).options()
    assert (again["model"], again["time_mode"], again["year"], again["output"], again["buffer_m"],
            again["id_field"], again["out_dir"]) == ("other", "year", 2020, "grid_extent", 500.0, "name", str(tmp_path))


def test_model_cards_come_from_the_engine_process():
    from eoembed_qgis.dialog import model_cards

    cards = model_cards(refresh=True)
    assert "rcf" in cards
    assert cards["rcf"]["dim"] > 0 and "B04" in cards["rcf"]["bands"] and cards["rcf"]["license"]


def test_big_jobs_ask_first():
    from eoembed_qgis.dialog import needs_confirm

    assert not needs_confirm({"items": 200, "pixels": 50e6})
    assert needs_confirm({"items": 201, "pixels": 1.0})
    assert needs_confirm({"items": 1, "pixels": 50e6 + 1})


@pytest.mark.parametrize(("answer", "started"), [("No", False), ("Yes", True)])
def test_big_selection_shows_estimate_and_waits_for_yes(plugin, qgis_new_project, monkeypatch, tmp_path,
                                                        answer, started):
    from eoembed_qgis import dialog
    from eoembed_qgis.task import EmbedTask
    from qgis.core import QgsApplication

    asked: list[str] = []

    def question(parent, title, text):
        asked.append(text)
        return getattr(dialog.QMessageBox, answer)

    monkeypatch.setattr(dialog.QMessageBox, "question", question)
    monkeypatch.setattr(QgsApplication.taskManager(), "addTask", lambda task: None, raising=False)
    wkts = [f"POINT({550000 + 10 * i} 6343000)" for i in range(250)]
    layer = memory_layer("Point", "EPSG:32632", wkts)
    layer.selectAll()
    import numpy as np
    from conftest import write_tif

    write_tif(tmp_path / "s2.tif", np.ones((12, 4, 4), np.int16), "EPSG:32632", (550000, 10, 0, 6343100, 0, -10))
    options = {"model": "rcf", "source": "local", "local_paths": [str(tmp_path)], "out_dir": str(tmp_path)}
    task = plugin.start_job(layer, options)
    assert len(asked) == 1 and "250 features" in asked[0] and "million pixels" in asked[0]
    assert isinstance(task, EmbedTask) is started


def test_toolbar_action_opens_dialog_and_starts_job_with_its_choices(plugin, qgis_iface, qgis_new_project,
                                                                     monkeypatch, tmp_path):
    from eoembed_qgis import dialog
    from qgis.PyQt.QtWidgets import QDialog

    def fake_exec(self):
        self.output_combo.setCurrentIndex(self.output_combo.findData("grid"))
        self.out_edit.setText(str(tmp_path))
        self.accept()
        return QDialog.Accepted

    started = []
    monkeypatch.setattr(dialog.EmbedDialog, "exec", fake_exec)
    monkeypatch.setattr(plugin, "start_job", lambda layer, options, **kw: started.append((layer, options, kw)))
    layer = memory_layer("Polygon", "EPSG:4326", ["POLYGON((10 50,10.01 50,10.01 50.01,10 50))"])
    QgsProject.instance().addMapLayer(layer)
    qgis_iface.setActiveLayer(layer)
    layer.selectAll()
    plugin.action.trigger()
    ((got_layer, options, kw),) = started
    assert got_layer is layer and options["output"] == "grid" and options["out_dir"] == str(tmp_path)
    assert "rcf" in kw["cards"]


def test_settings_are_a_page_of_the_options_dialog(clean_settings, tmp_path):
    from eoembed_qgis import settings
    from eoembed_qgis.options_page import EoembedOptionsFactory

    factory = EoembedOptionsFactory()
    assert factory.title() == "eoembed" and not factory.icon().isNull()
    page = factory.createWidget(None)
    page.widget.python_edit.setText(str(tmp_path / "py"))
    page.widget.weights_edit.setPlainText("galileo-nano = /data/nano.pt")
    page.apply()
    assert settings.get("engine_python") == str(tmp_path / "py") and settings.engine_python() == str(tmp_path / "py")
    assert settings.weights_for("galileo-nano") == "/data/nano.pt" and settings.weights_for("rcf") is None
