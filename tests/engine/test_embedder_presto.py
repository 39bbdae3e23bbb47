"""Presto embedder: the card, the real weights on the real tiles through the local provider
(pixels equal to upstream's numbers, per-pixel grids on the tiles' pixels), ROI pooling, masks."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from eoembed.embedders.presto import S2_BANDS, PrestoEmbedder
from eoembed.embedders.registry import build_embedder
from eoembed.errors import ModelError, SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.providers.base import make_observation
from eoembed.providers.local import LocalProvider
from eoembed.specs import BBox, FrameSpec, OutputSpec, SensorSpec, TemporalSpec

TILES = {"282D_485L_3_3": date(2021, 7, 23), "38D_378R_2_3": date(2023, 6, 10),
         "433D_629L_3_1": date(2020, 4, 8), "609U_541L_3_0": date(2020, 1, 11),
         "637U_59R_1_3": date(2017, 10, 30)}
# upstream nasaharvest/presto (single_file_presto.py, commit 13173d0) on the top-left 64×64
# pixels of each tile (S2 only, true month, each pixel's lat/lon): the mean of the pixel
# embeddings [:4] and the embedding of pixel (0, 0) [:4]
UPSTREAM_MEAN = {"282D_485L_3_3": [-1.001317, -2.851124, -0.819687, 1.561925],
                 "38D_378R_2_3": [-0.16908, -4.29285, 1.435353, -0.102849],
                 "433D_629L_3_1": [0.807799, -2.263165, 1.159852, 2.226931],
                 "609U_541L_3_0": [-0.179928, -3.005291, -0.371609, 0.8596],
                 "637U_59R_1_3": [-1.044265, -3.682574, 0.345173, 0.892696]}
UPSTREAM_PIXEL_0 = {"282D_485L_3_3": [-1.030306, -2.874688, -0.801269, 1.55183],
                    "38D_378R_2_3": [-0.397007, -4.381365, 1.477702, -0.031685],
                    "433D_629L_3_1": [0.556169, -2.266798, 1.095569, 1.988052],
                    "609U_541L_3_0": [-0.190421, -3.886707, -0.317034, 0.673693],
                    "637U_59R_1_3": [-1.033238, -4.498063, 0.131678, 1.804813]}


@pytest.fixture(scope="module")
def presto_dir(shared_dir):
    path = shared_dir / "weights" / "presto"
    if not (path / "default_model.pt").is_file():
        pytest.skip("the shared Presto weights are absent")
    return path


@pytest.fixture(scope="module")
def presto(presto_dir) -> PrestoEmbedder:
    return build_embedder("presto", weights=str(presto_dir))


def _fetch(tile, emb, col=0, row=0, width=64, height=64):
    with rasterio.open(tile) as src:
        t, crs = src.transform, src.crs.to_string()
    x0, y0 = t * (col, row)
    place = BBox(x0, y0 - height * 10.0, x0 + width * 10.0, y0, crs=crs)
    day = TILES[tile.stem]
    provider = LocalProvider(tile)
    when = TemporalSpec(day.isoformat(), date.fromordinal(day.toordinal() + 1).isoformat())
    return provider.fetch(provider.request(place, when, emb.sensor_for(SensorSpec()),
                                           emb.frames_for(None))), t


def _synthetic(months, valid=None, size=6, seed=0):
    rng = np.random.default_rng(seed)
    t = len(months)
    values = rng.uniform(200, 4000, (t, 10, size, size)).astype(np.float32)
    valid = np.ones((t, size, size), bool) if valid is None else valid
    grid = GridSpec("EPSG:32633", Affine(10.0, 0, 500_000.0, 0, -10.0, 5_000_000.0), size, size)
    return make_observation(values, valid, grid, S2_BANDS, [date(2021, m, 15) for m in months])


def test_card_needs_no_weights():
    card = PrestoEmbedder().describe()
    assert card.dim == 128 and card.bands == S2_BANDS and card.license == "MIT"
    assert card.temporal == "single" and card.outputs == ("pooled", "grid")
    assert "github.com/nasaharvest/presto" in card.weights
    assert card.preprocessing["div"] == [10000.0] * 10
    monthly = PrestoEmbedder(temporal=True, grid_cell=4).describe()
    assert monthly.temporal == "series" and monthly.frames == FrameSpec.by_month()
    assert monthly.grid_cell_px == 4


@pytest.mark.parametrize("kwargs", [{"temporal": 1}, {"grid_cell": 0}, {"grid_cell": 2.0}])
def test_bad_options_are_spec_errors(kwargs):
    with pytest.raises(SpecError):
        PrestoEmbedder(**kwargs)


def test_missing_weights_say_where_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="github.com/nasaharvest/presto"):
        PrestoEmbedder().load()


def test_weights_from_a_file_or_the_mirror_folder(presto_dir, monkeypatch, tmp_path):
    emb = PrestoEmbedder(weights=str(presto_dir / "default_model.pt"))
    emb.load()
    assert emb.weights_info["config"] == "default.json"
    mirror = tmp_path / "nasaharvest" / "presto"
    mirror.mkdir(parents=True)
    (mirror / "default_model.pt").symlink_to(presto_dir / "default_model.pt")
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path))
    from_mirror = PrestoEmbedder()
    from_mirror.load()
    assert from_mirror.weights_info["sha256"] == emb.weights_info["sha256"]
    assert from_mirror.weights_info["config"] == "defaults"  # no default.json in the mirror


def test_real_tiles_pixels_equal_upstream_and_lie_on_the_tile(presto, real_tiles):
    names, means = [], []
    for tile in real_tiles:
        if tile.stem not in TILES:
            continue
        obs, t = _fetch(tile, presto)
        [grid] = presto.embed([obs], OutputSpec.grid())
        values = grid.to_numpy()
        assert values.shape == (128, 64, 64)
        np.testing.assert_allclose(values[:4, 0, 0], UPSTREAM_PIXEL_0[tile.stem], atol=2e-4)
        np.testing.assert_allclose(values.mean(axis=(1, 2))[:4], UPSTREAM_MEAN[tile.stem],
                                   atol=2e-4)
        # one cell per pixel, on the tile's own pixel grid
        assert grid.transform.almost_equals(t, precision=1e-6)
        np.testing.assert_allclose(grid.data.x.values, t.c + 10.0 * (np.arange(64) + 0.5))
        np.testing.assert_allclose(grid.data.y.values, t.f - 10.0 * (np.arange(64) + 0.5))
        names.append(tile.stem)
        means.append(values.mean(axis=(1, 2)))
    if not names:
        pytest.skip("none of the shared tiles is present")
    unit = torch.nn.functional.normalize(torch.tensor(np.stack(means)), dim=1)
    cos = (unit @ unit.T).numpy()
    print("\nPresto place vectors (mean of 64x64 pixels, true locations): cosine similarity")
    print("\n".join(f"{n:>14} " + " ".join(f"{v:.3f}" for v in row) for n, row in zip(names, cos)))


def test_pooled_is_the_mean_of_the_place_pixels(presto, real_tiles):
    obs, _ = _fetch(real_tiles[0], presto, width=16, height=12)
    [grid] = presto.embed([obs], OutputSpec.grid())
    [pooled] = presto.embed([obs], OutputSpec.pooled())
    [pooled_max] = presto.embed([obs], OutputSpec.pooled("max"))
    pixels = grid.to_numpy().reshape(128, -1)
    np.testing.assert_allclose(pooled.to_numpy(), pixels.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled_max.to_numpy(), pixels.max(axis=1), rtol=1e-6)
    assert pooled.meta["pixels"] == 16 * 12
    # a polygon mask: only the pixels inside count
    roi = np.zeros((12, 16), bool)
    roi[2:7, 3:11] = True
    masked = make_observation(obs.values(), obs.valid, obs.grid, obs.bands, obs.dates, roi=roi)
    [inside] = presto.embed([masked], OutputSpec.pooled())
    want = grid.to_numpy()[:, 2:7, 3:11].reshape(128, -1).mean(axis=1)
    np.testing.assert_allclose(inside.to_numpy(), want, rtol=1e-5, atol=1e-5)
    assert inside.meta["pixels"] == 40


def test_grid_cells_average_pixels(presto_dir):
    obs = _synthetic([4], size=6)
    fine = PrestoEmbedder(weights=str(presto_dir)).embed([obs], OutputSpec.grid())[0]
    coarse = PrestoEmbedder(weights=str(presto_dir), grid_cell=4).embed([obs], OutputSpec.grid())[0]
    assert coarse.data.shape == (128, 2, 2)
    assert coarse.transform == Affine(40.0, 0, 500_000.0, 0, -40.0, 5_000_000.0)
    f = fine.to_numpy()
    np.testing.assert_allclose(coarse.to_numpy()[:, 0, 0], f[:, :4, :4].mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(coarse.to_numpy()[:, 1, 1], f[:, 4:, 4:].mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-5)


def test_invalid_pixels_have_no_embedding_and_are_not_pooled(presto_dir):
    emb = PrestoEmbedder(weights=str(presto_dir), temporal=True)
    valid = np.ones((2, 6, 6), bool)
    valid[:, 0, 0] = False  # never observed
    valid[0, 5, 5] = False  # observed in the second frame only
    obs = _synthetic([5, 6], valid)
    garbage = make_observation(np.where(valid[:, None], obs.values(), 9e4).astype(np.float32),
                               valid, obs.grid, obs.bands, obs.dates)
    [grid] = emb.embed([obs], OutputSpec.grid())
    [grid_garbage] = emb.embed([garbage], OutputSpec.grid())
    values = grid.to_numpy()
    assert np.isnan(values[:, 0, 0]).all()
    assert np.isfinite(values.reshape(128, -1)[:, 1:]).all()
    np.testing.assert_allclose(grid_garbage.to_numpy(), values, atol=1e-5, equal_nan=True)
    [pooled] = emb.embed([obs], OutputSpec.pooled())
    assert pooled.meta["pixels"] == 35 and pooled.meta["frames"]["months"] == [4, 5]
    np.testing.assert_allclose(pooled.to_numpy(),
                               np.nanmean(values.reshape(128, -1), axis=1), rtol=1e-5, atol=1e-5)
    empty = _synthetic([5], np.zeros((1, 6, 6), bool))
    with pytest.raises(ModelError, match="no valid pixel"):
        emb.embed([empty], OutputSpec.pooled())


def test_location_and_month_matter(presto_dir):
    emb = PrestoEmbedder(weights=str(presto_dir))
    obs = _synthetic([3])
    moved = make_observation(obs.values(), obs.valid,
                             GridSpec("EPSG:32618", obs.grid.transform, 6, 6), obs.bands, obs.dates)
    later = make_observation(obs.values(), obs.valid, obs.grid, obs.bands, [date(2021, 9, 15)])
    [a] = emb.embed([obs], OutputSpec.pooled())
    [b] = emb.embed([moved], OutputSpec.pooled())
    [c] = emb.embed([later], OutputSpec.pooled())
    assert not np.allclose(a.to_numpy(), b.to_numpy(), atol=1e-3)
    assert not np.allclose(a.to_numpy(), c.to_numpy(), atol=1e-3)
