"""The README's main job: the offline demo on the BigEarthNet patches that bigearthnet-common ships."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import rasterio
from eoembed.demo import run_demo
from eoembed.export import read_geoparquet
from rasterio.errors import NotGeoreferencedWarning

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bigearthnet_common") is None, reason="bigearthnet-common is not installed"
)


def test_demo_writes_pooled_rows_grids_on_the_patches_and_a_preview(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = run_demo(tmp_path / "demo")
    pooled = read_geoparquet(out["pooled"])
    assert len(pooled["ids"]) == 7 and pooled["vectors"].shape == (7, 512)
    assert np.isfinite(pooled["vectors"]).all()
    assert pooled["crs"].endswith("4326") or "WGS 84" in pooled["crs"] or "CRS84" in pooled["crs"]
    patches = tmp_path / "cache" / "eoembed" / "bigearthnet-s2-example" / "BigEarthNet-S2-Example"
    assert len(out["grids"]) == 6
    for tif in out["grids"]:
        with rasterio.open(patches / tif.stem / f"{tif.stem}_B02.tif") as band, rasterio.open(tif) as grid:
            # the grid covers the 120 px patch exactly, in 4-pixel cells on the patch's own lattice
            assert grid.crs == band.crs
            assert grid.transform == band.transform * band.transform.scale(4, 4)
            assert (grid.width, grid.height) == (30, 30)
            assert grid.count == 512
    with warnings.catch_warnings():  # a PNG has no georeference, and that is right for a preview
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        png = rasterio.open(out["preview"])
    with png:
        assert png.driver == "PNG" and png.count == 3 and png.width > 120
    sim = out["similarity"]
    assert np.allclose(np.diag(sim), 1.0, atol=1e-5) and np.allclose(sim, sim.T, atol=1e-6)
    assert "most alike place" in capsys.readouterr().out
