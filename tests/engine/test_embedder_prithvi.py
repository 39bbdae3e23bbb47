"""Prithvi-EO-2.0 embedder: the card and constants (written out from upstream's config.json),
HLS preprocessing by hand, a real-size tiny-TL checkpoint in the published layout, pooled and
georeferenced grid outputs (resize and tile), frames and the TL side inputs."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from eoembed.api import get_embedding
from eoembed.embedders.prithvi import PrithviEmbedder, centre_latlon
from eoembed.embedders.registry import build_embedder, describe_model
from eoembed.errors import CapabilityError, SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.prithvi import PRESETS
from eoembed.providers.base import make_observation
from eoembed.providers.local import LocalProvider
from eoembed.specs import BBox, FrameSpec, InputPrep, OutputSpec, SensorSpec, TemporalSpec
from vit_layouts import prithvi_state

BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")
# Prithvi-EO-2.0-300M-TL config.json "mean" / "std" (also terratorch PRITHVI_V2_MEAN / _STD)
MEAN = [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]
STD = [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]
X0, Y0 = 500_000.0, 5_300_000.0  # UTM 33N, on the 15° E central meridian near 47.8° N


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("prithvi") / "Prithvi_EO_V2_tiny_TL.pt"
    torch.save(prithvi_state(PRESETS["tiny-tl"], 1, seed=3), path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt) -> PrithviEmbedder:
    return PrithviEmbedder(weights=tiny_ckpt)


def _obs(h: int, w: int, t: int = 1, seed: int = 0, res: float = 30.0):
    rng = np.random.default_rng(seed)
    vals = (rng.random((t, 6, h, w)) * 4000).astype(np.float32)
    grid = GridSpec("EPSG:32633", Affine(res, 0, X0, 0, -res, Y0), w, h)
    dates = [date(2021, 3 + 2 * i, 10) for i in range(t)]
    return make_observation(vals, np.ones((t, h, w), bool), grid, BANDS, dates)


def test_card_constants_and_variants_need_no_weights():
    card = PrithviEmbedder(weights="/nowhere").describe()
    assert card.bands == BANDS and card.dim == 192 and card.image_size == 224
    assert card.preprocessing["mean"] == MEAN and card.preprocessing["std"] == STD
    assert card.scale_m == 30.0 and card.temporal == "single" and card.license == "Apache-2.0"
    dims = {v: describe_model(f"prithvi-eo-2.0-{v}").dim
            for v in ("tiny-tl", "100m-tl", "300m", "300m-tl", "600m", "600m-tl")}
    assert dims == {"tiny-tl": 192, "100m-tl": 768, "300m": 1024, "300m-tl": 1024,
                    "600m": 1280, "600m-tl": 1280}
    big = describe_model("prithvi-eo-2.0-600m")
    assert big.grid_cell_px == 14 and big.preprocessing["side_inputs"] == "none"
    assert big.weights == ("hf:ibm-nasa-geospatial/Prithvi-EO-2.0-600M "
                           "(Prithvi_EO_V2_600M.pt)")
    tiny = describe_model("prithvi")
    assert tiny.id == "prithvi-eo-2.0-tiny-tl" and tiny.aliases == ("prithvi",)
    assert set(tiny.variants) == {f"prithvi-eo-2.0-{v}" for v in dims if v != "tiny-tl"}
    assert not tiny.noncommercial
    series = PrithviEmbedder(variant="300m-tl", temporal=True).describe()
    assert series.temporal == "series" and series.frames == FrameSpec.bins(4)


@pytest.mark.parametrize("kwargs", [{"variant": "1b"}, {"frames": 0}, {"temporal": "yes"},
                                    {"coords": 1}])
def test_bad_options_are_spec_errors(kwargs):
    with pytest.raises(SpecError):
        PrithviEmbedder(**kwargs)


def test_hls_standardisation_by_hand():
    emb = PrithviEmbedder()
    obs = _obs(224, 224)
    vals = obs.values(BANDS).copy()
    vals[0, :, 0, 0] = [1087 + 2248, 1342, 1433 - 2178, 2734, 1958 + 2 * 1242, 0.0]
    valid = np.ones((1, 224, 224), bool)
    valid[0, 5, 7] = False
    obs = make_observation(vals, valid, obs.grid, BANDS, obs.dates)
    x = emb.prepare([obs])
    assert x.shape == (1, 1, 6, 224, 224)
    torch.testing.assert_close(x[0, 0, :, 0, 0],
                               torch.tensor([1.0, 0.0, -1.0, 0.0, 2.0, -1363 / 1049]))
    assert x[0, 0, :, 5, 7].abs().max() == 0  # invalid → band mean → 0


def test_pooled_and_grid_on_the_place(tiny):
    emb = tiny
    obs = _obs(448, 336)
    grid = emb.embed([obs], OutputSpec.grid())[0]
    assert grid.to_numpy().shape == (192, 14, 14)
    assert grid.transform == Affine(336 * 30.0 / 14, 0, X0, 0, -448 * 30.0 / 14, Y0)
    pooled = emb.embed([obs], OutputSpec.pooled())[0]
    np.testing.assert_allclose(pooled.to_numpy(), grid.to_numpy().mean(axis=(1, 2)), atol=1e-5)
    lat, lon = centre_latlon(obs)
    assert pooled.meta["side_inputs"]["year_doy"] == [[2021, 69]]
    assert pooled.meta["side_inputs"]["lat_lon"] == [round(lat, 6), round(lon, 6)]
    # centre (505 040 E, 5 293 280 N) in UTM 33N: 5 040 m east of the 15° E central meridian
    # is 5040 / (111 320 · cos 47.79°) = 0.0675° of longitude
    assert 47.78 < lat < 47.80 and abs(lon - 15.0675) < 0.001
    assert emb.weights_info["loaded"] == 151 and emb.weights_info["dropped"] == 6


def test_tiles_stitch_on_the_native_grid(tiny):
    emb = tiny
    obs = _obs(300, 250)
    out = emb.embed([obs], OutputSpec.grid(), prep=InputPrep.tile())[0]
    assert out.to_numpy().shape == (192, 28, 28)
    assert out.transform == Affine(16 * 30.0, 0, X0, 0, -16 * 30.0, Y0)
    assert out.meta["tiles"] == [2, 2]


def test_side_inputs_and_frames_change_the_embedding(tiny, tiny_ckpt):
    with_coords = tiny
    without = PrithviEmbedder(weights=tiny_ckpt, coords=False)
    obs = _obs(224, 224, t=2)
    a = with_coords.embed([obs], OutputSpec.pooled())[0].to_numpy()
    b = without.embed([obs], OutputSpec.pooled())[0].to_numpy()
    assert np.abs(a - b).max() > 1e-3
    series = PrithviEmbedder(weights=tiny_ckpt, temporal=True, frames=2)
    res = series.embed([obs], OutputSpec.pooled())[0]
    assert res.meta["frames"]["count"] == 2
    assert res.meta["side_inputs"]["year_doy"] == [[2021, 69], [2021, 130]]
    assert np.abs(res.to_numpy() - a).max() > 1e-3
    with pytest.raises(CapabilityError, match="time series"):
        with_coords.check(OutputSpec.pooled(), frames=FrameSpec.bins(2))


def test_a_checkpoint_of_another_size_names_the_problem(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(prithvi_state(PRESETS["tiny-tl"], 1), path)
    with pytest.raises(WeightsError, match="shape mismatch encoder.cls_token"):
        build_embedder("prithvi-eo-2.0-100m-tl", weights=str(path)).load()


def test_real_tile_through_the_api_lands_on_the_place(shared_dir, tiny_ckpt):
    tile = shared_dir / "data" / "s2_l2a_tiles" / "282D_485L_3_3.tif"
    if not tile.is_file():
        pytest.skip("the shared Sentinel-2 tiles are absent")
    with rasterio.open(tile) as src:
        t, crs = src.transform, src.crs.to_string()
    x0, y0 = t * (0, 0)
    place = BBox(x0, y0 - 960.0, x0 + 960.0, y0, crs=crs)  # 32 × 32 px at Prithvi's 30 m
    when = TemporalSpec("2021-07-23", "2021-07-24")
    out = get_embedding("prithvi", place, when, source=str(tile), output=OutputSpec.grid(),
                        weights=tiny_ckpt)
    assert out.to_numpy().shape == (192, 14, 14) and np.isfinite(out.to_numpy()).all()
    assert out.crs == crs
    g = LocalProvider(tile).grid_for(place, SensorSpec(scale_m=30.0))  # the place on a 30 m grid
    assert g.res == (30.0, 30.0)
    left, bottom, right, top = g.bounds
    assert left <= x0 < x0 + 960 <= right and bottom <= y0 - 960 < y0 <= top
    assert out.transform == Affine(g.width * 30.0 / 14, 0, left, 0, -g.height * 30.0 / 14, top)
    assert out.meta["model"] == "prithvi-eo-2.0-tiny-tl"
    assert out.meta["side_inputs"]["year_doy"] == [[2021, 204]]
