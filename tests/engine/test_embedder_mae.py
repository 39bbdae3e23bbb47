"""SatMAE, SatMAE++ and Scale-MAE embedders: cards and licences, preprocessing against constants
written out from the upstream files, reduced-width checkpoints in the published layouts,
georeferenced grids (resize and tile) and Scale-MAE's GSD ratio."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch
from affine import Affine
from eoembed.embedders.registry import build_embedder, describe_model
from eoembed.embedders.satmae import SatMAEEmbedder
from eoembed.embedders.satmaepp import SatMAEPPEmbedder
from eoembed.embedders.scalemae import ScaleMAEEmbedder
from eoembed.errors import SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.mae import MAEConfig
from eoembed.providers.base import make_observation
from eoembed.specs import InputPrep, OutputSpec
from vit_layouts import mae_state

# SatMAE util/datasets.py CustomDatasetFromImages mean / std (SatMAE++ the same)
FMOW_MEAN = [0.4182007312774658, 0.4214799106121063, 0.3991275727748871]
FMOW_STD = [0.28774282336235046, 0.27541765570640564, 0.2764017581939697]
# satmae_pp util/datasets.py SentinelIndividualImageDataset, bands B2..B8, B8A, B11, B12
S2_MEAN = [1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144, 1645.40315151,
           1846.87040806, 1762.59530783, 1972.62420416, 1732.16362238, 1247.91870117]
S2_STD = [650.2842772, 712.12507725, 965.23119807, 948.9819932, 1108.06650639, 1258.36394548,
          1233.1492281, 1364.38688993, 1310.36996126, 1087.6020813]
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
RGB = ("B04", "B03", "B02")
X0, Y0 = 300_000.0, 4_000_000.0
RGB_SMALL = MAEConfig(width=64, depth=2, heads=4)
S2_SMALL = MAEConfig(width=64, depth=2, heads=4, img_size=96, patch_size=8, in_chans=10,
                     channel_dim=16, groups=((0, 1, 2, 6), (3, 4, 5, 7), (8, 9)))


@pytest.fixture
def small(monkeypatch):
    """The embedders at a reduced width (the published layout, 64 wide, 2 blocks)."""
    monkeypatch.setattr(SatMAEEmbedder, "encoder_config", lambda self: RGB_SMALL)
    monkeypatch.setattr(SatMAEPPEmbedder, "encoder_config",
                        lambda self: S2_SMALL if self.variant == "s2" else RGB_SMALL)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("mae")
    out = {}
    for name, cfg, kind, wrap in [("satmae.pth", RGB_SMALL, "satmae", True),
                                  ("s2.pth", S2_SMALL, "group", True),
                                  ("scalemae.pth", RGB_SMALL, "scalemae", False)]:
        sd = mae_state(cfg, kind, seed=5)
        # the authors' training checkpoints: {"model": …, "epoch": …}
        torch.save({"model": sd, "epoch": 799} if wrap else sd, root / name)
        out[kind] = str(root / name)
    return out


def _obs(h: int, w: int, bands=RGB, seed: int = 0, scale: float = 4000.0):
    rng = np.random.default_rng(seed)
    vals = (rng.random((1, len(bands), h, w)) * scale).astype(np.float32)
    grid = GridSpec("EPSG:32631", Affine(10.0, 0, X0, 0, -10.0, Y0), w, h)
    return make_observation(vals, np.ones((1, h, w), bool), grid, bands, [date(2022, 6, 1)])


def test_cards_licences_and_variants():
    cards = {m: describe_model(m) for m in ("satmae", "satmaepp-rgb", "satmaepp-s2", "scalemae")}
    assert all(c.dim == 1024 for c in cards.values())
    assert "CC BY-NC 4.0" in cards["satmae"].license and "CC BY-NC" in cards["scalemae"].license
    assert cards["satmaepp-rgb"].license == "Apache-2.0"
    assert cards["satmae"].noncommercial and cards["scalemae"].noncommercial
    assert not cards["satmaepp-s2"].noncommercial and not cards["satmaepp-rgb"].noncommercial
    assert cards["satmaepp-rgb"].aliases == ("satmae++", "satmaepp", "satmaepp_rgb")  # with rs-embed's ids
    assert cards["satmaepp-rgb"].variants == ("satmaepp-s2",)
    assert cards["scalemae"].aliases == ("scale-mae", "scalemae_rgb")
    assert cards["satmae"].preprocessing["mean"] == FMOW_MEAN
    assert cards["satmae"].preprocessing["std"] == FMOW_STD
    assert cards["scalemae"].preprocessing["mean"] == [0.485, 0.456, 0.406]
    assert cards["satmaepp-s2"].bands == S2_BANDS and cards["satmaepp-s2"].image_size == 96
    assert cards["satmaepp-s2"].grid_cell_px == 8
    assert cards["satmaepp-s2"].preprocessing["mean"] == S2_MEAN
    assert cards["satmaepp-s2"].preprocessing["std"] == S2_STD
    assert cards["satmaepp-s2"].preprocessing["groups"] == [
        ["B02", "B03", "B04", "B08"], ["B05", "B06", "B07", "B8A"], ["B11", "B12"]]
    assert cards["satmae"].weights == ("hf:MVRL/satmae-vitlarge-fmow-pretrain-800 "
                                       "(model.safetensors)")
    assert describe_model("satmaepp").id == "satmaepp-rgb"
    assert describe_model("satmaepp", variant="s2").id == "satmaepp-s2"  # an alias picks the variant
    with pytest.raises(SpecError):
        SatMAEPPEmbedder(variant="sar")
    with pytest.raises(SpecError):
        ScaleMAEEmbedder(base_resolution=0)


def test_rgb_and_sentinel_normalisation_by_hand():
    rgb = SatMAEEmbedder(rgb_max=2000)
    obs = _obs(224, 224)
    vals = obs.values().copy()
    vals[0, :, 0, 0] = [1000.0, 5000.0, 0.0]  # half, clipped to 1, zero
    x = rgb.prepare([make_observation(vals, obs.valid, obs.grid, RGB, obs.dates)])
    want = [(0.5 - FMOW_MEAN[0]) / FMOW_STD[0], (1 - FMOW_MEAN[1]) / FMOW_STD[1],
            -FMOW_MEAN[2] / FMOW_STD[2]]
    torch.testing.assert_close(x[0, 0, :, 0, 0], torch.tensor(want))

    s2 = SatMAEPPEmbedder(variant="s2")
    obs = _obs(96, 96, S2_BANDS)
    vals = obs.values().copy()
    vals[0, :, 0, 0] = S2_MEAN  # mean → (2s / 4s) · 255 = 127.5 → uint8 127
    vals[0, 0, 0, 1] = S2_MEAN[0] + 2.5 * S2_STD[0]  # above mean + 2 std → 255
    vals[0, 1, 0, 1] = 0.0  # B03: (0 − (1120.77 − 2·712.13)) / (4·712.13) · 255 = 27.17 → 27
    vals[0, 2, 0, 1] = -1500.0  # B04: below mean − 2 std = −794.2 → 0
    x = s2.prepare([make_observation(vals, obs.valid, obs.grid, S2_BANDS, obs.dates)])
    assert x.shape == (1, 1, 10, 96, 96)
    torch.testing.assert_close(x[0, 0, :, 0, 0], torch.full((10,), 127 / 255))
    torch.testing.assert_close(x[0, 0, :3, 0, 1], torch.tensor([1.0, 27 / 255, 0.0]))


def test_sentinel_values_are_normalised_before_the_resize():
    # a checkerboard of mean + 10 std (→ 1.0) and mean (→ 127/255) shrunk 2×: upstream clips
    # and quantises first, so cells average to ≈ (1 + 127/255) / 2; resizing first would
    # average the raw values to mean + 5 std, which clips to 1.0
    s2 = SatMAEPPEmbedder(variant="s2")
    obs = _obs(192, 192, S2_BANDS)
    mean = np.asarray(S2_MEAN, np.float32)[:, None, None]
    std = np.asarray(S2_STD, np.float32)[:, None, None]
    board = (np.indices((192, 192)).sum(0) % 2).astype(np.float32)
    vals = (mean + 10 * std * board)[None]
    x = s2.prepare([make_observation(vals, obs.valid, obs.grid, S2_BANDS, obs.dates)])
    inner = x[0, 0, :, 8:-8, 8:-8]
    assert x.shape == (1, 1, 10, 96, 96)
    assert float(inner.min()) > 0.70 and float(inner.max()) < 0.80


@pytest.mark.parametrize("model,kind,size,cell", [("satmae", "satmae", 224, 16),
                                                  ("satmaepp-s2", "group", 96, 8),
                                                  ("scalemae", "scalemae", 224, 16)])
def test_grids_cover_the_place_and_pooled_is_their_mean(small, ckpts, model, kind, size, cell):
    bands = S2_BANDS if kind == "group" else RGB
    emb = build_embedder(model, weights=ckpts[kind])
    obs = _obs(2 * size, size, bands)
    g = size // cell
    grid = emb.embed([obs], OutputSpec.grid())[0]
    assert grid.to_numpy().shape == (64, g, g)
    assert grid.transform == Affine(size * 10.0 / g, 0, X0, 0, -2 * size * 10.0 / g, Y0)
    pooled = emb.embed([obs], OutputSpec.pooled())[0]
    np.testing.assert_allclose(pooled.to_numpy(), grid.to_numpy().mean(axis=(1, 2)), atol=1e-5)
    tiled = emb.embed([obs], OutputSpec.grid(), prep=InputPrep.tile())[0]
    assert tiled.to_numpy().shape == (64, 2 * g, g) and tiled.meta["tiles"] == [2, 1]
    assert tiled.transform == Affine(cell * 10.0, 0, X0, 0, -cell * 10.0, Y0)
    assert emb.weights_info["loaded"] == len(emb.network.state_dict())


def test_scalemae_gsd_ratio_follows_the_resize(small, ckpts):
    emb = ScaleMAEEmbedder(weights=ckpts["scalemae"])
    native = _obs(224, 224)
    coarse = _obs(448, 448)
    assert emb.embed([native], OutputSpec.pooled())[0].meta["input_res"] == 1.0
    assert emb.embed([coarse], OutputSpec.pooled())[0].meta["input_res"] == 2.0
    half = ScaleMAEEmbedder(weights=ckpts["scalemae"], base_resolution=0.5)
    a = emb.embed([native], OutputSpec.pooled())[0].to_numpy()
    b = half.embed([native], OutputSpec.pooled())[0].to_numpy()
    assert np.abs(a - b).max() > 1e-3  # the ratio reaches the positions


def test_wrong_checkpoint_names_the_first_offending_keys(small, ckpts):
    emb = SatMAEPPEmbedder(variant="rgb", weights=ckpts["group"])
    with pytest.raises(WeightsError, match=r"patch_embed\.proj\.weight.*unexpected patch_embed\.0"):
        emb.load()
