"""InputPrep.tile: places larger than a model's input are cut into native tiles and stitched."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from affine import Affine
from eoembed.embedders.base import Embedder, ModelCard
from eoembed.errors import CapabilityError
from eoembed.grid import GridSpec
from eoembed.providers.base import make_observation
from eoembed.specs import InputPrep, OutputSpec

SIZE, CELL = 16, 4


class BlockMeans(Embedder):
    """A model with a 16 px input whose grid is the 4 × 4 px block mean of each band and whose
    pooled vector is the mean of the pixels inside the place: both easy to compute by hand."""

    family = "test"

    def describe(self) -> ModelCard:
        return ModelCard(
            id=self.model_id, family=self.family, summary="block means", bands=("B02", "B03"),
            scale_m=10.0, image_size=SIZE, temporal="single", outputs=("pooled", "grid"), dim=2,
            weights="none", license="none",
        )

    def _load(self) -> None:
        pass

    def embed_batch(self, observations, output):
        x = self.input_tensor(observations, ("B02", "B03"))
        assert x.shape[-2:] == (SIZE, SIZE)
        if output.mode == "grid":
            cells = F.avg_pool2d(x, CELL)
            return [self.grid_embedding(c, o, output) for c, o in zip(cells, observations)]
        out = []
        for xi, o in zip(x, observations):
            m = torch.from_numpy(o.roi_mask)
            vec = xi[:, m].mean(dim=1) if m.any() else torch.zeros(2)
            out.append(self.pooled_embedding(vec, o, output))
        return out


def _observation(h: int = 24, w: int = 40, roi: np.ndarray | None = None):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    values = np.stack([xx + 100 * yy, 5000 - xx])[None]  # (1, 2, h, w), every pixel distinct
    grid = GridSpec("EPSG:32633", Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), w, h)
    obs = make_observation(values, np.ones((1, h, w), bool), grid, ("B02", "B03"), [date(2022, 6, 1)], roi)
    return obs, values[0]


def test_tiled_grid_is_stitched_on_the_place_origin_with_block_means():
    obs, values = _observation()
    emb = BlockMeans("blocks", batch_size=4)
    g = emb.embed([obs], OutputSpec.grid(), InputPrep.tile())[0]
    # 2 × 3 tiles of 16 px, each 4 × 4 cells of 4 px: 8 × 12 cells of 40 m from the place's corner
    assert g.data.shape == (2, 8, 12)
    assert g.transform == Affine(40.0, 0.0, 500_000.0, 0.0, -40.0, 5_000_000.0)
    assert g.meta["tiles"] == [2, 3]
    got = g.to_numpy()
    for r in range(24 // CELL):  # cells inside the place: means of the original 4 × 4 blocks
        for c in range(40 // CELL):
            want = values[:, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL].mean(axis=(1, 2))
            np.testing.assert_allclose(got[:, r, c], want, rtol=1e-6)
    assert np.all(got[:, 6:, :] == 0)  # rows past the place's edge come from padding
    np.testing.assert_allclose(g.data.x.values[:3], [500_020.0, 500_060.0, 500_100.0])
    np.testing.assert_allclose(g.data.y.values[:2], [4_999_980.0, 4_999_940.0])


def test_tiled_pooled_vector_is_the_mean_over_the_place_pixels():
    roi = np.zeros((24, 40), bool)
    roi[3:20, 5:37] = True  # a place that spans all six tiles unevenly
    obs, values = _observation(roi=roi)
    vec = BlockMeans("blocks").embed([obs], OutputSpec.pooled(), InputPrep.tile())[0].to_numpy()
    np.testing.assert_allclose(vec, values[:, roi].mean(axis=1), rtol=1e-5)


def test_too_many_tiles_is_refused_with_the_limit_in_the_message():
    obs, _ = _observation()
    with pytest.raises(CapabilityError, match="needs 6 tiles.*max_tiles=4"):
        BlockMeans("blocks").embed([obs], OutputSpec.grid(), InputPrep.tile(max_tiles=4))
