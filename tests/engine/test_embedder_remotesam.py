"""RemoteSAM embedder: a reduced-depth checkpoint in the upstream pickle layout, a real S2 tile
through the local provider, the input pipeline checked against a direct read, and georeferencing."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from eoembed.embedders.registry import build_embedder
from eoembed.embedders.remotesam import RemoteSAMEmbedder
from eoembed.errors import SpecError, WeightsError
from eoembed.nn.bert import BertConfig
from eoembed.nn.bert_tokenizer import WordPieceTokenizer
from eoembed.nn.remotesam import RemoteSAMImageEncoder
from eoembed.providers.local import LocalProvider
from eoembed.specs import BBox, OutputSpec, SensorSpec, TemporalSpec

ALL = TemporalSpec("2000-01-01", "2050-01-01")
#: Swin-B widths and heads, one block per stage (the published model has 2, 2, 18, 2)
REDUCED = {"embed_dim": 128, "depths": (1, 1, 1, 1), "heads": (4, 8, 16, 32), "window": 12}


#: a tiny BERT vocabulary (ids = line numbers)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "roof", "##s", "in", "the", "image", "green", "field"]


def _write_checkpoint(path, model: RemoteSAMImageEncoder, **extra_args) -> None:
    """RemoteSAM's train.py layout: model (backbone incl. cim, text_encoder, classifier), optimizer,
    epoch and an argparse.Namespace under args; tensors stored in float16 to keep the file small."""
    sd = {k: (v.half() if v.dtype.is_floating_point else v) for k, v in model.state_dict().items()}
    sd["classifier.conv1_4.weight"] = torch.zeros(2, 2, 3, 3, dtype=torch.float16)
    args = argparse.Namespace(model="lavt_one", swin_type="base", window12=True, img_size=896, mha="", **extra_args)
    torch.save({"model": sd, "optimizer": {"state": {}}, "epoch": 0, "args": args}, path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[str, RemoteSAMImageEncoder, str]:
    """(checkpoint, the same network in prompt mode, vocab.txt); the cross-scale module is
    built for 224 px inputs (7×7 stage-4 maps) and BERT has one layer."""
    torch.manual_seed(0)
    text = BertConfig(vocab_size=len(VOCAB), layers=1, max_positions=32)
    model = RemoteSAMImageEncoder(**REDUCED, mode="prompt", text=text, cim_side=7).eval()
    with torch.no_grad():  # make the float16 round trip exact; give BatchNorms real statistics
        for k, v in model.state_dict().items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            if v.dtype.is_floating_point:
                v.copy_(v.half().float())
    folder = tmp_path_factory.mktemp("remotesam")
    _write_checkpoint(folder / "RemoteSAMv1.pth", model)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return str(folder / "RemoteSAMv1.pth"), model, str(folder / "vocab.txt")


def _text_free(model: RemoteSAMImageEncoder) -> RemoteSAMImageEncoder:
    out = RemoteSAMImageEncoder(**REDUCED).eval()
    out.load_state_dict({k: v for k, v in model.state_dict().items() if k in out.state_dict()})
    return out


@pytest.fixture(scope="module")
def tile(shared_dir):
    path = shared_dir / "data" / "s2_l2a_tiles" / "433D_629L_3_1.tif"
    if not path.is_file():
        pytest.skip("the shared tile 433D_629L_3_1 is absent")
    return path


def _box_on_file_pixels(path, col: int, row: int, w: int, h: int) -> BBox:
    with rasterio.open(path) as src:
        t, crs = src.transform, src.crs.to_string()
    x0, y0 = t * (col, row)
    return BBox(x0, y0 - h * 10.0, x0 + w * 10.0, y0, crs=crs)


def test_card_needs_no_weights_and_names_the_missing_licence() -> None:
    card = RemoteSAMEmbedder(weights="/does/not/exist.pth").describe()
    assert card.dim == 1024 and card.image_size == 896 and card.grid_cell_px == 32
    assert card.bands == ("B04", "B03", "B02") and card.temporal == "single"
    assert card.license == "none published (repository has no licence file)"
    assert card.config["mode"] == "text-free"
    assert RemoteSAMEmbedder().describe().weights == "hf:1e12Leon/RemoteSAM (RemoteSAMv1.pth)"


@pytest.mark.parametrize("kwargs", [{"image_size": 900}, {"image_size": 16}, {"mode": "prompt"}, {"rgb_max": -1},
                                    {"mode": "prompt", "prompt": "  "}, {"prompt": "roofs"}, {"mode": "caption"}])
def test_bad_options_are_spec_errors(kwargs) -> None:
    with pytest.raises(SpecError):
        RemoteSAMEmbedder(**kwargs)


def test_real_tile_grid_matches_a_direct_read_and_lands_on_the_place(checkpoint, tile) -> None:
    path, prompted, _ = checkpoint
    model = _text_free(prompted)
    emb = build_embedder("remotesam", weights=path, image_size=128)
    provider = LocalProvider(tile)
    box = _box_on_file_pixels(tile, col=40, row=30, w=48, h=36)
    obs = provider.fetch(provider.request(box, ALL, emb.sensor_for(SensorSpec())))
    [grid] = emb.embed([obs], OutputSpec.grid())
    with torch.no_grad():  # independent input path: the file read directly
        want = model(_direct_rgb(tile, obs, 40, 30, 128))["grid"][0].numpy()
    np.testing.assert_allclose(grid.to_numpy(), want, rtol=1e-4, atol=1e-4)
    # 4×4 cells of 1024 channels covering exactly the place, in the file's CRS
    assert grid.data.shape == (1024, 4, 4)
    assert grid.crs == obs.grid.crs
    t = obs.grid.transform
    cw, ch = obs.grid.width * 10.0 / 4, obs.grid.height * 10.0 / 4
    np.testing.assert_allclose(grid.data.x.values, t.c + cw * (np.arange(4) + 0.5))
    np.testing.assert_allclose(grid.data.y.values, t.f - ch * (np.arange(4) + 0.5))
    assert grid.meta["mode"] == "text-free"
    assert grid.meta["weights"]["ignored_prefixes"] == ["backbone.cim.", "classifier.", "text_encoder."]
    assert grid.meta["weights"]["architecture"]["depths"] == [1, 1, 1, 1]
    assert len(grid.meta["weights"]["sha256"]) == 64


def test_pooled_is_the_cell_mean_over_a_fully_valid_place(checkpoint, tile) -> None:
    path, _, _ = checkpoint
    emb = RemoteSAMEmbedder(weights=path, image_size=64)
    provider = LocalProvider(tile)
    obs = provider.fetch(provider.request(_box_on_file_pixels(tile, 100, 100, 32, 32), ALL,
                                          emb.sensor_for(SensorSpec())))
    assert obs.valid.all()
    pooled, grid = emb.embed([obs], OutputSpec.pooled())[0], emb.embed([obs], OutputSpec.grid())[0]
    assert pooled.data.shape == (1024,)
    np.testing.assert_allclose(pooled.to_numpy(), grid.to_numpy().mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    maxed = emb.embed([obs], OutputSpec.pooled("max"))[0]
    np.testing.assert_allclose(maxed.to_numpy(), grid.to_numpy().max(axis=(1, 2)), rtol=1e-5, atol=1e-5)


def _direct_rgb(tile, obs, col: int, row: int, size: int) -> torch.Tensor:
    """B04, B03, B02 (stack order B01…B12) read straight from the file, scaled and resized."""
    with rasterio.open(tile) as src:
        raw = src.read((4, 3, 2), window=((row, row + obs.grid.height), (col, col + obs.grid.width))).astype(np.float32)
    rgb = torch.from_numpy(raw / 3000.0).clamp(0, 1)[None]
    shrink = size < max(raw.shape[1:])
    return F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink).clamp(0, 1)


def test_prompt_mode_runs_the_trained_text_path_and_records_the_prompt(checkpoint, tile) -> None:
    path, model, vocab = checkpoint
    emb = RemoteSAMEmbedder(weights=path, image_size=224, mode="prompt", prompt="Red roofs in the image", vocab=vocab)
    assert emb.describe().config["prompt"] == "Red roofs in the image"
    provider = LocalProvider(tile)
    obs = provider.fetch(provider.request(_box_on_file_pixels(tile, 10, 20, 40, 40), ALL, emb.sensor_for(SensorSpec())))
    [grid] = emb.embed([obs], OutputSpec.grid())
    # by hand: [CLS] red roof ##s in the image [SEP], padded to 20
    ids, mask = WordPieceTokenizer(VOCAB)(["Red roofs in the image"], 20)
    assert ids[0, :8].tolist() == [2, 4, 5, 6, 7, 8, 9, 3] and int(mask.sum()) == 8
    with torch.no_grad():
        want = model(_direct_rgb(tile, obs, 10, 20, 224), ids, mask)["grid"][0].numpy()
    np.testing.assert_allclose(grid.to_numpy(), want, rtol=1e-4, atol=1e-4)
    assert grid.data.shape == (1024, 7, 7)
    assert grid.meta["mode"] == "prompt" and grid.meta["prompt"] == "Red roofs in the image"
    assert grid.meta["weights"]["prompt_token_ids"] == [2, 4, 5, 6, 7, 8, 9, 3]
    assert grid.meta["weights"]["ignored_prefixes"] == ["classifier."]
    other = RemoteSAMEmbedder(weights=path, image_size=224, mode="prompt", prompt="green field", vocab=vocab)
    assert not np.allclose(other.embed([obs], OutputSpec.grid())[0].to_numpy(), grid.to_numpy(), atol=1e-4)
    wrong = RemoteSAMEmbedder(weights=path, image_size=128, mode="prompt", prompt="red roofs", vocab=vocab)
    with pytest.raises(SpecError, match="image_size=224"):
        wrong.embed([obs], OutputSpec.grid())


def test_a_checkpoint_of_another_width_is_refused(tmp_path) -> None:
    path = tmp_path / "small.pth"
    _write_checkpoint(path, RemoteSAMImageEncoder(embed_dim=16, depths=(1, 1, 1, 1), heads=(1, 1, 1, 1), window=3))
    with pytest.raises(WeightsError, match="width 16"):
        RemoteSAMEmbedder(weights=str(path)).load()
