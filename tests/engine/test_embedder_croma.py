"""CROMA embedder: fixed-statistics normalisation by hand, a reduced-depth checkpoint in the
published layout through the weights resolver, georeferenced grids, modalities and tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine
from eoembed.embedders.croma import S1_BANDS, S2_BANDS, CROMAEmbedder
from eoembed.embedders.registry import build_embedder, describe_model, resolve_model_id
from eoembed.errors import SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.croma import CROMA, CromaConfig
from eoembed.providers.base import make_observation
from eoembed.specs import InputPrep, OutputSpec
from seeded import seeded_state

#: the released base width, depth 2 (radar and joint encoders 1)
REDUCED = CromaConfig(dim=768, depth=2)
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    shapes = {k: tuple(v.shape) for k, v in CROMA(REDUCED).state_dict().items()}
    flat = seeded_state(shapes, 0, scale=0.02)
    parts = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")
    ckpt = {p: {k[len(p) + 1:]: v.half() for k, v in flat.items() if k.startswith(p + ".")} for p in parts}
    path = tmp_path_factory.mktemp("croma") / "CROMA_base.pt"
    torch.save(ckpt, path)
    return str(path)


def _obs(bands, h=120, w=120, seed=0):
    rng = np.random.default_rng(seed)
    vals = rng.uniform(0, 3000, (1, len(bands), h, w)).astype(np.float32)
    if bands[0] == "VV":
        vals[:, :2] = rng.uniform(-25, -5, (1, 2, h, w))
    from datetime import date

    return make_observation(vals, np.ones((1, h, w), bool), GridSpec("EPSG:32631", ORIGIN, w, h), bands,
                            [date(2024, 6, 1)])


def test_ids_aliases_and_card() -> None:
    assert resolve_model_id("CROMA") == "croma-base"
    card = describe_model("croma-large")
    assert card.dim == 1024 and card.license == "MIT" and card.image_size == 120 and card.grid_cell_px == 8
    assert card.bands == S2_BANDS and len(card.bands) == 12 and "B10" not in card.bands
    assert card.config["pooled"] == "optical_GAP" and "croma-base" in card.variants
    assert "SSL4EO" in card.preprocessing["statistics"]
    both = CROMAEmbedder(modality="both").describe()
    assert both.bands == S1_BANDS + S2_BANDS and both.config["pooled"] == "joint_GAP"


@pytest.mark.parametrize("kwargs", [{"modality": "radar"}, {"image_size": 100}, {"image_size": 0},
                                    {"size": "huge"}, {"fit": "pad"}])
def test_bad_options_are_spec_errors(kwargs) -> None:
    with pytest.raises(SpecError):
        CROMAEmbedder(**kwargs)


def test_normalisation_uses_fixed_ssl4eo_statistics() -> None:
    # B02: mean 1397.6, std 854.3 (SSL4EO-S12 L1C); VV: mean -12.59 dB, std 5.26
    emb = CROMAEmbedder(modality="both")
    x = torch.zeros(1, 14, 1, 4)
    x[0, 3] = torch.tensor([1397.6, 1397.6 + 2 * 854.3, 1397.6 - 854.3, 1e6])
    x[0, 0] = torch.tensor([-12.59, -12.59 - 2 * 5.26, -12.59 + 5.26, -99.0])
    y = emb.normalize(x)
    torch.testing.assert_close(y[0, 3, 0], torch.tensor([0.5, 1.0, 0.25, 1.0]))
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([0.5, 0.0, 0.75, 0.0]))
    # the same place gives the same input whatever else is in the batch
    a = emb.normalize(x[:, :, :, :1])
    b = emb.normalize(torch.cat([x[:, :, :, :1], x[:, :, :, :1] * 50]))[:1]
    torch.testing.assert_close(a, b)


def test_pooled_and_grid_come_from_the_loaded_network(checkpoint) -> None:
    emb = build_embedder("croma-base", weights=checkpoint)
    obs = _obs(S2_BANDS)
    [pooled] = emb.embed([obs], OutputSpec.pooled())
    [grid] = emb.embed([obs], OutputSpec.grid())
    x = emb.normalize(torch.from_numpy(obs.values(S2_BANDS)[:1]))
    with torch.no_grad():
        ref = emb.network(optical=x)
    np.testing.assert_allclose(pooled.to_numpy(), ref["optical_GAP"][0].numpy(), atol=1e-5)
    assert grid.data.shape == (768, 15, 15)
    np.testing.assert_allclose(grid.data.values[:, 0, 1], ref["optical_encodings"][0, 1].numpy(), atol=1e-5)
    # cells of 8 px = 80 m from the place's corner
    assert np.allclose(grid.data.x.values, 500_000 + 80 * (np.arange(15) + 0.5))
    assert np.allclose(grid.data.y.values, 4_000_000 - 80 * (np.arange(15) + 0.5))
    assert emb.weights_info["depth"] == 2 and len(emb.weights_info["sha256"]) == 64
    # the radar side is checked at load, then freed for an optical-only model
    assert emb.network.s1_encoder is None and emb.weights_info["parts_kept"] == ["s2_encoder", "s2_GAP_FFN"]
    with pytest.raises(ValueError, match="s1_encoder"):
        emb.network(sar=torch.zeros(1, 2, 8, 8))


def test_radar_and_joint_modalities(checkpoint) -> None:
    sar = build_embedder("croma-base", weights=checkpoint, modality="sar")
    both = build_embedder("croma-base", weights=checkpoint, modality="both")
    obs = _obs(S1_BANDS + S2_BANDS)
    [v_sar] = sar.embed([obs], OutputSpec.pooled())
    [v_both] = both.embed([obs], OutputSpec.pooled())
    assert v_sar.to_numpy().shape == v_both.to_numpy().shape == (768,)
    assert not np.allclose(v_sar.to_numpy(), v_both.to_numpy())
    [g] = both.embed([obs], OutputSpec.grid())
    assert g.data.shape == (768, 15, 15) and g.meta["config"]["grid"] == "joint_encodings"


def test_tiles_stitch_on_the_patch_lattice(checkpoint) -> None:
    emb = build_embedder("croma-base", weights=checkpoint, image_size=64)
    obs = _obs(S2_BANDS, h=100, w=150, seed=3)
    [grid] = emb.embed([obs], OutputSpec.grid(), InputPrep.tile())
    assert grid.data.shape == (768, 16, 24) and grid.meta["tiles"] == [2, 3]
    assert np.allclose(grid.data.x.values[:3], 500_000 + 80 * (np.arange(3) + 0.5))


def test_weights_of_another_width_are_refused(tmp_path) -> None:
    shapes = {k: tuple(v.shape) for k, v in CROMA(CromaConfig(64, 2)).state_dict().items()}
    flat = seeded_state(shapes, 0)
    parts = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")
    torch.save({p: {k[len(p) + 1:]: v for k, v in flat.items() if k.startswith(p + ".")} for p in parts},
               tmp_path / "small.pt")
    emb = build_embedder("croma-large", weights=str(tmp_path / "small.pt"))
    with pytest.raises(WeightsError, match="width 64"):
        emb.load()


@pytest.mark.parametrize("model", ["dofa-base", "dofa-large", "softcon-vits14", "softcon-vitb14", "croma-base",
                                   "croma-large", "clay-v1.5"])
def test_wave2_cards_need_no_weights_and_serialise(model) -> None:
    import json

    from eoembed.embedders.registry import list_models

    assert model in list_models()
    emb = build_embedder(model)
    card = emb.describe()
    assert card.id == model and not emb._loaded and not card.noncommercial
    assert json.loads(json.dumps(card.to_dict()))["id"] == model


def test_alias_with_an_option_selects_the_variant() -> None:
    assert describe_model("croma", size="large").id == "croma-large"
    assert describe_model("dofa", size="large").id == "dofa-large"
    assert describe_model("softcon", arch="vitb14").id == "softcon-vitb14"


def test_real_tile_through_the_local_provider(checkpoint, real_tiles) -> None:
    import rasterio
    from eoembed.api import get_embedding
    from eoembed.specs import BBox

    with rasterio.open(real_tiles[1]) as src:
        b, crs = src.bounds, src.crs.to_string()
    emb = build_embedder("croma-base", weights=checkpoint)
    out = get_embedding(emb, BBox(b.left, b.bottom, b.right, b.top, crs=crs), source=str(real_tiles[1]),
                        output=OutputSpec.grid())
    cell = (b.right - b.left) / 15  # the 224 px place resized to 120 px: 15 cells of 8 px
    assert out.to_numpy().shape == (768, 15, 15)
    assert np.allclose(out.data.x.values, b.left + cell * (np.arange(15) + 0.5), atol=1e-6)
    assert np.isfinite(out.to_numpy()).all()
