"""Render the plugin's grid output offscreen: a PCA-RGB embedding grid over a true-colour S2 tile.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshot_qgis.py [out.png]

Runs a real job through the plugin's runner (model rcf, one grid over a box inside the tile),
adds the results with the plugin's own layer code, and renders a QgsMapRendererParallelJob to
``resources/screenshot_plugin.png``. Needs ../shared/data (the tile and its RGB copy).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TILES = REPO / ".." / "shared" / "data" / "s2_l2a_tiles"
TILE = "637U_59R_1_3"  # agriculture, EPSG:32632
sys.path.insert(0, str(REPO / "qgis_plugin"))


def render(out: Path, work: Path, size: int = 900) -> Path:
    """Run the job, build the layers and write the PNG; returns `out`."""
    from eoembed_qgis.layers import add_results
    from eoembed_qgis.runner import run_job
    from qgis.core import (
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    tile = TILES / f"{TILE}.tif"
    rgb = QgsRasterLayer(str(TILES / "rgb" / f"{TILE}.tif"), "true colour", "gdal")
    if not rgb.isValid():
        raise SystemExit(f"{tile.parent} is missing; the screenshot needs the shared S2 tiles")
    QgsProject.instance().addMapLayer(rgb)
    e = rgb.extent()
    # a polygon over the middle of the tile: the grid covers it, the imagery shows around it
    x0, y0 = e.xMinimum() + 0.2 * e.width(), e.yMinimum() + 0.25 * e.height()
    x1, y1 = e.xMinimum() + 0.8 * e.width(), e.yMinimum() + 0.75 * e.height()
    job = {
        "model": "rcf", "model_config": {"features": 64, "grid_cell": 2}, "weights": None,
        "places": [{"id": "field", "wkt": f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"}],
        "crs": rgb.crs().authid(), "buffer_m": 320.0, "temporal": None, "output": "grid_extent",
        "source": {"kind": "local", "paths": [str(tile)]}, "device": "cpu", "out_dir": str(work),
        "name": "screenshot",
    }
    result = run_job(job, lambda pct, text: None, lambda: False)
    layers = add_results(result, job)
    pca = next(lyr for lyr in layers if lyr.name().endswith("PCA-RGB"))
    settings = QgsMapSettings()
    settings.setLayers([pca, rgb])  # top first
    settings.setDestinationCrs(rgb.crs())
    pad = 0.02 * e.width()
    settings.setExtent(QgsRectangle(e.xMinimum() - pad, e.yMinimum() - pad, e.xMaximum() + pad, e.yMaximum() + pad))
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job_r = QgsMapRendererParallelJob(settings)
    job_r.start()
    job_r.waitForFinished()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not job_r.renderedImage().save(str(out), "PNG"):
        raise SystemExit(f"could not write {out}")
    return out


def main() -> int:
    from qgis.core import QgsApplication

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "resources" / "screenshot_plugin.png"
    app = QgsApplication([], False)
    app.initQgis()
    try:
        with tempfile.TemporaryDirectory() as work:
            print(render(out, Path(work)))
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
