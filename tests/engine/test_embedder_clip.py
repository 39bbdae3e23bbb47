"""RemoteCLIP and Llama3-MS-CLIP embedders: preprocessing, weights, georeferenced grids, text.

Checkpoints are written here at real widths but reduced depth (the real ones are 0.6–1.7 GB);
the tokenizer vocabulary is a tiny hand-written merges file. The end-to-end tests read the real
Sentinel-2 tiles in ../shared through the local provider (skipped when absent).
"""

from __future__ import annotations

import math
from datetime import date

import eoembed
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from eoembed.api import embed_text, get_embedding
from eoembed.embedders.msclip import MSCLIP_MEAN, MSCLIP_STD, MSCLIPEmbedder
from eoembed.embedders.registry import build_embedder, describe_model
from eoembed.embedders.remoteclip import OPENAI_MEAN, OPENAI_STD, RemoteCLIPEmbedder
from eoembed.errors import WeightsError
from eoembed.grid import GridSpec
from eoembed.nn.clip import CLIP, CLIP_CONFIGS
from eoembed.providers.base import make_observation
from eoembed.specs import BBox, OutputSpec
from safetensors.torch import save_file

MERGES = ["t h", "th e</w>", "a t</w>", "c at</w>", "o n</w>", "f i", "fi e", "fie l", "fiel d</w>"]
VOCAB = 512 + len(MERGES) + 2  # byte symbols, </w> symbols, merges, start/end


def _reduced(name: str, layers: int, chans: int = 3):
    from dataclasses import replace

    cfg = CLIP_CONFIGS[name]
    return replace(
        cfg,
        vision=replace(cfg.vision, layers=layers, in_chans=chans),
        text=replace(cfg.text, layers=1, vocab_size=VOCAB),
    )


def _state_dict(cfg, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = CLIP(cfg)
    with torch.no_grad():  # non-trivial norms and positions so every input pixel matters
        for name, p in model.named_parameters():
            if name.endswith(("ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                p.add_(0.1 * torch.randn_like(p))
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "merges.txt"
    path.write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def remoteclip_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remoteclip")
    torch.save(_state_dict(_reduced("ViT-B-32", 2), 0), folder / "RemoteCLIP-ViT-B-32.pt")
    return folder


@pytest.fixture(scope="module")
def msclip_weights(tmp_path_factory):
    sd = _state_dict(_reduced("ViT-B-16", 1, chans=10), 1)
    wrapper = {"temperature": torch.tensor(0.07)}
    for prefix in ("clip_base_model.model.", "text_encoder.model.", "image_encoder.model."):
        wrapper.update({prefix + k: v for k, v in sd.items()})  # shared storage, as upstream
    path = tmp_path_factory.mktemp("msclip") / "Llama3_MS_CLIP_weights.pt"
    torch.save(wrapper, path)
    return path


@pytest.fixture(scope="module")
def remoteclip(remoteclip_weights, bpe):
    return RemoteCLIPEmbedder(weights=str(remoteclip_weights), tokenizer=bpe)


@pytest.fixture(scope="module")
def msclip(msclip_weights, bpe):
    return MSCLIPEmbedder(weights=str(msclip_weights), tokenizer=bpe)


def _observation(bands, values, h=224, w=224, invalid=None):
    """Constant per-band values on a 10 m UTM grid at (500000, 5000000)."""
    grid = GridSpec("EPSG:32633", Affine(10, 0, 500_000, 0, -10, 5_000_000), w, h)
    data = np.broadcast_to(np.asarray(values, np.float32)[None, :, None, None], (1, len(bands), h, w)).copy()
    valid = np.ones((1, h, w), bool)
    if invalid is not None:
        valid[0][invalid] = False
        data[0][:, invalid] = 0.0
    return make_observation(data, valid, grid, bands, [date(2022, 6, 1)])


# ------------------------------------------------------------------------------- description


def test_registry_ids_and_cards_need_no_weights():
    ids = eoembed.api.list_models(aliases=True)
    for model in ("remoteclip", "remoteclip-vit-b-32", "remoteclip-vit-l-14", "remoteclip-rn50",
                  "llama3-ms-clip-base"):
        assert model in ids
    dims = {m: describe_model(m).dim for m in ("remoteclip-vit-b-32", "remoteclip-vit-l-14", "remoteclip-rn50")}
    assert dims == {"remoteclip-vit-b-32": 512, "remoteclip-vit-l-14": 768, "remoteclip-rn50": 1024}
    card = describe_model("remoteclip-vit-l-14")
    assert card.weights == "hf:chendelong/RemoteCLIP (RemoteCLIP-ViT-L-14.pt)"
    assert card.bands == ("B04", "B03", "B02") and card.image_size == 224 and card.outputs == ("pooled", "grid")
    assert card.preprocessing["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert card.preprocessing["std"] == [0.26862954, 0.26130258, 0.27577711]
    assert card.preprocessing["rgb_max"] == 3000.0 and card.config["act"] == "quick_gelu"
    ms = describe_model("llama3-ms-clip-base")
    assert ms.bands == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert ms.dim == 512 and ms.config["act"] == "gelu" and ms.grid_cell_px == 16
    assert ms.weights == "hf:ibm-esa-geospatial/Llama3-MS-CLIP-base (Llama3_MS_CLIP_weights.pt)"
    assert ms.preprocessing["mean"][0] == 925.161 and ms.preprocessing["std"][-1] == 1365.08
    assert "llama3" in ms.license


# ------------------------------------------------------------------------------ preprocessing


def test_remoteclip_input_is_scaled_clipped_and_normalised():
    emb = RemoteCLIPEmbedder()
    invalid = np.zeros((224, 224), bool)
    invalid[0, 0] = True
    obs = _observation(("B04", "B03", "B02"), [1500.0, 900.0, 4500.0], invalid=invalid)
    x, seen = emb.prepare([obs])
    assert x.shape == (1, 3, 224, 224) and seen[0] is obs
    want = [(0.5 - OPENAI_MEAN[0]) / OPENAI_STD[0], (0.3 - OPENAI_MEAN[1]) / OPENAI_STD[1],
            (1.0 - OPENAI_MEAN[2]) / OPENAI_STD[2]]  # 4500 / 3000 clips to 1
    assert torch.allclose(x[0, :, 100, 100], torch.tensor(want), atol=1e-6)
    assert torch.allclose(x[0, :, 0, 0], torch.zeros(3), atol=1e-6)  # invalid → mean → 0


def test_msclip_input_is_standardised_per_band():
    emb = MSCLIPEmbedder()
    values = [500.0 * (i + 1) for i in range(10)]
    x, _ = emb.prepare([_observation(emb.bands, values, 112, 112)])  # upsampled 2×: constant stays
    want = torch.tensor([(v - m) / s for v, m, s in zip(values, MSCLIP_MEAN, MSCLIP_STD)])
    assert x.shape == (1, 10, 224, 224)
    assert torch.allclose(x[0, :, 57, 200], want, atol=1e-4)


def test_non_square_place_is_centre_cropped_on_whole_pixels():
    emb = RemoteCLIPEmbedder()
    obs = _observation(("B04", "B03", "B02"), [1000.0, 1000.0, 1000.0], h=100, w=160)
    x, seen = emb.prepare([obs])
    g = seen[0].grid
    assert x.shape == (1, 3, 224, 224) and (g.height, g.width) == (100, 100)
    assert g.transform == Affine(10, 0, 500_000 + 30 * 10, 0, -10, 5_000_000)
    squash = RemoteCLIPEmbedder(fit="squash")
    assert squash.prepare([obs])[1][0] is obs


# ----------------------------------------------------------------------------------- weights


def test_weights_load_strictly_and_record_provenance(remoteclip):
    remoteclip.load()
    info = remoteclip.weights_info
    assert info["file"] == "RemoteCLIP-ViT-B-32.pt" and info["prefix"] == "" and len(info["sha256"]) == 64
    assert info["layers"] == {"vision": 2, "text": 1}


def test_msclip_wrapper_and_temperature(msclip):
    msclip.load()
    assert msclip.weights_info["prefix"] == "clip_base_model.model."
    assert math.isclose(msclip.weights_info["temperature"], 0.07, rel_tol=1e-6)


def test_default_sources_resolve_through_the_weights_mirror(tmp_path, monkeypatch, bpe):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setenv("EOEMBED_WEIGHTS_DIR", str(tmp_path / "mirror"))
    with pytest.raises(WeightsError, match="RemoteCLIP-ViT-B-32.pt"):
        RemoteCLIPEmbedder().load()
    sd = _state_dict(_reduced("ViT-B-32", 1), 3)
    hub = tmp_path / "mirror" / "MVRL" / "remote-clip-vit-base-patch32"
    hub.mkdir(parents=True)
    save_file({"model." + k: v for k, v in sd.items()}, hub / "model.safetensors")
    emb = RemoteCLIPEmbedder(weights="hf:MVRL/remote-clip-vit-base-patch32", tokenizer=bpe)
    emb.load()
    assert emb.weights_info["file"] == "model.safetensors" and emb.weights_info["prefix"] == "model."


def test_weights_of_another_architecture_are_refused(msclip_weights):
    with pytest.raises(WeightsError, match="ViT-B-32 with 3 bands"):
        RemoteCLIPEmbedder(weights=str(msclip_weights)).load()


# ------------------------------------------------------------------------- outputs and text


def test_image_and_text_share_the_unit_sphere(remoteclip):
    obs = _observation(("B04", "B03", "B02"), [1200.0, 1000.0, 800.0])
    pooled = remoteclip.embed([obs], OutputSpec.pooled())[0]
    grid = remoteclip.embed([obs], OutputSpec.grid())[0]
    text = embed_text(remoteclip, ["the field", "a cat on the field"])
    assert pooled.data.shape == (512,) and text.shape == (2, 512) and text.dtype == np.float32
    assert math.isclose(float(np.linalg.norm(pooled.data)), 1.0, rel_tol=1e-5)
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    cells = grid.to_numpy()
    assert cells.shape == (512, 7, 7) and np.allclose(np.linalg.norm(cells, axis=0), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])
    # the text path is the network's: tokens through the loaded text tower, normalised
    tok = remoteclip._tokenizer
    with torch.no_grad():
        ref = remoteclip.network.encode_text(tok(["the field"]))
    assert np.allclose(text[0], (ref / ref.norm()).numpy()[0], atol=1e-5)
    assert tok.encode("the field") == [513, 520]  # the</w>, field</w> (merges 1 and 8)


def test_msclip_text_and_images_share_dimension(msclip):
    obs = _observation(msclip.bands, list(MSCLIP_MEAN))
    vec = msclip.embed([obs], OutputSpec.pooled())[0].data
    text = msclip.embed_text(["on the field"])
    assert vec.shape == (512,) and text.shape == (1, 512)
    assert math.isclose(float(np.linalg.norm(vec)), 1.0, rel_tol=1e-5)


def _tile_bbox(path, height_m=None):
    with rasterio.open(path) as src:
        b, crs = src.bounds, src.crs.to_string()
    bottom = b.bottom if height_m is None else b.top - height_m
    return BBox(b.left, bottom, b.right, b.top, crs=crs), b


@pytest.mark.parametrize("model", ["remoteclip", "msclip"])
def test_real_tiles_give_georeferenced_grids(model, real_tiles, remoteclip, msclip):
    emb = remoteclip if model == "remoteclip" else msclip
    tile = real_tiles[0]
    bbox, b = _tile_bbox(tile)
    out = get_embedding(emb, bbox, source=str(tile), output=OutputSpec.grid())
    n = 7 if model == "remoteclip" else 14  # 224 px / patch 32 or 16
    cell = 2240.0 / n
    assert out.to_numpy().shape == (512, n, n) and out.crs == bbox.crs
    assert np.allclose(out.data.x.values, b.left + cell * (np.arange(n) + 0.5), atol=1e-6)
    assert np.allclose(out.data.y.values, b.top - cell * (np.arange(n) + 0.5), atol=1e-6)
    assert out.meta["model"] == emb.model_id and out.meta["input_window"] == [0, 0, 224, 224]
    assert np.isfinite(out.to_numpy()).all()


def test_real_tile_non_square_place_grid_covers_the_centre_square(real_tiles, remoteclip):
    bbox, b = _tile_bbox(real_tiles[1], height_m=1600.0)  # 224 × 160 px
    out = get_embedding(remoteclip, bbox, source=str(real_tiles[1]), output=OutputSpec.grid())
    cell = 1600.0 / 7
    left = b.left + 32 * 10.0  # (224 − 160) / 2 columns cut on each side
    assert np.allclose(out.data.x.values, left + cell * (np.arange(7) + 0.5), atol=1e-6)
    assert np.allclose(out.data.y.values, b.top - cell * (np.arange(7) + 0.5), atol=1e-6)
    assert out.meta["input_window"] == [0, 32, 160, 160]


def test_real_tiles_pooled_embeddings_differ_between_places(real_tiles, remoteclip):
    vecs = []
    for tile in real_tiles[:3]:
        bbox, _ = _tile_bbox(tile)
        vecs.append(get_embedding(remoteclip, bbox, source=str(tile)).data)
    vecs = np.stack(vecs)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert float(np.abs(vecs[0] - vecs[1]).max()) > 1e-4 and float(np.abs(vecs[1] - vecs[2]).max()) > 1e-4


def test_registry_builds_with_options(remoteclip_weights, bpe):
    emb = build_embedder("remoteclip-vit-b-32", weights=str(remoteclip_weights), tokenizer=bpe, rgb_max=2500)
    assert isinstance(emb, RemoteCLIPEmbedder) and emb.arch == "ViT-B-32" and emb.rgb_max == 2500
    assert emb.describe().preprocessing["rgb_max"] == 2500
