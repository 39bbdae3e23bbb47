"""The keyword forms other tools use: lon/lat places, EE collection ids, hf: checkpoints,
backend=, fetch=, input_prep=, model keywords — each means what eoembed already does."""

from __future__ import annotations

import math
from dataclasses import replace

import eoembed
import numpy as np
import pytest
import rasterio
from eoembed.backends import choose_source
from eoembed.embedders.registry import build_embedder, resolve_model_id
from eoembed.errors import CapabilityError, SpecError
from eoembed.specs import (
    BBox,
    FetchSpec,
    InputPrep,
    InputPrepSpec,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)
from pyproj import Geod, Transformer


def test_lon_lat_keywords_are_the_x_y_forms():
    assert PointBuffer(lon=121.5, lat=31.2, buffer_m=2048) == PointBuffer(121.5, 31.2, 2048)
    assert BBox(minlon=1.0, minlat=2.0, maxlon=1.1, maxlat=2.1) == BBox(1.0, 2.0, 1.1, 2.1)
    p = PointBuffer(500_000.0, 4_000_000.0, 100, crs="EPSG:32633")
    assert p.lon == pytest.approx(15.0) and p.lat == pytest.approx(36.14, abs=0.01)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: PointBuffer(lon=1, lat=2, buffer_m=10, crs="EPSG:32633"), "lon/lat keywords are degrees"),
        (lambda: PointBuffer(1, 2, 10, lon=1), "give x or lon, not both"),
        (lambda: PointBuffer(lat=2, buffer_m=10), "needs x"),
        (lambda: PointBuffer(lon=1, lat=2), "needs buffer_m"),
        (lambda: BBox(minlon=1, minlat=2, maxlon=1.1), "needs maxy"),
        (lambda: PointBuffer(lon=200, lat=2, buffer_m=10), "outside"),
    ],
)
def test_place_keyword_mistakes_are_one_sentence(make, words):
    with pytest.raises(SpecError, match=words):
        make()


def test_the_square_is_ground_metres_not_web_mercator_units():
    """rs-embed sizes a PointBuffer in EPSG:3857 units; eoembed's is buffer_m on the ground."""
    lat = 31.2
    p = PointBuffer(lon=121.5, lat=lat, buffer_m=2048)
    minx, miny, maxx, maxy = p.shape(p.working_crs).bounds
    to_deg = Transformer.from_crs(p.working_crs, "EPSG:4326", always_xy=True)
    (w, e), (sw, se) = to_deg.transform([minx, maxx], [(miny + maxy) / 2] * 2)
    width = Geod(ellps="WGS84").inv(w, sw, e, se)[2]  # west edge to east edge, on the ground
    assert width == pytest.approx(4096, rel=1e-3)
    # the EPSG:3857 square of the same number spans about 4096·cos(lat) = 3503.6 ground metres
    merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x, y = merc.transform(121.5, lat)
    (w, e), (sw, se) = merc.transform([x - 2048, x + 2048], [y, y], direction="INVERSE")
    web = Geod(ellps="WGS84").inv(w, sw, e, se)[2]
    assert 4096 * math.cos(math.radians(lat)) == pytest.approx(3503.6, abs=0.1)
    assert web == pytest.approx(3503.6, rel=5e-3)


@pytest.mark.parametrize(
    ("name", "ours", "gee"),
    [
        ("COPERNICUS/S2_SR_HARMONIZED", "sentinel-2-l2a", "COPERNICUS/S2_SR_HARMONIZED"),
        ("COPERNICUS/S2_SR", "sentinel-2-l2a", "COPERNICUS/S2_SR_HARMONIZED"),
        ("s2", "sentinel-2-l2a", "COPERNICUS/S2_SR_HARMONIZED"),
        ("COPERNICUS/S2_HARMONIZED", "sentinel-2-l1c", "COPERNICUS/S2_HARMONIZED"),
        ("COPERNICUS/S1_GRD", "sentinel-1-grd", "COPERNICUS/S1_GRD"),
        ("LANDSAT/LC08/C02/T1_L2", "landsat-c2-l2", "LANDSAT/LC09/C02/T1_L2"),
    ],
)
def test_earth_engine_ids_map_to_eoembed_collections(name, ours, gee):
    from eoembed.sensors import COLLECTION_IDS

    s = SensorSpec(collection=name)
    assert s.collection == ours and s.requested_collection == name
    assert COLLECTION_IDS[ours]["gee"] == gee and COLLECTION_IDS[ours]["stac"] == ours


def test_collections_no_model_reads_are_refused_before_any_fetch():
    with pytest.raises(CapabilityError, match="reads sentinel-2-l2a, not 'COPERNICUS/S1_GRD'"):
        eoembed.get_embedding("rcf", PointBuffer(lon=1, lat=2, buffer_m=100),
                              sensor=SensorSpec(collection="COPERNICUS/S1_GRD"), source="stac")
    with pytest.raises(SpecError, match="not supported"):
        SensorSpec(collection="MODIS/061/MOD09GA")


def test_hf_and_path_collections_choose_weights(tmp_path):
    s = SensorSpec(collection="hf:MVRL/remote-clip-vit-base-patch32", bands=("B4", "B3", "B2"))
    assert s.checkpoint == "hf:MVRL/remote-clip-vit-base-patch32" and s.collection == "sentinel-2-l2a"
    assert s.bands == ("B04", "B03", "B02")
    assert s.with_bands(("B02",)).checkpoint == s.checkpoint
    ckpt = tmp_path / "my" / "model.pt"
    assert SensorSpec(collection=str(ckpt)).checkpoint == str(ckpt)
    from eoembed.api import model_options

    assert model_options(s, None, None, {})[0] == s.checkpoint
    with pytest.raises(SpecError, match="both choose a checkpoint"):
        model_options(s, "/other.pt", None, {})
    with pytest.raises(SpecError, match="given both in model_config and as keywords"):
        model_options(None, None, {"features": 8}, {"features": 16})


def test_fetch_adjusts_the_models_sensor_and_excludes_sensor():
    assert FetchSpec(scale_m=30, cloudy_pct=10).sensor(10.0) == SensorSpec(scale_m=30, cloudy_pct=10)
    assert FetchSpec().sensor(20.0).scale_m == 20.0
    with pytest.raises(SpecError, match="give sensor= or fetch="):
        eoembed.get_embedding("rcf", PointBuffer(lon=1, lat=2, buffer_m=100), sensor=SensorSpec(),
                              fetch=FetchSpec(scale_m=20), source="stac")


def test_output_keyword_forms():
    assert OutputSpec.grid(grid_orientation="north_up") == OutputSpec.grid()
    assert OutputSpec.pooled(pooling="max").pooling == "max"
    with pytest.raises(SpecError, match="always north-up"):
        OutputSpec.grid(grid_orientation="native")
    with pytest.raises(SpecError, match="fetch=FetchSpec"):
        OutputSpec.pooled(scale_m=10)


def test_input_prep_strings_objects_and_auto():
    assert InputPrepSpec is InputPrep
    assert InputPrep.parse("tile") == InputPrep("tile") and InputPrep.parse(None) is None
    assert InputPrepSpec.auto(max_tiles=4).resolve(100, 100, 224).mode == "resize"
    assert InputPrepSpec.auto(max_tiles=4).resolve(448, 448, 224).mode == "tile"
    assert InputPrepSpec.auto(max_tiles=4).resolve(672, 448, 224).mode == "resize"  # 6 tiles > 4
    with pytest.raises(SpecError, match="'resize', 'tile', 'auto'"):
        InputPrep.parse("crop")
    with pytest.raises(SpecError, match="do not overlap"):
        InputPrepSpec.tile(tile_size=224, tile_stride=112)
    with pytest.raises(SpecError, match="pad_edges=False"):
        InputPrepSpec.tile(pad_edges=False)
    emb = build_embedder("remoteclip-vit-b-32", weights="/nowhere.pt")
    with pytest.raises(CapabilityError, match="not tile_size=256"):
        emb.check(OutputSpec.pooled(), prep=InputPrepSpec.tile(tile_size=256))


def test_auto_prep_tiles_big_places_and_resizes_small_ones(real_tiles):
    """'auto' decides per place; each gets what 'tile' or 'resize' alone would give."""
    from affine import Affine
    from eoembed.grid import GridSpec
    from eoembed.providers.base import make_observation

    emb = build_embedder("rcf", features=16)
    card = replace(emb.describe(), image_size=8)  # as if RCF were an 8-px model
    emb.describe = lambda: card
    rng = np.random.default_rng(0)

    def obs(n):
        grid = GridSpec("EPSG:32632", Affine(10, 0, 0, 0, -10, n * 10), n, n)
        vals = rng.uniform(0, 3000, (1, 10, n, n)).astype(np.float32)
        return make_observation(vals, np.ones((1, n, n), bool), grid, emb.describe().bands, [TemporalSpec.year(2022).midpoint])

    small, big = obs(8), obs(16)
    got = emb.embed([big, small], OutputSpec.pooled(), InputPrep.auto(max_tiles=4))
    assert [g.meta["input_prep"]["resolved"] for g in got] == ["tile", "resize"]
    np.testing.assert_array_equal(got[0].to_numpy(), emb.embed([big], OutputSpec.pooled(), InputPrep.tile())[0].to_numpy())
    np.testing.assert_array_equal(got[1].to_numpy(), emb.embed([small], OutputSpec.pooled())[0].to_numpy())


def test_backend_auto_order_and_record(monkeypatch, tmp_path):
    monkeypatch.delenv("EOEMBED_IMAGERY", raising=False)
    assert choose_source(None, "auto", {"paths": [str(tmp_path)]})[0] == "local"
    assert choose_source(None, None, None)[0] == "stac"  # pystac-client is installed here
    monkeypatch.setenv("EOEMBED_IMAGERY", str(tmp_path))
    chosen, options, why = choose_source(None, "auto", None)
    assert (chosen, options["paths"], why) == ("local", [str(tmp_path)], "auto: local imagery from $EOEMBED_IMAGERY")
    assert choose_source(None, "gee", None)[0] == "gee"
    assert choose_source(str(tmp_path), "auto", None)[0] == str(tmp_path)
    with pytest.raises(SpecError, match="contradicts"):
        choose_source(str(tmp_path), "gee", None)
    with pytest.raises(SpecError, match="must be one of auto, local, stac, gee"):
        choose_source(None, "tensor", None)
    monkeypatch.delenv("EOEMBED_IMAGERY")
    with pytest.raises(SpecError, match="backend='local' needs imagery"):
        choose_source(None, "local", None)


def test_gee_without_credentials_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(eoembed.ProviderError) as exc:
        eoembed.get_embedding("rcf", PointBuffer(lon=1, lat=2, buffer_m=100), TemporalSpec.year(2022), backend="gee")
    assert "Earth Engine" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("alias", "canonical"), [("remoteclip_s2rgb", "remoteclip-vit-b-32"),
                                                  ("remoteclip", "remoteclip-vit-b-32"),
                                                  ("galileo", "galileo-nano"), ("anysat", "anysat")])
def test_other_tools_model_ids_resolve(alias, canonical):
    assert resolve_model_id(alias) == canonical


def test_every_rs_embed_id_resolves_once_its_model_is_here():
    from eoembed.embedders.registry import _RS_EMBED_IDS, list_models

    here = set(list_models())
    for rs_id, targets in _RS_EMBED_IDS.items():
        present = [t for t in targets if t in here]
        if present:
            assert resolve_model_id(rs_id) in here
        else:
            with pytest.raises(SpecError, match="unknown model"):
                resolve_model_id(rs_id)


def test_temporal_spec_mode_forms():
    assert TemporalSpec(mode="year", year=2022) == TemporalSpec.year(2022)
    assert TemporalSpec(mode="range", start="2022-06-01", end="2022-09-01") == TemporalSpec.range(
        "2022-06-01", "2022-09-01")
    with pytest.raises(SpecError, match="needs start and end"):
        TemporalSpec(mode="range", start="2022-06-01")
    with pytest.raises(SpecError, match="'year' or 'range'"):
        TemporalSpec(mode="season", year=2022)


def test_export_keywords_that_do_not_apply_are_one_sentence(tmp_path):
    place = [PointBuffer(lon=1, lat=2, buffer_m=100)]
    with pytest.raises(SpecError, match="modality='s1'"):
        eoembed.export_batch(spatials=place, models=["rcf"], target=eoembed.ExportTarget.combined(tmp_path / "r"),
                             modality="s1")
    with pytest.raises(SpecError, match="does not take colour"):
        eoembed.export_batch(place, None, ["rcf"], tmp_path / "r", colour="red")
    with pytest.raises(SpecError, match="names 1 places but 2"):
        eoembed.export_batch(spatials=place * 2, models=["rcf"],
                             target=eoembed.ExportTarget.per_item(tmp_path, names=["a"]))
    with pytest.raises(SpecError, match="save_embeddings=False"):
        eoembed.ExportConfig(save_embeddings=False)


def test_load_export_lists_a_model_that_failed_everywhere(real_tiles, tmp_path):
    from eoembed.embedders.rcf import RCFEmbedder

    class Broken(RCFEmbedder):
        def embed_batch(self, observations, output):
            raise RuntimeError("injected failure")

    with rasterio.open(real_tiles[0]) as src:
        b = src.bounds
        place = BBox(b.left, b.top - 320, b.left + 320, b.top, crs=src.crs.to_wkt())
    eoembed.export_batch(spatials=[place], models=[build_embedder("rcf", features=8), Broken("broken", features=8)],
                         target=eoembed.ExportTarget.combined(tmp_path / "run"), source=str(real_tiles[0]),
                         config=eoembed.ExportConfig(continue_on_error=True))
    result = eoembed.load_export(tmp_path / "run.npz")
    assert result.ok_models == ["rcf"] and result.failed_models == ["broken"]
    assert "broken" not in result["models"] and result.models["broken"].status == "failed"
    assert "injected failure" in result.models["broken"].error
    assert result.embedding("rcf").shape == (1, 8) and result.status == "partial"
