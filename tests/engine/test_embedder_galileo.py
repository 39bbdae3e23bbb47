"""Galileo embedder: the card, the real nano weights on the real tiles through the local
provider (pooled equal to upstream's numbers, grids on the tiles' pixel edges), masks, frames."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from eoembed.embedders.galileo import S2_BANDS, GalileoEmbedder
from eoembed.embedders.registry import build_embedder
from eoembed.errors import CapabilityError, SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.providers.base import make_observation
from eoembed.providers.local import LocalProvider
from eoembed.specs import BBox, FrameSpec, Geometry, OutputSpec, SensorSpec, TemporalSpec

TILES = {"282D_485L_3_3": date(2021, 7, 23), "38D_378R_2_3": date(2023, 6, 10),
         "433D_629L_3_1": date(2020, 4, 8), "609U_541L_3_0": date(2020, 1, 11),
         "637U_59R_1_3": date(2017, 10, 30)}
# upstream nasaharvest/galileo (single_file_galileo.py, commit 0f0b5b9) on the top-left 64×64
# pixels of each tile, patch 8, S1 masked, true month: pooled[:4] and grid cell (row 2, col 5)[:3]
UPSTREAM_POOLED = {"282D_485L_3_3": [0.041982, -0.060719, 0.202102, -0.011002],
                   "38D_378R_2_3": [0.017877, 0.056039, 0.206175, 0.058733],
                   "433D_629L_3_1": [0.112559, -0.017714, 0.198187, 0.031532],
                   "609U_541L_3_0": [-0.035484, -0.041993, 0.202625, 0.076866],
                   "637U_59R_1_3": [0.042489, -0.018626, 0.246389, 0.00874]}
UPSTREAM_GRID_2_5 = {"282D_485L_3_3": [0.084891, -0.086998, 0.155898],
                     "38D_378R_2_3": [0.055915, 0.034829, 0.189003],
                     "433D_629L_3_1": [0.162044, 0.002114, 0.175173],
                     "609U_541L_3_0": [0.020608, -0.042282, 0.144728],
                     "637U_59R_1_3": [0.042262, -0.06213, 0.17794]}


@pytest.fixture(scope="module")
def nano_dir(shared_dir):
    path = shared_dir / "weights" / "galileo_nano"
    if not (path / "encoder.pt").is_file():
        pytest.skip("the shared Galileo nano weights are absent")
    return path


@pytest.fixture(scope="module")
def nano(nano_dir) -> GalileoEmbedder:
    return build_embedder("galileo", weights=str(nano_dir))


def _fetch(tile, emb, col=0, row=0, width=64, height=64, spatial=None):
    """The tile's pixels [row:row+height, col:col+width] through the local provider."""
    with rasterio.open(tile) as src:
        t, crs = src.transform, src.crs.to_string()
    x0, y0 = t * (col, row)
    place = spatial or BBox(x0, y0 - height * 10.0, x0 + width * 10.0, y0, crs=crs)
    day = TILES[tile.stem]
    provider = LocalProvider(tile)
    when = TemporalSpec(day.isoformat(), date.fromordinal(day.toordinal() + 1).isoformat())
    obs = provider.fetch(provider.request(place, when, emb.sensor_for(SensorSpec()),
                                          emb.frames_for(None)))
    return obs, t


def test_card_needs_no_weights_and_names_sizes():
    card = GalileoEmbedder(weights="/nowhere").describe()
    assert card.dim == 128 and card.bands == S2_BANDS and card.license == "MIT"
    assert card.temporal == "single" and card.frames is None and card.grid_cell_px == 8
    assert card.outputs == ("pooled", "grid")
    assert len(card.preprocessing["mean"]) == 10
    monthly = GalileoEmbedder(temporal=True, patch_size=4).describe()
    assert monthly.temporal == "series" and monthly.frames == FrameSpec.by_month()
    assert monthly.grid_cell_px == 4
    assert build_embedder("galileo-tiny").describe().dim == 192
    assert build_embedder("galileo-base").describe().dim == 768
    assert build_embedder("galileo", size="base").describe().weights == \
        "hf:nasaharvest/galileo (models/base/encoder.pt)"


@pytest.mark.parametrize("kwargs", [{"size": "huge"}, {"patch_size": 0}, {"patch_size": 9},
                                    {"patch_size": 4.0}, {"temporal": "yes"}])
def test_bad_options_are_spec_errors(kwargs):
    with pytest.raises(SpecError):
        GalileoEmbedder(**kwargs)


def test_missing_hub_weights_offline_fail_with_a_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("EOEMBED_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError, match="models/tiny/encoder.pt"):
        GalileoEmbedder(size="tiny").load()


def test_weights_as_folder_or_file_and_wrong_size_is_refused(nano_dir):
    emb = GalileoEmbedder(weights=str(nano_dir / "encoder.pt"))
    assert emb.describe().weights == str(nano_dir / "encoder.pt")
    emb.load()
    assert emb.weights_info["file"] == "encoder.pt" and len(emb.weights_info["sha256"]) == 64
    assert emb.weights_info["config"] == {"embedding_size": 128, "depth": 4, "num_heads": 8}
    with pytest.raises(WeightsError, match="128-wide"):
        GalileoEmbedder(size="tiny", weights=str(nano_dir)).load()


@pytest.mark.parametrize("name", sorted(TILES))
def test_real_tile_pooled_and_grid_equal_upstream(nano, real_tiles, name):
    tile = next((t for t in real_tiles if t.stem == name), None)
    if tile is None:
        pytest.skip(f"{name}.tif is absent")
    obs, t = _fetch(tile, nano)
    assert obs.dates == [TILES[name]]
    [pooled] = nano.embed([obs], OutputSpec.pooled())
    [grid] = nano.embed([obs], OutputSpec.grid())
    np.testing.assert_allclose(pooled.to_numpy()[:4], UPSTREAM_POOLED[name], atol=1e-4)
    np.testing.assert_allclose(grid.to_numpy()[:3, 2, 5], UPSTREAM_GRID_2_5[name], atol=1e-4)
    assert pooled.meta["frames"]["months"] == [TILES[name].month - 1]
    assert pooled.meta["weights"]["normalization"].startswith("normalization.json")
    # the grid lies on the tile's pixel edges: 80 m cells from the tile's top-left corner
    assert grid.data.shape == (128, 8, 8)
    assert grid.crs == obs.grid.crs
    assert grid.transform.almost_equals(t * Affine.scale(8), precision=1e-6)
    np.testing.assert_allclose(grid.data.x.values, t.c + 80.0 * (np.arange(8) + 0.5), atol=1e-6)
    np.testing.assert_allclose(grid.data.y.values, t.f - 80.0 * (np.arange(8) + 0.5), atol=1e-6)


def test_patch_size_sets_the_grid_and_odd_sizes_are_padded(nano_dir, real_tiles):
    tile = real_tiles[0]
    emb = GalileoEmbedder(weights=str(nano_dir), patch_size=4)
    obs, t = _fetch(tile, emb, col=10, row=20, width=30, height=18)  # not multiples of 4
    [grid] = emb.embed([obs], OutputSpec.grid())
    assert grid.data.shape == (128, 5, 8)  # ceil(18/4), ceil(30/4)
    assert grid.transform.almost_equals(t * Affine.translation(10, 20) * Affine.scale(4),
                                        precision=1e-6)
    values = grid.to_numpy()
    # padded pixels are invalid: the last row and column of cells are half real (kept), the
    # corner cell a quarter (masked, no value)
    assert np.isnan(values[:, 4, 7]).all()
    values[:, 4, 7] = 0.0
    assert np.isfinite(values).all()
    assert grid.meta["tokens"] == {"patch_frames": 40, "visible": 39}


def test_polygon_pools_the_tokens_inside_it(nano, real_tiles):
    tile = real_tiles[0]
    obs_box, t = _fetch(tile, nano)
    [grid] = nano.embed([obs_box], OutputSpec.grid())
    x0, y0 = t * (0, 0)
    crs = obs_box.grid.crs
    left_half = Geometry(f"POLYGON (({x0} {y0}, {x0 + 320} {y0}, {x0 + 320} {y0 - 640}, "
                         f"{x0} {y0 - 640}, {x0} {y0}))", crs=crs)
    obs_half, _ = _fetch(tile, nano, width=32, spatial=left_half)
    # context stays the polygon's bounding box; only the tokens inside it are pooled
    box_obs = make_observation(obs_box.values(), obs_box.valid, obs_box.grid, obs_box.bands,
                               obs_box.dates, roi=np.pad(np.ones((64, 32), bool), ((0, 0), (0, 32))))
    [pooled] = nano.embed([box_obs], OutputSpec.pooled())
    want = grid.to_numpy()[:, :, :4].mean(axis=(1, 2))
    np.testing.assert_allclose(pooled.to_numpy(), want, rtol=1e-5, atol=1e-5)
    assert obs_half.roi_mask.any()


def _synthetic(months, valid=None, size=16, seed=0):
    rng = np.random.default_rng(seed)
    t = len(months)
    values = rng.uniform(200, 4000, (t, 10, size, size)).astype(np.float32)
    valid = np.ones((t, size, size), bool) if valid is None else valid
    grid = GridSpec("EPSG:32633", Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0), size, size)
    dates = [date(2021, m, 15) for m in months]
    return make_observation(values, valid, grid, S2_BANDS, dates)


def test_invalid_patches_are_masked_and_never_leak(nano_dir):
    emb = GalileoEmbedder(weights=str(nano_dir), patch_size=4)
    valid = np.ones((1, 16, 16), bool)
    valid[0, :4, :4] = False  # one whole patch
    valid[0, 8:10, 12:16] = False  # half of another: still kept
    obs = _synthetic([5], valid)
    garbage = make_observation(np.where(valid[:, None], obs.values(), 1e5).astype(np.float32),
                               valid, obs.grid, obs.bands, obs.dates)
    [grid] = emb.embed([obs], OutputSpec.grid())
    [grid_garbage] = emb.embed([garbage], OutputSpec.grid())
    [pooled] = emb.embed([obs], OutputSpec.pooled())
    [pooled_garbage] = emb.embed([garbage], OutputSpec.pooled())
    values = grid.to_numpy()
    assert np.isnan(values[:, 0, 0]).all() and np.isfinite(values[:, 1:]).all()
    assert grid.meta["tokens"] == {"patch_frames": 16, "visible": 15}
    # the masked patch's pixel values do not matter; the half-valid patch's invalid pixels are
    # replaced by the band mean before the model sees them
    np.testing.assert_allclose(grid_garbage.to_numpy(), values, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(pooled_garbage.to_numpy(), pooled.to_numpy(), atol=1e-5)
    assert np.isfinite(pooled.to_numpy()).all()


def test_monthly_frames_use_each_frames_month(nano_dir):
    emb = GalileoEmbedder(weights=str(nano_dir), temporal=True, patch_size=8)
    obs = _synthetic([3, 4, 5])
    shifted = make_observation(obs.values(), obs.valid, obs.grid, obs.bands,
                               [date(2021, m, 15) for m in (9, 10, 11)])
    [a] = emb.embed([obs], OutputSpec.pooled())
    [b] = emb.embed([shifted], OutputSpec.pooled())
    assert a.meta["frames"]["months"] == [2, 3, 4]
    assert not np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-4)
    # a batch of places with different frame counts runs item by item and equals single runs
    one = _synthetic([6])
    both = emb.embed([obs, one], OutputSpec.pooled())
    np.testing.assert_allclose(both[0].to_numpy(), a.to_numpy(), atol=1e-5)
    too_many = _synthetic([1] * 25, size=8)
    with pytest.raises(CapabilityError, match="at most 24 frames"):
        emb.embed([too_many], OutputSpec.pooled())


def test_batch_equals_one_by_one(nano):
    observations = [_synthetic([m], seed=m) for m in (1, 6, 11)]
    batch = nano.embed(observations, OutputSpec.pooled())
    for obs, emb in zip(observations, batch):
        [single] = nano.embed([obs], OutputSpec.pooled())
        np.testing.assert_allclose(emb.to_numpy(), single.to_numpy(), atol=1e-5)
    with torch.inference_mode():
        assert nano.network.config.embedding_size == 128
