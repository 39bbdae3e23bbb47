"""DOFA embedder: the 0–255 encoding and statistics by hand, band subsets and S1 through
wavelengths, a reduced-depth checkpoint through the weights resolver, grids and tiles."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch
from affine import Affine
from eoembed.embedders.dofa import DOFAEmbedder
from eoembed.embedders.registry import build_embedder, describe_model, resolve_model_id
from eoembed.errors import SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.dofa import DOFA, DofaConfig
from eoembed.nn.timm_vit import to_timm_key
from eoembed.providers.base import make_observation
from eoembed.specs import InputPrep, OutputSpec
from seeded import seeded_state

ORIGIN = Affine(10.0, 0.0, 300_000.0, 0.0, -10.0, 5_000_000.0)


def _save(path, width: int) -> str:
    shapes = {to_timm_key(k): tuple(v.shape) for k, v in DOFA(DofaConfig(width, 1, width // 64)).state_dict().items()}
    torch.save({"model": {k: v.half() for k, v in seeded_state(shapes, 0, scale=0.02).items()}}, path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return _save(tmp_path_factory.mktemp("dofa") / "DOFA_ViT_base_e100.pth", 768)


def _obs(bands, h=224, w=224, seed=0):
    rng = np.random.default_rng(seed)
    vals = rng.uniform(200, 4000, (1, len(bands), h, w)).astype(np.float32)
    return make_observation(vals, np.ones((1, h, w), bool), GridSpec("EPSG:32633", ORIGIN, w, h), bands,
                            [date(2023, 7, 1)])


def test_ids_card_and_wavelengths() -> None:
    assert resolve_model_id("dofa") == "dofa-base"
    card = describe_model("dofa-large")
    assert card.dim == 1024 and card.license == "CC-BY-4.0" and card.image_size == 224 and card.grid_cell_px == 16
    assert card.bands == ("B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12")
    assert card.preprocessing["wavelengths_um"] == [0.665, 0.56, 0.49, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19]
    s1 = DOFAEmbedder(bands=["vv", "vh"])
    assert s1.wavelengths_um() == (3.75, 3.75) and s1.describe().bands == ("VV", "VH")


@pytest.mark.parametrize("bands", [[], ["B01"], ["B04", "VV"], ["B04", "B04"]])
def test_bad_band_sets_are_spec_errors(bands) -> None:
    with pytest.raises(SpecError):
        DOFAEmbedder(bands=bands)


def test_normalisation_by_hand() -> None:
    emb = DOFAEmbedder(bands=["B08", "B04"])
    x = torch.tensor([[[[101.435633 * 32, 0.0, 20000.0]], [[114.1099739 * 2000 / 255, 1000.0, 3000.0]]]])
    y = emb.normalize(x)
    # B08: / 32 onto 0–255 (mean 101.435633, std 60.29744676); B04: ESA TCI 0–2000 → 0–255
    assert y[0, 0, 0].tolist() == pytest.approx([0.0, -101.435633 / 60.29744676, (255 - 101.435633) / 60.29744676],
                                                abs=1e-5)
    assert y[0, 1, 0].tolist() == pytest.approx([0.0, (127.5 - 114.1099739) / 77.84352553,
                                                 (255 - 114.1099739) / 77.84352553], abs=1e-5)
    s1 = DOFAEmbedder(bands=["VH"])
    assert s1.normalize(torch.tensor([[[[-20.26 + 5.91]]]])).item() == pytest.approx(1.0)
    assert s1.fill_values().tolist() == pytest.approx([-20.26])


def test_pooled_and_grid_come_from_the_network(checkpoint) -> None:
    emb = build_embedder("dofa-base", weights=checkpoint, bands=["B02", "B03", "B04", "B08"])
    obs = _obs(("B02", "B03", "B04", "B08"))
    [pooled] = emb.embed([obs], OutputSpec.pooled())
    [grid] = emb.embed([obs], OutputSpec.grid())
    x = emb.normalize(torch.from_numpy(obs.values()[:1]))
    with torch.no_grad():
        ref, tokens, _ = emb.network(x, torch.tensor([0.49, 0.56, 0.665, 0.842]))
    np.testing.assert_allclose(pooled.to_numpy(), ref[0].numpy(), atol=1e-5)
    assert grid.data.shape == (768, 14, 14)
    np.testing.assert_allclose(grid.data.values[:, 1, 0], tokens[0, 14].numpy(), atol=1e-5)
    assert np.allclose(grid.data.x.values, 300_000 + 160 * (np.arange(14) + 0.5))
    assert np.allclose(grid.data.y.values, 5_000_000 - 160 * (np.arange(14) + 0.5))
    assert emb.weights_info["loaded"] == 38 and emb.weights_info["depth"] == 1


def test_s1_and_tiles(checkpoint) -> None:
    emb = build_embedder("dofa-base", weights=checkpoint, bands=["VV", "VH"])
    obs = _obs(("VV", "VH"), h=300, w=230, seed=2)
    [grid] = emb.embed([obs], OutputSpec.grid(), InputPrep.tile())
    assert grid.meta["tiles"] == [2, 2] and grid.data.shape == (768, 28, 28)
    [vec] = emb.embed([obs], OutputSpec.pooled())
    assert np.isfinite(vec.to_numpy()).all()


def test_weights_of_another_width_are_refused(tmp_path) -> None:
    emb = build_embedder("dofa-large", weights=_save(tmp_path / "b.pth", 128))
    with pytest.raises(WeightsError, match="width 128"):
        emb.load()


def test_real_tile_through_the_local_provider(checkpoint, real_tiles) -> None:
    import rasterio
    from eoembed.api import get_embedding
    from eoembed.specs import BBox

    with rasterio.open(real_tiles[0]) as src:
        b, crs = src.bounds, src.crs.to_string()
    emb = build_embedder("dofa-base", weights=checkpoint)
    out = get_embedding(emb, BBox(b.left, b.bottom, b.right, b.top, crs=crs), source=str(real_tiles[0]),
                        output=OutputSpec.grid())
    cell = (b.right - b.left) / 14
    assert out.to_numpy().shape == (768, 14, 14) and out.crs == crs
    assert np.allclose(out.data.x.values, b.left + cell * (np.arange(14) + 0.5), atol=1e-6)
    assert np.allclose(out.data.y.values, b.top - cell * (np.arange(14) + 0.5), atol=1e-6)
    assert np.isfinite(out.to_numpy()).all() and out.meta["config"]["bands"][0] == "B04"
