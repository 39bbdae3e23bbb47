"""Clay v1.5 embedder: constants and side inputs by hand, a reduced-depth Lightning checkpoint
through the weights resolver, georeferenced grids, Landsat and tiles."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
import torch
from affine import Affine
from eoembed.embedders.clay import SENSORS, ClayEmbedder, latlon_code, time_code
from eoembed.embedders.registry import build_embedder, describe_model, resolve_model_id
from eoembed.errors import SpecError, WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.clay import ClayConfig, ClayEncoder, clay_name
from eoembed.nn.timm_vit import to_timm_key
from eoembed.providers.base import make_observation
from eoembed.specs import InputPrep, OutputSpec
from seeded import seeded_state

# UTM 31N around 0.0009° E: the place's centre lies at lon ≈ 3 − 3 = 0°, lat ≈ 45°
ORIGIN = Affine(10.0, 0.0, 263_000.0, 0.0, -10.0, 4_987_000.0)


def _save(path, dim: int) -> str:
    names = {clay_name(to_timm_key(k)): tuple(v.shape)
             for k, v in ClayEncoder(ClayConfig(dim, 1, dim // 64)).state_dict().items()}
    sd = {f"model.encoder.{k}": v.half() for k, v in seeded_state(names, 0, scale=0.02).items()}
    sd["model.decoder.mask_patch"] = torch.zeros(4)
    torch.save({"state_dict": sd, "epoch": 3}, path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return _save(tmp_path_factory.mktemp("clay") / "clay-v1.5.ckpt", 1024)


def _obs(bands, h=256, w=256, seed=0, when=date(2021, 3, 10)):
    rng = np.random.default_rng(seed)
    vals = rng.uniform(0, 4000, (1, len(bands), h, w)).astype(np.float32)
    return make_observation(vals, np.ones((1, h, w), bool), GridSpec("EPSG:32631", ORIGIN, w, h), bands, [when])


def test_ids_card_and_constants() -> None:
    assert resolve_model_id("clay") == "clay-v1.5"
    card = describe_model("clay")
    assert card.dim == 1024 and card.image_size == 256 and card.grid_cell_px == 8 and card.scale_m == 10.0
    assert card.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert card.preprocessing["mean"][0] == 1105.0 and card.preprocessing["std"][-1] == 1379.0
    assert card.preprocessing["wavelengths_um"][7] == 0.865 and "Apache-2.0" in card.license
    landsat = ClayEmbedder(sensor="landsat-c2l2-sr").describe()
    assert landsat.scale_m == 30.0 and landsat.bands[0] == "SR_B4" and landsat.preprocessing["mean"][3] == 17801.0
    with pytest.raises(SpecError):
        ClayEmbedder(sensor="modis")


def test_side_inputs_by_hand() -> None:
    assert time_code(13, 6) == pytest.approx([1.0, math.cos(math.pi / 2), 1.0, math.cos(math.pi / 2)], abs=1e-12)
    assert latlon_code(30.0, -90.0) == pytest.approx([0.5, math.sqrt(3) / 2, -1.0, 0.0], abs=1e-12)
    side = ClayEmbedder().side_inputs(_obs(SENSORS["sentinel-2-l2a"].bands, h=200, w=300))
    # 10 m pixels, centre square of 200 px resized to 256: 7.8125 m per input pixel
    assert side["gsd_m"] == pytest.approx(7.8125)
    assert side["week"] == 10  # 10 March 2021 is in ISO week 10
    assert side["lat"] == pytest.approx(45.0, abs=0.05) and side["lon"] == pytest.approx(0.0, abs=0.05)
    assert side["hour"] == 10  # 10:30 local solar time at longitude ~0


def test_pooled_and_grid_come_from_the_network(checkpoint) -> None:
    emb = build_embedder("clay-v1.5", weights=checkpoint)
    obs = _obs(emb.bands)
    [pooled] = emb.embed([obs], OutputSpec.pooled())
    [grid] = emb.embed([obs], OutputSpec.grid())
    side = emb.side_inputs(obs)
    x = emb.normalize(torch.from_numpy(obs.values()[:1]))
    with torch.no_grad():
        cls, tokens, _ = emb.network(x, torch.tensor(SENSORS["sentinel-2-l2a"].wavelengths_um), side["gsd_m"],
                                     torch.tensor([time_code(side["week"], side["hour"])]),
                                     torch.tensor([latlon_code(side["lat"], side["lon"])]))
    np.testing.assert_allclose(pooled.to_numpy(), cls[0].numpy(), atol=1e-5)
    assert grid.data.shape == (1024, 32, 32) and side["gsd_m"] == 10.0
    np.testing.assert_allclose(grid.data.values[:, 1, 2], tokens[0, 34].numpy(), atol=1e-5)
    assert np.allclose(grid.data.x.values, 263_000 + 80 * (np.arange(32) + 0.5))
    assert pooled.meta["side_inputs"]["week"] == 10 and emb.weights_info["depth"] == 1


def test_landsat_tiles_and_wrong_width(checkpoint, tmp_path) -> None:
    emb = build_embedder("clay", weights=checkpoint, sensor="landsat-c2l2-sr", batch_size=2)
    obs = _obs(SENSORS["landsat-c2l2-sr"].bands, h=200, w=300, seed=4)
    [grid] = emb.embed([obs], OutputSpec.grid(), InputPrep.tile())
    assert grid.meta["tiles"] == [1, 2] and grid.data.shape == (1024, 32, 64)
    small = build_embedder("clay", weights=_save(tmp_path / "small.ckpt", 128))
    with pytest.raises(WeightsError, match="width 128"):
        small.load()


def test_real_tile_side_inputs_come_from_the_place(checkpoint, real_tiles) -> None:
    import rasterio
    from eoembed.api import get_embedding
    from eoembed.specs import BBox
    from pyproj import Transformer

    with rasterio.open(real_tiles[2]) as src:
        b, crs = src.bounds, src.crs.to_string()
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform((b.left + b.right) / 2,
                                                                                  (b.bottom + b.top) / 2)
    emb = build_embedder("clay", weights=checkpoint)
    out = get_embedding(emb, BBox(b.left, b.bottom, b.right, b.top, crs=crs), source=str(real_tiles[2]))
    side = out.meta["side_inputs"]
    assert side["lat"] == pytest.approx(lat, abs=1e-6) and side["lon"] == pytest.approx(lon, abs=1e-6)
    assert side["gsd_m"] == pytest.approx(10.0 * 224 / 256)
    assert out.to_numpy().shape == (1024,) and np.isfinite(out.to_numpy()).all()
