"""The public API end to end on synthetic local imagery: results, batching and typed errors."""

from __future__ import annotations

import eoembed
import numpy as np
import pytest
from affine import Affine
from eoembed.embedders.base import Embedder, ModelCard
from eoembed.embedders.registry import build_embedder
from eoembed.errors import CapabilityError, ProviderError, SpecError
from eoembed.specs import (
    BBox,
    FrameSpec,
    Geometry,
    InputPrep,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)

UTM33 = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_400.0)  # 40×40 px: 500000..500400
CFG = {"features": 8}


@pytest.fixture
def scene(make_tiff):
    """A 10-band stack (B02…B12 by band count) of smooth random values, dated 2022-06-10."""
    rng = np.random.default_rng(0)
    data = (rng.uniform(500, 3500, size=(10, 40, 40))).astype(np.int16)
    return make_tiff("S2_20220610.tif", data, crs=UTM33, transform=ORIGIN)


PLACES = [
    PointBuffer(500_100, 5_000_300, 50, crs=UTM33),
    PointBuffer(500_300, 5_000_100, 80, crs=UTM33),
    BBox(500_020, 5_000_020, 500_130, 5_000_090, crs=UTM33),
    Geometry("POLYGON ((500200 5000200, 500390 5000210, 500250 5000390, 500200 5000200))", crs=UTM33),
]


def test_get_embedding_with_a_path_as_source(scene):
    e = eoembed.get_embedding("rcf", PLACES[0], TemporalSpec.year(2022), source=scene, model_config=CFG)
    v = e.to_numpy()
    assert v.shape == (8,) and v.dtype == np.float32 and np.isfinite(v).all() and (v > 0).any()
    assert e.meta["model"] == "rcf" and e.meta["window"] == "2022-01-01/2023-01-01"
    assert e.meta["source"]["scenes"] == ["S2_20220610"] and e.meta["crs"] == UTM33


def test_batch_equals_singles(scene):
    batch = eoembed.get_embeddings_batch("rcf", PLACES, source=str(scene), model_config=CFG)
    singles = [eoembed.get_embedding("rcf", p, source=scene, model_config=CFG) for p in PLACES]
    assert len(batch) == 4
    for b, s in zip(batch, singles):
        np.testing.assert_allclose(b.to_numpy(), s.to_numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(batch[0].to_numpy(), batch[1].to_numpy())


def test_grid_output_is_georeferenced_on_the_place(scene):
    e = eoembed.get_embedding("rcf", PLACES[1], source=scene, output=OutputSpec.grid(), model_config=CFG)
    # 16×16 px from x 500220, y 5000180; cells of 4 px = 40 m
    assert e.transform == Affine(40, 0, 500_220, 0, -40, 5_000_180)
    assert e.data.shape == (8, 4, 4) and e.crs == UTM33


def test_grid_equals_cell_means_of_the_pixel_features(scene):
    place = PointBuffer(500_200, 5_000_200, 40, crs=UTM33)  # 8×8 px → 2×2 cells of 4 px
    g = eoembed.get_embedding("rcf", place, source=scene, output=OutputSpec.grid(),
                              model_config={"features": 8, "grid_cell": 4}).to_numpy()
    p = eoembed.get_embedding("rcf", place, source=scene, model_config={"features": 8, "grid_cell": 4})
    # the pooled mean of all pixels is the mean of four equal-size cell means
    np.testing.assert_allclose(g.mean(axis=(1, 2)), p.to_numpy(), rtol=1e-5)


def test_time_window_without_imagery_is_a_provider_error(scene):
    with pytest.raises(ProviderError, match="none is dated in 2021-01-01..2022-01-01.*2022-06-10"):
        eoembed.get_embedding("rcf", PLACES[0], TemporalSpec.year(2021), source=scene, model_config=CFG)


def test_a_failing_place_in_a_batch_is_named(scene):
    places = [PLACES[0], PointBuffer(12.49, 41.89, 100)]
    with pytest.raises(ProviderError, match="place #1: no local imagery covers the place"):
        eoembed.get_embeddings_batch("rcf", places, source=scene, model_config=CFG)


def test_unknown_model_is_a_spec_error_before_anything_is_read(tmp_path):
    with pytest.raises(SpecError, match="unknown model 'clip-xl'.*eoembed models"):
        eoembed.get_embedding("clip-xl", PLACES[0], source=tmp_path / "nowhere")


class _PooledOnly(Embedder):
    """A stand-in model that gives only pooled output (for capability checks)."""

    family = "test"

    def describe(self) -> ModelCard:
        return ModelCard(id="pooled-only", family="test", summary="", bands=("B04", "B03", "B02"), scale_m=10,
                         image_size=224, temporal="single", outputs=("pooled",), dim=4, weights="none",
                         license="none")

    def _load(self) -> None:
        raise AssertionError("a refused request must not load weights")

    def embed_batch(self, observations, output):  # pragma: no cover - never reached
        raise AssertionError("a refused request must not run the model")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"output": OutputSpec.grid()}, "gives pooled output, not 'grid'"),
        ({"sensor": SensorSpec(bands=("B04", "B03"))}, "needs bands B04, B03, B02 .* lacks B02"),
        ({"frames": FrameSpec.bins(4)}, "not a time series"),
    ],
)
def test_impossible_requests_fail_before_fetching(tmp_path, kwargs, word):
    model = _PooledOnly("pooled-only")
    with pytest.raises(CapabilityError, match=word):
        eoembed.get_embedding(model, PLACES[0], source=tmp_path / "no-imagery-here", **kwargs)


def test_tiling_a_model_without_an_input_size_is_refused(tmp_path):
    with pytest.raises(CapabilityError, match="tiling does not apply"):
        eoembed.get_embedding("rcf", PLACES[0], source=tmp_path / "none", prep=InputPrep.tile(),
                              model_config=CFG)


def test_text_needs_a_text_encoder():
    with pytest.raises(CapabilityError, match="no text encoder"):
        eoembed.embed_text("rcf", "a forest")


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda s: eoembed.get_embedding("rcf", (12.0, 41.0), source=s), r"spatial must be a BBox"),
        (lambda s: eoembed.get_embeddings_batch("rcf", [PLACES[0], "x"], source=s), r"spatial\[1\]"),
        (lambda s: eoembed.get_embedding("rcf", PLACES[0], source=s, output="grid"), "output must be"),
        (lambda s: eoembed.get_embedding("rcf", PLACES[0], source="local"), "needs imagery"),
        (lambda s: eoembed.get_embedding("rcf", PLACES[0], source=s.parent / "missing.tif"),
         "neither a provider"),
        (lambda s: eoembed.get_embedding("rcf", PLACES[0], source=s, device="quantum"), "device='quantum'"),
    ],
)
def test_bad_arguments_are_spec_errors(scene, call, word):
    with pytest.raises(SpecError, match=word):
        call(scene)


def test_empty_batch_is_an_empty_list(scene):
    assert eoembed.get_embeddings_batch("rcf", [], source=scene) == []


def test_list_and_describe_models_load_nothing():
    assert "rcf" in eoembed.list_models() and "rcf-empirical" in eoembed.list_models()
    card = eoembed.describe_model("rcf")
    assert card.dim == 512 and card.outputs == ("pooled", "grid") and card.temporal == "single"
    emb = build_embedder("rcf")
    emb.describe()
    assert not emb._loaded and emb._filters is None


def test_aliases_fold_into_one_entry_and_lead_to_the_canonical_card():
    ids = eoembed.list_models()
    assert "galileo" not in ids and "remoteclip" not in ids  # aliases are not listed twice
    assert {"galileo-nano", "remoteclip-vit-b-32"} <= set(ids)
    assert {"galileo", "remoteclip"} <= set(eoembed.list_models(aliases=True))
    card = eoembed.describe_model("galileo")
    assert card.id == "galileo-nano"
    assert "galileo" in card.aliases
    assert set(card.variants) == {"galileo-tiny", "galileo-base"}


def test_alias_with_an_option_selects_the_matching_variant():
    assert eoembed.describe_model("galileo", size="base").id == "galileo-base"
    with pytest.raises(eoembed.SpecError, match="fixes size"):
        eoembed.describe_model("galileo-nano", size="base")
    with pytest.raises(eoembed.SpecError, match="did you mean"):
        eoembed.describe_model("galileo-huge")
