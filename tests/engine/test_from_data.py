"""Arrays in: user pixels give the same embeddings as the same pixels read from a local file."""

from __future__ import annotations

import argparse
from dataclasses import replace

import eoembed
import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from eoembed.embedders.registry import build_embedder
from eoembed.errors import CapabilityError, EoembedError, SpecError
from eoembed.specs import BBox, OutputSpec, PointBuffer, TemporalSpec

TILE = "637U_59R_1_3.tif"  # 12-band S2 L2A, 224 × 224 px of 10 m, EPSG:32632
WINDOW = TemporalSpec.year(2022)


@pytest.fixture(scope="module")
def tile(real_tiles):
    path = next(p for p in real_tiles if p.name == TILE)
    with rasterio.open(path) as src:
        return {
            "path": path, "pixels": src.read(), "crs": src.crs.to_wkt(), "transform": src.transform,
            "bounds": src.bounds, "bands": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                            "B09", "B11", "B12"),
        }


def _crop(tile, rows: int, cols: int):
    """The top-left rows × cols pixels of the tile, with their transform and box."""
    t = tile["transform"]
    box = BBox(t.c, t.f - rows * 10, t.c + cols * 10, t.f, crs=tile["crs"])
    return tile["pixels"][:, :rows, :cols], t, box


def _same(a, b) -> None:
    assert a.to_numpy().shape == b.to_numpy().shape
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    if a.is_grid:
        assert a.data.attrs["transform"] == b.data.attrs["transform"]
        assert a.crs == b.crs


def _from_file(model, tile, box, output, **kw):
    return eoembed.get_embedding(model, box, WINDOW, source=str(tile["path"]), output=output, **kw)


def _remoteclip_weights(folder):
    from eoembed.nn.clip import CLIP, CLIP_CONFIGS

    cfg = CLIP_CONFIGS["ViT-B-32"]
    cfg = replace(cfg, vision=replace(cfg.vision, layers=2), text=replace(cfg.text, layers=1))
    torch.manual_seed(0)
    model = CLIP(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_pre.weight", "ln_post.weight")):
                p.add_(0.1 * torch.randn_like(p))
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "RemoteCLIP-ViT-B-32.pt")
    return folder


def _remotesam_weights(folder):
    """RemoteSAM's train.py layout, reduced Swin (one block per stage), text-free."""
    from eoembed.nn.remotesam import RemoteSAMImageEncoder

    torch.manual_seed(1)
    model = RemoteSAMImageEncoder(embed_dim=128, depths=(1, 1, 1, 1), heads=(4, 8, 16, 32), window=12).eval()
    sd = {k: (v.half() if v.dtype.is_floating_point else v) for k, v in model.state_dict().items()}
    sd["classifier.conv1_4.weight"] = torch.zeros(2, 2, 3, 3, dtype=torch.float16)
    args = argparse.Namespace(model="lavt_one", swin_type="base", window12=True, img_size=896, mha="")
    torch.save({"model": sd, "optimizer": {"state": {}}, "epoch": 0, "args": args}, folder / "RemoteSAMv1.pth")
    return folder / "RemoteSAMv1.pth"


def _anysat_weights(folder):
    """AnySat's released layout with one block in each transformer."""
    from eoembed.nn.anysat import AnySatS2

    torch.manual_seed(2)
    sd = {k: v.half() for k, v in AnySatS2(dim=768, depth=1, heads=12).state_dict().items()}
    sd["projector_aerial.patch_embed.proj.weight"] = torch.zeros(4, 4, 10, 10, dtype=torch.float16)
    sd["projector_s1-asc.pad_parameter"] = torch.tensor(0.0, dtype=torch.float16)
    torch.save({"state_dict": sd}, folder / "AnySat.pth")
    return folder / "AnySat.pth"


def _msclip_weights(folder):
    """Llama3-MS-CLIP's wrapper layout (three prefixes sharing storage), one-layer towers."""
    from eoembed.nn.clip import CLIP, CLIP_CONFIGS

    cfg = CLIP_CONFIGS["ViT-B-16"]
    cfg = replace(cfg, vision=replace(cfg.vision, layers=1, in_chans=10), text=replace(cfg.text, layers=1))
    torch.manual_seed(3)
    sd = {k: v.contiguous() for k, v in CLIP(cfg).state_dict().items()}
    wrapper = {"temperature": torch.tensor(0.07)}
    for prefix in ("clip_base_model.model.", "text_encoder.model.", "image_encoder.model."):
        wrapper.update({prefix + k: v for k, v in sd.items()})
    torch.save(wrapper, folder / "Llama3_MS_CLIP_weights.pt")
    return folder / "Llama3_MS_CLIP_weights.pt"


@pytest.fixture(scope="module")
def models(shared_dir, tmp_path_factory):
    """Every model with real or layout-faithful weights here (built once, shared)."""
    out = {"rcf": build_embedder("rcf")}
    nano = shared_dir / "weights" / "galileo_nano"
    if nano.is_dir():
        out["galileo-nano"] = build_embedder("galileo-nano", weights=str(nano))
    presto = shared_dir / "weights" / "presto"
    if presto.is_dir():
        out["presto"] = build_embedder("presto", weights=str(presto))
    folder = tmp_path_factory.mktemp("weights")
    out["remoteclip-vit-b-32"] = build_embedder("remoteclip-vit-b-32", weights=str(_remoteclip_weights(folder)))
    out["remotesam"] = build_embedder("remotesam", weights=str(_remotesam_weights(folder)), image_size=64)
    out["anysat"] = build_embedder("anysat", weights=str(_anysat_weights(folder)), patch_size_m=20)
    out["llama3-ms-clip-base"] = build_embedder("llama3-ms-clip-base", weights=str(_msclip_weights(folder)))
    return out


@pytest.mark.parametrize(
    "model",
    ["rcf", "galileo-nano", "presto", "remoteclip-vit-b-32", "llama3-ms-clip-base", "remotesam", "anysat"],
)
@pytest.mark.parametrize("mode", ["pooled", "grid"])
def test_array_and_file_give_identical_embeddings(models, tile, model, mode):
    if model not in models:
        pytest.skip(f"no weights for {model} in ../shared")
    emb = models[model]
    if mode not in emb.describe().outputs:
        pytest.skip(f"{model} gives no {mode} output")
    pixels, t, box = _crop(tile, 32, 48)
    output = OutputSpec(mode)
    fetched = _from_file(emb, tile, box, output)
    given = eoembed.get_embedding_from_data(
        emb, pixels, bands=tile["bands"], crs=tile["crs"], transform=t, temporal=WINDOW, output=output
    )
    _same(fetched, given)
    assert given.meta["user_input"]["bands_used"] == list(emb.describe().bands)
    assert fetched.meta["source"]["dates"] == [None]  # the file is undated: both used the window's middle


def test_path_dataset_and_dataarray_are_the_same_pixels(models, tile):
    emb = models["rcf"]
    grid = OutputSpec.grid()
    b = tile["bounds"]
    whole = BBox(b.left, b.bottom, b.right, b.top, crs=tile["crs"])
    fetched = _from_file(emb, tile, whole, grid)
    by_path = eoembed.get_embedding_from_data(emb, tile["path"], temporal=WINDOW, output=grid)
    with rasterio.open(tile["path"]) as src:
        by_dataset = eoembed.get_embedding_from_data(emb, src, temporal=WINDOW, output=grid)
    t = tile["transform"]
    da = xr.DataArray(
        tile["pixels"], dims=("band", "y", "x"),
        coords={"band": list(tile["bands"]), "y": t.f - 5 - 10 * np.arange(224), "x": t.c + 5 + 10 * np.arange(224)},
        attrs={"crs": tile["crs"]},
    )
    by_xarray = eoembed.get_embedding_from_data(emb, da, temporal=WINDOW, output=grid)
    for e in (by_path, by_dataset, by_xarray):
        _same(fetched, e)
    # the grid lies on the tile: its first cell starts at the tile's corner, cells of 4 px
    assert by_xarray.data.attrs["transform"] == (40.0, 0.0, t.c, 0.0, -40.0, t.f)
    assert float(by_xarray.data.x[0]) == pytest.approx(t.c + 20.0)


def test_bands_are_picked_and_reordered_by_name(models, tile):
    emb = models["rcf"]
    pixels, t, _ = _crop(tile, 16, 16)
    ref = eoembed.get_embedding_from_data(emb, pixels, bands=tile["bands"], crs=tile["crs"], transform=t)
    order = np.random.default_rng(0).permutation(12)
    shuffled = eoembed.get_embedding_from_data(
        emb, pixels[order], bands=[tile["bands"][i] for i in order], crs=tile["crs"], transform=t
    )
    np.testing.assert_array_equal(ref.to_numpy(), shuffled.to_numpy())
    needed = list(emb.describe().bands)  # exactly the model's ten bands, given by other names
    idx = [tile["bands"].index(b) for b in needed]
    aliases = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]
    assert needed == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    subset = eoembed.get_embedding_from_data(emb, pixels[idx], bands=aliases, crs=tile["crs"], transform=t)
    np.testing.assert_array_equal(ref.to_numpy(), subset.to_numpy())
    assert subset.meta["user_input"]["channel_indices"] == list(range(10))
    assert ref.meta["user_input"]["channel_indices"] == idx


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"bands": ["B02", "B03"]}, SpecError, "12 bands but 2 band names"),
        ({"bands": ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "B99"]},
         SpecError, "not a Sentinel-2 band"),
        ({"bands": ["B02"] * 12}, SpecError, "name a band twice"),
        ({"crs": "EPSG:32632"}, SpecError, "both crs and transform"),
        ({"transform": (10, 0, 0, 0, 10, 0), "crs": "EPSG:32632"}, SpecError, "not north-up"),
    ],
)
def test_bad_descriptions_are_one_sentence(models, tile, kwargs, error, words):
    pixels, _, _ = _crop(tile, 8, 8)
    args = {"bands": tile["bands"], **kwargs}
    with pytest.raises(error, match=words) as exc:
        eoembed.get_embedding_from_data(models["rcf"], pixels, **args)
    assert "\n" not in str(exc.value)


def test_missing_bands_name_them(models, tile):
    pixels, t, _ = _crop(tile, 8, 8)
    with pytest.raises(CapabilityError, match="lacks B05, B06") as exc:
        eoembed.get_embedding_from_data(models["rcf"], pixels[[3, 2, 1]], bands=["B04", "B03", "B02"],
                                        crs=tile["crs"], transform=t)
    assert "\n" not in str(exc.value)


def test_unreferenced_arrays_work_except_for_models_that_need_the_place(models, tile):
    pixels, t, _ = _crop(tile, 16, 16)
    emb = eoembed.get_embedding_from_data(models["rcf"], pixels, bands=tile["bands"], output=OutputSpec.grid())
    assert emb.meta["user_input"]["georeferenced"] is False
    ref = eoembed.get_embedding_from_data(models["rcf"], pixels, bands=tile["bands"], crs=tile["crs"], transform=t,
                                          output=OutputSpec.grid())
    np.testing.assert_array_equal(emb.to_numpy(), ref.to_numpy())  # RCF does not look at the place
    if "presto" in models:
        with pytest.raises(CapabilityError, match="give crs and transform"):
            eoembed.get_embedding_from_data(models["presto"], pixels, bands=tile["bands"])


def test_spatial_alone_places_the_grid(models, tile):
    pixels, t, box = _crop(tile, 16, 16)
    emb = eoembed.get_embedding_from_data(models["rcf"], pixels, bands=tile["bands"], spatial=box,
                                          output=OutputSpec.grid())
    assert emb.data.attrs["transform"] == (40.0, 0.0, t.c, 0.0, -40.0, t.f)


def test_frames_need_dates_and_go_through_the_models_frames(models, tile, shared_dir):
    if "galileo-nano" not in models:
        pytest.skip("no Galileo weights in ../shared")
    pixels, t, _ = _crop(tile, 16, 16)
    series = np.stack([pixels, pixels * 0.9]).astype(np.float32)
    geo = {"bands": tile["bands"], "crs": tile["crs"], "transform": t}
    with pytest.raises(SpecError, match="2 frames but no dates"):
        eoembed.get_embedding_from_data(models["galileo-nano"], series, **geo)
    dates = ["2022-03-10", "2022-07-20"]
    # a single-image model gets the median composite of the frames, as from a provider
    single = eoembed.get_embedding_from_data(models["galileo-nano"], series, dates=dates, **geo)
    median = eoembed.get_embedding_from_data(models["galileo-nano"], np.median(series, axis=0), **geo,
                                             temporal=TemporalSpec("2022-03-10", "2022-07-21"))
    np.testing.assert_allclose(single.to_numpy(), median.to_numpy(), rtol=1e-5, atol=1e-6)
    # the time-series Galileo bins them into its monthly frames
    temporal = build_embedder("galileo-nano", weights=str(shared_dir / "weights" / "galileo_nano"), temporal=True)
    out = eoembed.get_embedding_from_data(temporal, series, dates=dates, **geo)
    frames = out.meta["source"]["frames"]
    assert [f["start"] for f in frames if f["status"] == "ok"] == ["2022-03-10", "2022-07-01"]
    assert out.meta["window"] == "2022-03-10/2022-07-21"
    one = eoembed.get_embedding_from_data(temporal, series[:1], dates=dates[:1], **geo)
    assert not np.allclose(one.to_numpy(), out.to_numpy())


def test_batch_is_one_forward_pass_and_matches_single_calls(models, tile, monkeypatch):
    emb = models["rcf"]
    crops = [_crop(tile, 16, 16)[0], _crop(tile, 16, 16)[0] * 1.5, _crop(tile, 16, 16)[0] + 7]
    t = tile["transform"]
    singles = [eoembed.get_embedding_from_data(emb, c, bands=tile["bands"], crs=tile["crs"], transform=t)
               for c in crops]
    calls = []
    real = emb.embed_batch
    monkeypatch.setattr(emb, "embed_batch", lambda obs, out: calls.append(len(obs)) or real(obs, out))
    batch = eoembed.get_embeddings_batch_from_data(emb, crops, bands=tile["bands"], crs=tile["crs"], transform=t)
    assert calls == [3]
    for a, b in zip(singles, batch):
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5, atol=1e-6)


def test_userdata_form_and_item_errors_say_which(models, tile):
    pixels, t, _ = _crop(tile, 16, 16)
    ud = eoembed.UserData(pixels, bands=tile["bands"], collection="COPERNICUS/S2_SR_HARMONIZED",
                          crs=tile["crs"], transform=t)
    a = eoembed.get_embedding_from_data(models["rcf"], ud)
    b = eoembed.get_embedding_from_data(models["rcf"], pixels, bands=tile["bands"], crs=tile["crs"], transform=t)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    s1 = eoembed.UserData(pixels[:2], bands=["B02", "B03"], collection="COPERNICUS/S1_GRD")
    with pytest.raises(EoembedError, match="data #1: ") as exc:
        eoembed.get_embeddings_batch_from_data(models["rcf"], [ud, s1])
    assert "\n" not in str(exc.value)


def test_list_models_for_data_says_who_can_take_it(tile):
    rgb = tile["pixels"][[3, 2, 1], :16, :16]
    report = {r["model"]: r for r in eoembed.list_models_for_data(rgb, bands=["B4", "B3", "B2"])}
    assert report["remoteclip-vit-b-32"]["compatible"]
    assert report["remoteclip-vit-b-32"]["bands_used"] == ["B04", "B03", "B02"]
    assert not report["galileo-nano"]["compatible"]
    assert "lacks B05" in report["galileo-nano"]["reason"]
    full = {r["model"]: r for r in eoembed.list_models_for_data(tile["pixels"][:, :16, :16], bands=tile["bands"])}
    assert full["rcf"]["compatible"] and full["galileo-nano"]["compatible"]
    assert not full["presto"]["compatible"] and "crs and transform" in full["presto"]["reason"]


def test_point_buffer_in_degrees_matches_the_utm_square(models, tile):
    """A PointBuffer(lon=, lat=) over the tile is the same request as its x/y form."""
    t = tile["transform"]
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(tile["crs"], "EPSG:4326", always_xy=True).transform(t.c + 1120, t.f - 1120)
    a = eoembed.get_embedding(models["rcf"], PointBuffer(lon=lon, lat=lat, buffer_m=320), WINDOW,
                              source=str(tile["path"]))
    b = eoembed.get_embedding(models["rcf"], PointBuffer(lon, lat, 320), WINDOW, source=str(tile["path"]))
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def test_vit_family_array_and_file_give_identical_embeddings(monkeypatch, tile, tmp_path):
    """Prithvi-EO-2.0 tiny-TL (published size) and SatMAE, SatMAE++ (S2), Scale-MAE at a reduced
    width, all in their published checkpoint layouts (tests/engine/vit_layouts.py)."""
    from eoembed.embedders.prithvi import PRESETS
    from eoembed.embedders.satmae import SatMAEEmbedder
    from eoembed.embedders.satmaepp import SatMAEPPEmbedder
    from eoembed.nn.mae import MAEConfig
    from vit_layouts import mae_state, prithvi_state

    rgb = MAEConfig(width=64, depth=2, heads=4)
    s2 = MAEConfig(width=64, depth=2, heads=4, img_size=96, patch_size=8, in_chans=10, channel_dim=16,
                   groups=((0, 1, 2, 6), (3, 4, 5, 7), (8, 9)))
    monkeypatch.setattr(SatMAEEmbedder, "encoder_config", lambda self: rgb)
    monkeypatch.setattr(SatMAEPPEmbedder, "encoder_config", lambda self: s2 if self.variant == "s2" else rgb)
    torch.save(prithvi_state(PRESETS["tiny-tl"], 1, seed=3), tmp_path / "prithvi.pt")
    torch.save({"model": mae_state(rgb, "satmae", seed=5), "epoch": 1}, tmp_path / "satmae.pth")
    torch.save({"model": mae_state(s2, "group", seed=5), "epoch": 1}, tmp_path / "s2.pth")
    torch.save(mae_state(rgb, "scalemae", seed=5), tmp_path / "scalemae.pth")
    pixels, t, box = _crop(tile, 32, 48)
    fetch = eoembed.FetchSpec(scale_m=10)  # the array is at 10 m; read the file at 10 m too
    for model, ckpt in [("prithvi-eo-2.0-tiny-tl", "prithvi.pt"), ("satmae", "satmae.pth"),
                        ("satmaepp-s2", "s2.pth"), ("scalemae", "scalemae.pth")]:
        emb = build_embedder(model, weights=str(tmp_path / ckpt))
        for output in (OutputSpec.pooled(), OutputSpec.grid()):
            fetched = _from_file(emb, tile, box, output, fetch=fetch)
            given = eoembed.get_embedding_from_data(emb, pixels, bands=tile["bands"], crs=tile["crs"],
                                                    transform=t, temporal=WINDOW, output=output)
            _same(fetched, given)


def test_multisensor_family_array_and_file_give_identical_embeddings(tile, tmp_path):
    """DOFA and Clay v1.5 (one block each) in their published checkpoint layouts."""
    from eoembed.nn.clay import ClayConfig, ClayEncoder, clay_name
    from eoembed.nn.dofa import DOFA, DofaConfig
    from eoembed.nn.timm_vit import to_timm_key
    from seeded import seeded_state

    shapes = {to_timm_key(k): tuple(v.shape) for k, v in DOFA(DofaConfig(768, 1, 12)).state_dict().items()}
    torch.save({"model": {k: v.half() for k, v in seeded_state(shapes, 0, scale=0.02).items()}},
               tmp_path / "DOFA_ViT_base_e100.pth")
    names = {clay_name(to_timm_key(k)): tuple(v.shape)
             for k, v in ClayEncoder(ClayConfig(1024, 1, 16)).state_dict().items()}
    sd = {f"model.encoder.{k}": v.half() for k, v in seeded_state(names, 0, scale=0.02).items()}
    sd["model.decoder.mask_patch"] = torch.zeros(4)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "clay-v1.5.ckpt")
    pixels, t, box = _crop(tile, 32, 48)
    for model, ckpt in [("dofa-base", "DOFA_ViT_base_e100.pth"), ("clay-v1.5", "clay-v1.5.ckpt")]:
        emb = build_embedder(model, weights=str(tmp_path / ckpt))
        for output in (OutputSpec.pooled(), OutputSpec.grid()):
            fetched = _from_file(emb, tile, box, output, fetch=eoembed.FetchSpec(scale_m=10))
            given = eoembed.get_embedding_from_data(emb, pixels, bands=tile["bands"], crs=tile["crs"],
                                                    transform=t, temporal=WINDOW, output=output)
            _same(fetched, given)
