"""eoembed.analysis against hand-computed answers: similarity, references, PCA, k-means, text."""

from __future__ import annotations

import math

import eoembed
import eoembed.api
import numpy as np
import pytest
import shapely.geometry
from affine import Affine
from eoembed import CapabilityError, SpecError
from eoembed.embedding import Embedding, grid_dataarray
from eoembed.grid import GridSpec
from pyproj import Transformer

X0, Y0, RES = 500_000.0, 4_000_000.0, 10.0
CRS = "EPSG:32633"


def make_grid(values: np.ndarray, model: str = "test") -> Embedding:
    d, h, w = values.shape
    grid = GridSpec(CRS, Affine(RES, 0.0, X0, 0.0, -RES, Y0), w, h)
    return Embedding(grid_dataarray(values.astype(np.float32), grid), {"model": model})


def test_cosine_similarity_matches_hand_computed_values() -> None:
    v = np.zeros((3, 2, 3), np.float32)
    v[:, 0, 0] = [1, 0, 0]      # same direction → 1
    v[:, 0, 1] = [0, 2, 0]      # orthogonal → 0
    v[:, 0, 2] = [3, 3, 0]      # 45° → 1/√2
    v[:, 1, 0] = [-5, 0, 0]     # opposite → -1
    v[:, 1, 1] = [0, 0, 0]      # zero vector → no data
    v[:, 1, 2] = [1, np.nan, 0]  # nodata → no data
    out = eoembed.cosine_similarity_map(make_grid(v), np.array([2.0, 0.0, 0.0]))
    got = out.to_numpy()
    assert got.shape == (1, 2, 3)
    expected = np.array([[1.0, 0.0, 1 / math.sqrt(2)], [-1.0, np.nan, np.nan]])
    np.testing.assert_allclose(got[0], expected, atol=1e-6, equal_nan=True)
    assert out.crs == CRS and out.transform == Affine(RES, 0.0, X0, 0.0, -RES, Y0)
    assert list(out.data.coords["band"].values) == ["similarity"]
    np.testing.assert_allclose(out.data.coords["x"].values, X0 + RES * (np.arange(3) + 0.5))


@pytest.mark.parametrize("bad", [np.ones(4), np.zeros(3), np.array([1.0, np.nan, 0.0])])
def test_cosine_similarity_rejects_bad_references(bad: np.ndarray) -> None:
    with pytest.raises(SpecError):
        eoembed.cosine_similarity_map(make_grid(np.ones((3, 2, 2))), bad)


def _indexed_grid() -> Embedding:
    """Cell (row, col) holds the vector [row, col, 1]."""
    h, w = 4, 5
    rows, cols = np.mgrid[0:h, 0:w]
    return make_grid(np.stack([rows, cols, np.ones((h, w))]))


def test_reference_at_picks_the_cell_containing_the_coordinate() -> None:
    g = _indexed_grid()
    # x in column 3 (500030..500040), y in row 2 (3999980..3999970)
    np.testing.assert_array_equal(eoembed.reference_at(g, X0 + 35.0, Y0 - 25.0), [2, 3, 1])
    np.testing.assert_array_equal(eoembed.reference_at(g, X0 + 0.01, Y0 - 0.01), [0, 0, 1])
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(X0 + 45.0, Y0 - 35.0)
    np.testing.assert_array_equal(eoembed.reference_at(g, lon, lat, crs="EPSG:4326"), [3, 4, 1])


@pytest.mark.parametrize("xy", [(X0 - 1.0, Y0 - 5.0), (X0 + 5.0, Y0 + 1.0), (X0 + 50.0, Y0 - 5.0), (X0 + 5, Y0 - 40)])
def test_reference_at_outside_the_grid_is_a_spec_error(xy: tuple[float, float]) -> None:
    with pytest.raises(SpecError, match="outside the grid"):
        eoembed.reference_at(_indexed_grid(), *xy)


def test_reference_at_a_nodata_cell_is_a_spec_error() -> None:
    v = np.ones((2, 2, 2))
    v[0, 1, 1] = np.nan
    with pytest.raises(SpecError, match="no data"):
        eoembed.reference_at(make_grid(v), X0 + 15, Y0 - 15)


def test_reference_in_averages_the_cells_inside_a_polygon() -> None:
    g = _indexed_grid()
    # cell centres of rows 1-2 and columns 2-3 lie inside this box
    box = shapely.geometry.box(X0 + 20.0, Y0 - 30.0, X0 + 40.0, Y0 - 10.0)
    np.testing.assert_allclose(eoembed.reference_in(g, box), [1.5, 2.5, 1.0])
    np.testing.assert_allclose(eoembed.reference_in(g, box.wkt, crs=CRS), [1.5, 2.5, 1.0])
    point = shapely.geometry.Point(X0 + 5, Y0 - 35)
    np.testing.assert_array_equal(eoembed.reference_in(g, point), [3, 0, 1])
    with pytest.raises(SpecError, match="covers no grid cell"):
        eoembed.reference_in(g, shapely.geometry.box(X0 + 1000, Y0, X0 + 1100, Y0 + 100))


def test_pca_scores_match_numpy_svd() -> None:
    rng = np.random.default_rng(1)
    d, h, w = 6, 7, 9
    # anisotropic data so the components are well separated
    v = rng.normal(size=(d, h, w)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2])[:, None, None]
    v[:, 0, 0] = np.nan
    scores, explained = eoembed.pca_rgb(make_grid(v), n=3, stretch=False)
    valid = np.ones((h, w), bool)
    valid[0, 0] = False
    x = v[:, valid].T.astype(np.float32).astype(np.float64)
    x = x - x.mean(axis=0)
    _u, s, vt = np.linalg.svd(x, full_matrices=False)
    ref = x @ vt[:3].T  # (N, 3)
    for i in range(3):
        sign = np.sign(ref[:, i] @ scores[i][valid])
        np.testing.assert_allclose(scores[i][valid], sign * ref[:, i], atol=1e-8)
    np.testing.assert_allclose(explained, s[:3] ** 2 / (s**2).sum(), rtol=1e-9)
    assert np.isnan(scores[:, 0, 0]).all()


def test_pca_rgb_stretch_spans_the_percentiles() -> None:
    rng = np.random.default_rng(2)
    v = rng.normal(size=(8, 20, 20))
    v[:, 3, 4] = np.nan
    rgb, explained = eoembed.pca_rgb(make_grid(v))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 20, 20)
    assert np.all(np.diff(explained) <= 0) and explained.sum() < 1
    scores, _ = eoembed.pca_rgb(make_grid(v), stretch=False)
    valid = np.isfinite(scores[0])
    for i in range(3):
        lo, hi = np.percentile(scores[i][valid], [2, 98])
        assert (rgb[i][valid][scores[i][valid] <= lo] == 0).all()
        assert (rgb[i][valid][scores[i][valid] >= hi] == 255).all()
        mid = (lo + hi) / 2
        j = np.argmin(np.abs(scores[i][valid] - mid))
        assert abs(int(rgb[i][valid][j]) - 127.5) < 20
    assert (rgb[:, 3, 4] == 0).all()


def test_kmeans_recovers_well_separated_clusters() -> None:
    rng = np.random.default_rng(3)
    d, h, w = 8, 12, 12
    truth = np.zeros((h, w), int)
    truth[:, 4:] = 1
    truth[8:, :] = 2
    centres = rng.normal(size=(3, d)) * 20.0
    v = centres[truth].transpose(2, 0, 1) + rng.normal(size=(d, h, w)) * 0.5
    v[:, 0, 0] = np.nan
    out = eoembed.kmeans(make_grid(v), 3, seed=0)
    labels = out.to_numpy()[0]
    assert np.isnan(labels[0, 0])
    ok = np.isfinite(labels)
    # a perfect recovery is a one-to-one map between true and found labels
    pairs = {(int(t), int(f)) for t, f in zip(truth[ok], labels[ok])}
    assert len(pairs) == 3 and len({p[0] for p in pairs}) == 3 and len({p[1] for p in pairs}) == 3
    # labels are ordered by size: true 1 (8x8 = 64 cells), true 2 (4x12 = 48), true 0 (8x4 - 1 NaN)
    assert dict(pairs) == {1: 0, 2: 1, 0: 2}
    assert out.meta["analysis"]["sizes"] == [64, 48, 31]
    again = eoembed.kmeans(make_grid(v), 3, seed=0).to_numpy()
    np.testing.assert_array_equal(again, out.to_numpy())
    assert out.crs == CRS and list(out.data.coords["band"].values) == ["cluster"]


def test_kmeans_rejects_more_clusters_than_distinct_cells() -> None:
    with pytest.raises(SpecError, match="distinct"):
        eoembed.kmeans(make_grid(np.ones((2, 3, 3))), 2)


def test_text_similarity_needs_a_text_encoder() -> None:
    with pytest.raises(CapabilityError, match="text encoder"):
        eoembed.text_similarity_map("rcf", make_grid(np.ones((512, 2, 2)), model="rcf"), "a forest")


def test_text_similarity_refuses_a_grid_from_another_model() -> None:
    with pytest.raises(SpecError, match="same CLIP model"):
        eoembed.text_similarity_map("remoteclip-vit-b-32", make_grid(np.ones((3, 2, 2)), model="rcf"), "water")


def test_text_similarity_is_cosine_to_the_text_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_embed_text(model: str, texts: object, **kw: object) -> np.ndarray:
        seen["args"] = (model, texts)
        return np.array([[0.0, 4.0, 0.0]])

    monkeypatch.setattr(eoembed.api, "embed_text", fake_embed_text)
    v = np.zeros((3, 1, 2))
    v[:, 0, 0] = [0, 1, 1]
    v[:, 0, 1] = [1, 0, 0]
    out = eoembed.text_similarity_map("clip", make_grid(v, model="clip"), "a lake")
    np.testing.assert_allclose(out.to_numpy()[0, 0], [1 / math.sqrt(2), 0.0], atol=1e-6)
    assert seen["args"] == ("clip", "a lake") and out.meta["analysis"]["texts"] == ["a lake"]


def test_pca_fitted_on_a_sample_agrees_with_the_full_fit() -> None:
    rng = np.random.default_rng(5)
    v = rng.normal(size=(5, 30, 30)) * np.array([6.0, 3.0, 1.5, 0.5, 0.2])[:, None, None]
    full, e_full = eoembed.pca_rgb(make_grid(v), stretch=False, sample=None)
    part, e_part = eoembed.pca_rgb(make_grid(v), stretch=False, sample=300, seed=1)
    np.testing.assert_allclose(e_part, e_full, atol=0.03)
    for i in range(3):
        assert np.corrcoef(full[i].ravel(), part[i].ravel())[0, 1] > 0.99
