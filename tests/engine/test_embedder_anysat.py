"""AnySat embedder: a reduced-depth checkpoint in the upstream layout, the real TreeSatAI-TS
series as dated frames, patch grids georeferenced per patch size, and a real tile through the
local provider."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from eoembed.embedders.anysat import AnySatEmbedder
from eoembed.embedders.registry import build_embedder
from eoembed.errors import CapabilityError, SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.anysat import DEMO_S2_MEAN, DEMO_S2_STD, S2_BANDS, AnySatS2
from eoembed.providers.base import make_observation
from eoembed.providers.local import LocalProvider
from eoembed.specs import BBox, FrameSpec, OutputSpec, SensorSpec, TemporalSpec

#: the released width and heads, one block in each transformer (the release has 6)
REDUCED = {"dim": 768, "depth": 1, "heads": 12}
#: a made-up place for the (un-georeferenced) series: 6×6 px of 10 m in UTM 32N
ORIGIN = Affine(10.0, 0.0, 650_000.0, 0.0, -10.0, 5_400_060.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[str, AnySatS2]:
    torch.manual_seed(0)
    model = AnySatS2(**REDUCED).eval()
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.dtype.is_floating_point:
                v.copy_(v.half().float())
    sd = {k: v.half() for k, v in model.state_dict().items()}
    sd["projector_aerial.patch_embed.proj.weight"] = torch.zeros(4, 4, 10, 10, dtype=torch.float16)
    sd["projector_s1-asc.pad_parameter"] = torch.tensor(0.0, dtype=torch.float16)
    path = tmp_path_factory.mktemp("anysat") / "AnySat.pth"
    torch.save({"state_dict": sd}, path)
    return str(path), model


@pytest.fixture(scope="module")
def series(shared_dir):
    """Every 12th date of the real series as an Observation on a made-up 60 m place."""
    h5py = pytest.importorskip("h5py")
    path = shared_dir / "data" / "s2_timeseries" / "Abies_alba_1_1005_WEFL_NLF.h5"
    if not path.is_file():
        pytest.skip("the shared S2 time series is absent")
    with h5py.File(path, "r") as f:
        data = f["sen-2-data"][::12].astype(np.float32)
        names = [n.decode() for n in f["sen-2-products"][::12]]
    dates = [datetime.strptime(n.split("_")[2][:8], "%Y%m%d").date() for n in names]
    grid = GridSpec("EPSG:32632", ORIGIN, 6, 6)
    return make_observation(data, np.ones((len(dates), 6, 6), bool), grid, S2_BANDS, dates)


def test_card_describes_a_series_model_without_weights() -> None:
    card = AnySatEmbedder(patch_size_m=30, frames=8, weights="/nowhere.pth").describe()
    assert card.temporal == "series" and card.frames == FrameSpec.bins(8)
    assert card.dim == 768 and card.bands == S2_BANDS and card.license == "MIT"
    assert card.grid_cell_px == 3 and card.config["patch_size_m"] == 30
    assert card.preprocessing["mean"] == list(DEMO_S2_MEAN)
    assert "mean" not in AnySatEmbedder(normalization="tile").describe().preprocessing


@pytest.mark.parametrize("kwargs", [{"patch_size_m": 15}, {"patch_size_m": 0}, {"patch_size_m": -10},
                                    {"patch_size_m": 20.0}, {"frames": 0}, {"normalization": "zscore"}])
def test_bad_options_are_spec_errors(kwargs) -> None:
    with pytest.raises(SpecError):
        AnySatEmbedder(**kwargs)


def test_tile_vector_equals_the_network_on_demo_normalised_frames(checkpoint, series) -> None:
    path, model = checkpoint
    emb = build_embedder("anysat", weights=path, patch_size_m=20)
    [pooled] = emb.embed([series], OutputSpec.pooled())
    x = (torch.from_numpy(series.values()) - torch.tensor(DEMO_S2_MEAN).view(1, -1, 1, 1)) \
        / torch.tensor(DEMO_S2_STD).view(1, -1, 1, 1)
    days = torch.tensor([d.timetuple().tm_yday for d in series.dates])
    with torch.no_grad():
        want = model(x[None], days[None], 20)["tile"][0].numpy()
    np.testing.assert_allclose(pooled.to_numpy(), want, rtol=1e-4, atol=1e-4)
    meta = pooled.meta
    assert meta["frames"]["count"] == 13 and meta["frames"]["day_of_year"][0] == 2
    assert meta["normalization"] == "demo" and meta["patch_size_m"] == 20
    assert meta["weights"]["ignored_prefixes"] == ["projector_aerial.", "projector_s1-asc."]


@pytest.mark.parametrize(("patch_m", "side"), [(10, 6), (20, 3), (60, 1)])
def test_patch_grid_has_one_cell_per_patch_on_the_place(checkpoint, series, patch_m: int, side: int) -> None:
    path, _ = checkpoint
    [grid] = AnySatEmbedder(weights=path, patch_size_m=patch_m).embed([series], OutputSpec.grid())
    assert grid.data.shape == (768, side, side)
    assert grid.crs == "EPSG:32632"
    centres = 650_000.0 + patch_m * (np.arange(side) + 0.5)
    np.testing.assert_allclose(grid.data.x.values, centres)
    np.testing.assert_allclose(grid.data.y.values, 5_400_060.0 - patch_m * (np.arange(side) + 0.5))
    assert grid.transform == Affine(patch_m, 0, 650_000.0, 0, -patch_m, 5_400_060.0)


def test_normalisation_mode_changes_the_input_and_is_recorded(checkpoint, series) -> None:
    path, _ = checkpoint
    demo = AnySatEmbedder(weights=path, patch_size_m=60).embed([series], OutputSpec.pooled())[0]
    tile = AnySatEmbedder(weights=path, patch_size_m=60, normalization="tile").embed([series], OutputSpec.pooled())[0]
    assert tile.meta["normalization"] == "tile" and tile.meta["config"]["normalization"] == "tile"
    assert not np.allclose(demo.to_numpy(), tile.to_numpy(), atol=1e-4)
    # per-tile z-scores do not move when the whole series is brightened by a constant factor
    brighter = make_observation(series.values() * 1.5, series.valid, series.grid, series.bands, series.dates)
    again = AnySatEmbedder(weights=path, patch_size_m=60, normalization="tile").embed([brighter], OutputSpec.pooled())[0]
    np.testing.assert_allclose(again.to_numpy(), tile.to_numpy(), rtol=1e-4, atol=1e-4)


def test_real_tile_through_the_local_provider_is_cut_to_a_centred_square(checkpoint, shared_dir) -> None:
    path, _ = checkpoint
    tif = shared_dir / "data" / "s2_l2a_tiles" / "637U_59R_1_3.tif"
    if not tif.is_file():
        pytest.skip("the shared tile 637U_59R_1_3 is absent")
    with rasterio.open(tif) as src:
        t, crs = src.transform, src.crs.to_string()
    x0, y0 = t * (50, 60)
    box = BBox(x0, y0 - 12 * 10.0, x0 + 17 * 10.0, y0, crs=crs)  # 17 × 12 px
    emb = AnySatEmbedder(weights=path, patch_size_m=20, frames=1)
    provider = LocalProvider(tif)
    req = provider.request(box, TemporalSpec("2000-01-01", "2050-01-01"), emb.sensor_for(SensorSpec()),
                           emb.frames_for(None))
    obs = provider.fetch(req)
    [grid] = emb.embed([obs], OutputSpec.grid())
    h, w = obs.grid.height, obs.grid.width
    side = min(h, w) // 2 * 2
    r, c = (h - side) // 2, (w - side) // 2
    assert grid.data.shape == (768, side // 2, side // 2)
    assert grid.meta["input_window"] == [r, c, side, side]
    ot = obs.grid.transform
    assert grid.transform == Affine(20.0, 0, ot.c + 10.0 * c, 0, -20.0, ot.f - 10.0 * r)
    assert grid.crs == obs.grid.crs


def test_places_smaller_than_a_patch_and_foreign_checkpoints_fail_clearly(checkpoint, series, tmp_path) -> None:
    path, _ = checkpoint
    with pytest.raises(CapabilityError, match="smaller than one 70 m"):
        AnySatEmbedder(weights=path, patch_size_m=70).embed([series], OutputSpec.pooled())
    small = tmp_path / "small.pth"
    torch.save({"state_dict": AnySatS2(dim=64, depth=1, heads=4).state_dict()}, small)
    with pytest.raises(WeightsError, match="width 64"):
        AnySatEmbedder(weights=str(small)).load()
