"""rs-embed's documented examples, written as its users write them with only the import line
changed to ``from eoembed import ...``: each runs offline on local imagery or stops with one
sentence naming what is missing — never a TypeError or AttributeError.

The snippets follow rs-embed's README, quickstart, model pages (RemoteCLIP, AnySat), the API
pages (specs, export, load, user data). Offline here: local imagery comes from
``$EOEMBED_IMAGERY`` (the shared tiles), the Hugging Face Hub is off and HTTP goes to a closed
local port, so products and weights are never downloaded.
"""

from __future__ import annotations

import textwrap

import pytest
import rasterio
from eoembed.errors import EoembedError
from pyproj import Transformer

# (name, code, expected): expected is None (runs) or (error class name, words in the message)
EXAMPLES = [
    ("readme quick example", """
from eoembed import PointBuffer, TemporalSpec, OutputSpec, get_embedding
spatial = PointBuffer(lon=121.5, lat=31.2, buffer_m=2048)
temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
emb = get_embedding("prithvi", spatial=spatial, temporal=temporal, output=OutputSpec.pooled())
""", ("EoembedError", "")),
    ("remoteclip page minimal", """
from eoembed import get_embedding, PointBuffer, TemporalSpec, OutputSpec
emb = get_embedding(
    "remoteclip",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    output=OutputSpec.pooled(),
    backend="auto",
)
""", ("ProviderError", "no local imagery covers the place")),
    ("remoteclip page custom checkpoint", """
from eoembed import get_embedding, PointBuffer, TemporalSpec, OutputSpec, SensorSpec
emb = get_embedding(
    "remoteclip",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    sensor=SensorSpec(
        collection="hf:MVRL/remote-clip-vit-base-patch32",
        bands=("B4", "B3", "B2"),
        scale_m=10,
        cloudy_pct=30,
        composite="median",
    ),
    output=OutputSpec.grid(),
    backend="auto",
)
""", ("ProviderError", "no local imagery covers the place")),
    ("anysat page minimal", """
from eoembed import get_embedding, PointBuffer, TemporalSpec, OutputSpec
emb = get_embedding(
    "anysat",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
    temporal=TemporalSpec.range("2022-01-01", "2023-01-01"),
    output=OutputSpec.pooled(),
    backend="auto",
)
""", ("ProviderError", "no local imagery covers the place")),
    ("embedding page on earth engine", """
from eoembed import PointBuffer, TemporalSpec, OutputSpec, get_embedding
emb = get_embedding(
    "remoteclip",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    output=OutputSpec.pooled(pooling="mean"),
    backend="gee",
    device="auto",
    input_prep="resize",  # default
)
vec = emb.data
""", ("ProviderError", "Earth Engine")),
    ("quickstart single", """
from eoembed import PointBuffer, TemporalSpec, OutputSpec, get_embedding
emb = get_embedding(
    "tessera",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=1024),
    temporal=TemporalSpec.year(2024),
    output=OutputSpec.pooled(pooling="mean")
)
vec = emb.data
meta = emb.meta
""", ("EoembedError", "")),
    ("quickstart batch", """
from eoembed import PointBuffer, TemporalSpec, OutputSpec, get_embeddings_batch
spatials = [PointBuffer(121.5, 31.2, 1024), PointBuffer(120.5, 30.2, 1024)]
embs = get_embeddings_batch("tessera", spatials=spatials, temporal=TemporalSpec.year(2024),
                            output=OutputSpec.pooled())
""", ("EoembedError", "")),
    ("quickstart export", """
from eoembed import ExportConfig, ExportTarget, PointBuffer, TemporalSpec, export_batch
spatials = [PointBuffer(121.5, 31.2, 1024), PointBuffer(120.5, 30.2, 1024)]
export_batch(
    spatials=spatials,
    temporal=TemporalSpec.year(2024),
    models=["tessera","gse"],
    target=ExportTarget.per_item("exports", names=["p1", "p2"]),
    config=ExportConfig(save_inputs=False, save_embeddings=True, resume=True, show_progress=True),
)
""", ("EoembedError", "")),
    ("export page combined", """
from eoembed import export_batch, ExportConfig, ExportTarget, PointBuffer, TemporalSpec
export_batch(
    spatials=[PointBuffer(121.5, 31.2, 2048)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["remoteclip"],
    target=ExportTarget.combined("exports/run"),
    config=ExportConfig(),
)
""", ("WeightsError", "not in the Hugging Face cache")),
    ("export page per-model fetch", """
from eoembed import ExportModelRequest, FetchSpec, export_batch, ExportTarget, PointBuffer, TemporalSpec
export_batch(
    spatials=[PointBuffer(121.5, 31.2, 2048)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["remoteclip", ExportModelRequest("prithvi", fetch=FetchSpec(scale_m=30))],
    target=ExportTarget.combined("exports/run"),
)
""", ("EoembedError", "")),
    ("export page configure", """
from eoembed import export_batch, ExportModelRequest, ExportTarget, PointBuffer, TemporalSpec
export_batch(
    spatials=[PointBuffer(121.5, 31.2, 2048)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=[ExportModelRequest.configure("thor", variant="large")],
    target=ExportTarget.combined("exports/thor_large_run"),
    backend="gee",
)
""", ("EoembedError", "")),
    ("export page s1 modality", """
from eoembed import export_batch, ExportModelRequest, ExportTarget, PointBuffer, TemporalSpec
export_batch(
    spatials=[PointBuffer(121.5, 31.2, 2048)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=[ExportModelRequest("terrafm", modality="s1")],
    target=ExportTarget.combined("exports/terrafm_s1_run"),
    backend="gee",
)
""", ("SpecError", "")),
    ("export page shared sampling", """
from eoembed import FetchSpec, export_batch, ExportTarget, PointBuffer, TemporalSpec
export_batch(
    spatials=[PointBuffer(121.5, 31.2, 2048)],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["remoteclip", "anysat"],
    fetch=FetchSpec(scale_m=10),
    target=ExportTarget.combined("exports/shared_sampling"),
)
""", ("WeightsError", "not in the Hugging Face cache")),
    ("export page tiling", """
from eoembed import export_batch, ExportConfig, ExportTarget, PointBuffer, TemporalSpec
spatials = [PointBuffer(121.5, 31.2, 2048), PointBuffer(120.5, 30.2, 2048)]
export_batch(
    spatials=spatials,
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["remoteclip", "prithvi"],
    target=ExportTarget.per_item("exports", names=["p1", "p2"]),
    config=ExportConfig(chunk_size=32, num_workers=8),
    input_prep="tile",
)
""", ("EoembedError", "")),
    ("specs page", """
from eoembed import BBox, PointBuffer, TemporalSpec, SensorSpec, FetchSpec, OutputSpec, InputPrepSpec
BBox(minlon=121.4, minlat=31.1, maxlon=121.6, maxlat=31.3)
PointBuffer(lon=121.5, lat=31.2, buffer_m=2048)
TemporalSpec.year(2022)
TemporalSpec.range("2022-06-01", "2022-09-01")
TemporalSpec(mode="range", start="2022-06-01", end="2022-09-01")
TemporalSpec(mode="year", year=2022)
SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10, cloudy_pct=30,
           fill_value=0.0, composite="median")
FetchSpec(scale_m=10, cloudy_pct=10)
OutputSpec.grid()
OutputSpec.pooled(pooling="max")
InputPrepSpec.tile()
InputPrepSpec.resize()
InputPrepSpec.auto(max_tiles=4)
InputPrepSpec.tile(tile_size=224)
""", None),
    ("specs page fetch", """
from eoembed import FetchSpec, PointBuffer, TemporalSpec, get_embedding
emb = get_embedding(
    "anysat",
    spatial=PointBuffer(lon=121.5, lat=31.2, buffer_m=2048),
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    fetch=FetchSpec(scale_m=10, cloudy_pct=10),
)
""", ("ProviderError", "no local imagery covers the place")),
    ("user data page", """
import numpy as np
from eoembed import UserData, get_embedding_from_data, PointBuffer, TemporalSpec
bands = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
cube = np.full((12, 32, 32), 1500.0, dtype=np.float32)
emb = get_embedding_from_data(
    "galileo",
    data=UserData(data=cube, collection="s2", bands=bands),
    spatial=PointBuffer(lon=-88.2, lat=40.1, buffer_m=640),
    temporal=TemporalSpec.year(2022),
)
""", ("WeightsError", "not in the Hugging Face cache")),
    ("user data page list", """
import numpy as np
from eoembed import UserData, list_models_for_data
bands = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
my_declaration = UserData(data=np.full((12, 8, 8), 5000.0, dtype=np.float32), collection="s2", bands=bands)
report = list_models_for_data(my_declaration)
assert "galileo-nano" in [r["model"] for r in report if r["compatible"]]
""", None),
]


@pytest.fixture
def offline(monkeypatch, real_tiles, tmp_path):
    monkeypatch.setenv("EOEMBED_IMAGERY", str(real_tiles[0].parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "GDAL_HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: no download, even online
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no Earth Engine credentials, no weight cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    return real_tiles


def _run(code: str) -> None:
    exec(compile(textwrap.dedent(code), "<example>", "exec"), {})


@pytest.mark.parametrize(("name", "code", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs_or_says_what_is_missing(offline, name, code, expected):
    if expected is None:
        _run(code)
        return
    kind, words = expected
    with pytest.raises(EoembedError) as exc:
        _run(code)
    assert kind == "EoembedError" or type(exc.value).__name__ == kind, repr(exc.value)
    message = str(exc.value)
    assert words in message and message and "\n" not in message


def _centre_of(path):
    with rasterio.open(path) as src:
        cx, cy = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
        return Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(cx, cy)


def test_examples_run_offline_where_the_imagery_is(offline, shared_dir):
    """The same call forms, placed on a local tile, compute embeddings (and record the choices)."""
    lon, lat = _centre_of(offline[0])
    nano = shared_dir / "weights" / "galileo_nano"
    ns: dict = {"lon": lon, "lat": lat, "nano": str(nano)}
    exec(textwrap.dedent("""
    from eoembed import (get_embedding, export_batch, load_export, ExportConfig, ExportTarget, PointBuffer,
                         SensorSpec, TemporalSpec, OutputSpec, FetchSpec, ExportModelRequest)
    emb = get_embedding(
        "rcf",
        spatial=PointBuffer(lon=lon, lat=lat, buffer_m=320),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        output=OutputSpec.grid(),
        backend="auto",
        device="auto",
        features=64,
    )
    gal = get_embedding(
        "galileo",
        spatial=PointBuffer(lon=lon, lat=lat, buffer_m=320),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=SensorSpec(collection=nano, bands=("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"),
                          scale_m=10, cloudy_pct=30, composite="median"),
        output=OutputSpec.pooled(),
        backend="auto",
        input_prep="auto",
    )
    export_batch(
        spatials=[PointBuffer(lon, lat, 320), PointBuffer(lon, lat, 160)],
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["rcf", ExportModelRequest.configure("rcf-empirical", features=32)],
        target=ExportTarget.combined("exports/run"),
        config=ExportConfig(save_inputs=True, continue_on_error=True),
        fetch=FetchSpec(scale_m=10),
    )
    result = load_export("exports/run.npz")
    """), ns)
    emb, gal, result = ns["emb"], ns["gal"], ns["result"]
    assert emb.data.shape == (64, 16, 16) and emb.meta["config"]["features"] == 64
    assert emb.meta["backend"] == {"requested": "auto", "source": "local", "why": "auto: local imagery from $EOEMBED_IMAGERY"}
    assert emb.meta["collection"]["source_id"] == "sentinel-2-l2a"
    assert "EPSG:3857" in emb.meta["conventions"]["footprint"]
    assert gal.meta["model"] == "galileo-nano" and gal.data.shape == (128,)
    assert gal.meta["weights"]["source"].endswith("galileo_nano") or "sha256" in gal.meta["weights"]
    assert result.n_items == 2
    assert result["run"]["backend"] == {"requested": "auto", "source": "local",
                                        "why": "auto: local imagery from $EOEMBED_IMAGERY"}
    assert result.ok_models == ["rcf", "rcf-empirical"] and result.failed_models == []
    assert result.embedding("rcf").shape == (2, 512) and result.embedding("rcf-empirical").shape == (2, 32)
    assert result.models["rcf"].inputs is None
