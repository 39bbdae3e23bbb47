"""The screenshot script renders a PCA-RGB grid over the true-colour tile with a real map renderer."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO, TILES

pytestmark = pytest.mark.skipif(not (TILES / "rgb").is_dir(), reason="../shared/data is absent")


def test_screenshot_shows_the_grid_over_the_imagery(qgis_new_project, tmp_path):
    from qgis.PyQt.QtGui import QImage

    sys.path.insert(0, str(REPO / "scripts"))
    import screenshot_qgis

    out = screenshot_qgis.render(tmp_path / "shot.png", tmp_path / "work", size=300)
    img = QImage(str(out))
    assert (img.width(), img.height()) == (300, 300)
    pca = [lyr for lyr in qgis_new_project.mapLayers().values() if lyr.name().endswith("PCA-RGB")]
    assert len(pca) == 1
    # the centre shows the PCA layer (its pixel equals the PCA raster's value there), a corner the tile
    centre = pca[0].extent().center()
    block = pca[0].dataProvider().identify(centre, 1).results()  # QgsRaster.IdentifyFormatValue
    r, g, b = (int(block[i]) for i in (1, 2, 3))
    c = img.pixelColor(150, 150)
    assert (c.red(), c.green(), c.blue()) == pytest.approx((r, g, b), abs=2)
    corner = img.pixelColor(20, 280)
    assert (corner.red(), corner.green(), corner.blue()) != (255, 255, 255)
