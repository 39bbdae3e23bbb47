"""SoftCon embedder: the README's 8-bit normalisation by hand, a reduced-depth checkpoint through
the weights resolver, S1, georeferenced grids and tiles."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch
from affine import Affine
from eoembed.embedders.registry import build_embedder, describe_model, resolve_model_id
from eoembed.embedders.softcon import S2_BANDS, SoftConEmbedder
from eoembed.errors import SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.softcon import SoftConConfig, SoftConViT
from eoembed.nn.timm_vit import to_timm_key
from eoembed.providers.base import make_observation
from eoembed.specs import InputPrep, OutputSpec
from seeded import seeded_state

ORIGIN = Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 6_000_000.0)


def _save(path, width: int, chans: int) -> str:
    model = SoftConViT(SoftConConfig(width, 1, width // 64, chans))
    shapes = {to_timm_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    shapes["mask_token"] = (1, width)
    torch.save({k: v.half() for k, v in seeded_state(shapes, 0, scale=0.02).items()}, path)
    return str(path)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("softcon")
    _save(folder / "B13_vits14_softcon.pth", 384, 13)
    _save(folder / "B2_vits14_softcon.pth", 384, 2)
    return str(folder)


def _obs(bands, h=224, w=224, seed=0):
    rng = np.random.default_rng(seed)
    vals = rng.uniform(0, 4000, (1, len(bands), h, w)).astype(np.float32)
    return make_observation(vals, np.ones((1, h, w), bool), GridSpec("EPSG:32632", ORIGIN, w, h), bands,
                            [date(2022, 5, 1)])


def test_ids_and_cards() -> None:
    assert resolve_model_id("softcon") == "softcon-vits14"
    card = describe_model("softcon-vitb14")
    assert card.dim == 768 and card.license == "Apache-2.0" and card.grid_cell_px == 14 and card.image_size == 224
    assert card.summary.startswith("SoftCon ViT-B/14 (S2)")
    assert card.bands == S2_BANDS and "B10" in card.bands and "softcon-vits14" in card.variants
    s1 = SoftConEmbedder(modality="s1")
    assert s1.describe().bands == ("VV", "VH") and s1.default_source() == ("hf:wangyi111/softcon",
                                                                           "B2_vits14_softcon.pth")


@pytest.mark.parametrize("kwargs", [{"arch": "vitl14"}, {"modality": "sar"}, {"normalization": "minmax"}])
def test_bad_options_are_spec_errors(kwargs) -> None:
    with pytest.raises(SpecError):
        SoftConEmbedder(**kwargs)


def test_readme_normalisation_by_hand() -> None:
    # B02: mean 1397.6, std 854.3 → 0–255 over [mean − 2σ, mean + 2σ], truncated to 8 bits, ÷ 255
    emb = SoftConEmbedder()
    x = torch.zeros(1, 13, 1, 4)
    x[0, 1] = torch.tensor([1397.6, 1397.6 - 854.3, 10_000.0, 0.0])  # 0 is 311 above mean - 2σ: 23.2
    y = emb.normalize(x)[0, 1, 0]
    assert y.tolist() == pytest.approx([127 / 255, 63 / 255, 1.0, 23 / 255], abs=1e-6)
    z = SoftConEmbedder(modality="s1", normalization="zscore").normalize(torch.tensor([[[[-12.59 + 5.26]], [[-20.26]]]]))
    assert z.flatten().tolist() == pytest.approx([1.0, 0.0])


def test_pooled_and_grid_come_from_the_network(weights_dir) -> None:
    emb = build_embedder("softcon-vits14", weights=weights_dir)
    obs = _obs(S2_BANDS)
    [pooled] = emb.embed([obs], OutputSpec.pooled())
    [grid] = emb.embed([obs], OutputSpec.grid())
    with torch.no_grad():
        cls, tokens, _ = emb.network(emb.normalize(torch.from_numpy(obs.values()[:1])))
    np.testing.assert_allclose(pooled.to_numpy(), cls[0].numpy(), atol=1e-5)
    assert grid.data.shape == (384, 16, 16)
    np.testing.assert_allclose(grid.data.values[:, 2, 3], tokens[0, 35].numpy(), atol=1e-5)
    assert np.allclose(grid.data.x.values, 400_000 + 140 * (np.arange(16) + 0.5))
    assert np.allclose(grid.data.y.values, 6_000_000 - 140 * (np.arange(16) + 0.5))
    assert emb.weights_info["file"] == "B13_vits14_softcon.pth" and emb.weights_info["dropped"] == 1


def test_s1_tiles_and_wrong_band_count(weights_dir) -> None:
    emb = build_embedder("softcon-vits14", weights=weights_dir, modality="s1")
    obs = _obs(("VV", "VH"), h=230, w=300, seed=1)
    [grid] = emb.embed([obs], OutputSpec.grid(), InputPrep.tile())
    assert grid.meta["tiles"] == [2, 2] and grid.data.shape == (384, 32, 32)
    wrong = build_embedder("softcon-vits14", weights=weights_dir + "/B2_vits14_softcon.pth")
    with pytest.raises(WeightsError, match="over 2 bands"):
        wrong.load()


def test_real_l2a_tile_lacks_b10_and_says_so(weights_dir, real_tiles) -> None:
    import rasterio
    from eoembed.api import get_embedding
    from eoembed.errors import EoembedError
    from eoembed.specs import BBox

    with rasterio.open(real_tiles[0]) as src:
        b, crs = src.bounds, src.crs.to_string()
    emb = build_embedder("softcon-vits14", weights=weights_dir)
    with pytest.raises(EoembedError, match="B10"):
        get_embedding(emb, BBox(b.left, b.bottom, b.right, b.top, crs=crs), source=str(real_tiles[0]))


def test_normalisation_acts_on_the_pixels_before_the_resize() -> None:
    # B02 pixels at the band mean (→ 127/255) and far below mean − 2σ (→ 0) in a 2×2 checkerboard:
    # normalised first, the upsampled input averages 127/255 and 0; resizing the raw values first
    # would spread the large negative values and clip nearly everything to 0
    emb = SoftConEmbedder(fit="squash")
    vals = np.zeros((1, 13, 2, 2), np.float32)
    vals[0, 1] = [[1397.6, -1e5], [-1e5, 1397.6]]
    obs = make_observation(vals, np.ones((1, 2, 2), bool), GridSpec("EPSG:32632", ORIGIN, 2, 2), S2_BANDS,
                           [date(2022, 5, 1)])
    x, _ = emb.prepare([obs])
    assert x.shape == (1, 13, 224, 224)
    assert float(x[0, 1].mean()) == pytest.approx(127 / 255 / 2, abs=0.01)
    assert float(x[0, 1].min()) >= 0.0 and float(x[0, 1].max()) <= 127 / 255 + 1e-6
