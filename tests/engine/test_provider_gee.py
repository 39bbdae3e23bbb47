"""The Earth Engine provider with the real ``earthengine-api`` client against a loopback server.

Only Google's server is faked (``servers/ee_server.py``, its own process). The client really
fetches a discovery document, lists the algorithms, sends the provider's expressions to
``value:compute`` (the image listing) and ``image:computePixels`` (the pixels, as ``.npy``),
and, for service accounts, mints an access token with a signed JWT at the key's ``token_uri``.
The server evaluates the expressions for real on synthetic images with known pixel values:

    value(band, x, y) = base + 1000·k(band) + (x − X0)/10 + 100·(Y0 − y)/10

(k: the band's position in ``ee_server.BANDS``), and an ``SCL`` band that is 9 (cloud)
inside each image's cloud rectangles, 4 elsewhere. The expected answers below are computed
from that formula independently of the server.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import numpy as np
import pytest

ee = pytest.importorskip("ee")
from eoembed.errors import ProviderError, SpecError  # noqa: E402
from eoembed.providers import open_provider  # noqa: E402
from eoembed.providers.gee import EarthEngineProvider, ee_band, tiles_for  # noqa: E402
from eoembed.specs import BBox, FrameSpec, SensorSpec, TemporalSpec  # noqa: E402
from google.oauth2.credentials import Credentials  # noqa: E402

SERVER = Path(__file__).parent / "servers" / "ee_server.py"
EE_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
CRS, X0, Y0 = "EPSG:32632", 500_000.0, 6_350_000.0
TOKEN = "ya29.user-token-0123456789abcdef"
PROJECT = "eoembed-tests"
COLL = "COPERNICUS/S2_SR_HARMONIZED"
BBOX_LONLAT = [8.9, 57.0, 9.3, 57.4]  # around X0, Y0 in EPSG:32632
IMAGES = [  # id, time, cloud %, base, cloud rectangles (x0, y0, x1, y1) in EPSG:32632
    ("20200605T104031_20200605T104026_T32VNH", "2020-06-05T10:40:31Z", 3.0, 100, []),
    ("20200615T104031_20200615T104026_T32VNH", "2020-06-15T10:40:31Z", 20.0, 300,
     [[X0, Y0 - 10_000, X0 + 320, Y0 + 10_000]]),  # west strip cloudy
    ("20200625T104031_20200625T104026_T32VNH", "2020-06-25T10:40:31Z", 10.0, 200,
     [[X0 - 10_000, Y0 - 240, X0 + 10_000, Y0 + 10_000]]),  # north strip cloudy
    ("20200628T104031_20200628T104026_T32VNH", "2020-06-28T10:40:31Z", 85.0, 900, []),
    ("20200810T104031_20200810T104026_T32VNH", "2020-08-10T10:40:31Z", 5.0, 500, []),
]
MAX_REQUEST_BYTES = 16384
PLACE = BBox(X0, Y0 - 480, X0 + 640, Y0, crs=CRS)  # 64 × 48 px at 10 m


def expected(base: float, band: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return base + 1000 * EE_BANDS.index(ee_band(band)) + (xs - X0) / 10 + 100 * (Y0 - ys) / 10


class EEServer:
    def __init__(self, root: Path, sa_email: str, public_key: Path) -> None:
        catalog = {
            "collections": {COLL: {"crs": CRS, "x0": X0, "y0": Y0, "images": [
                {"id": i, "time": t, "cloud": c, "base": b, "clouds": cl, "bbox": BBOX_LONLAT}
                for i, t, c, b, cl in IMAGES
            ]}},
            "max_request_bytes": MAX_REQUEST_BYTES,
            "delay": 0.05,
        }
        (root / "catalog.json").write_text(json.dumps(catalog))
        self.log = root / "ee-requests.jsonl"
        ready = root / "ee-port"
        self.proc = subprocess.Popen([
            sys.executable, str(SERVER), "--catalog", str(root / "catalog.json"), "--log", str(self.log),
            "--ready", str(ready), "--token", TOKEN, "--denied-project", "denied-project",
            "--sa-email", sa_email, "--sa-public-key", str(public_key),
        ])
        t0 = time.time()
        while not ready.exists():
            if self.proc.poll() is not None or time.time() - t0 > 20:
                raise RuntimeError("the Earth Engine test server did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{int(ready.read_text())}"

    def fault(self, body: dict) -> None:
        req = urllib.request.Request(self.base + "/_faults", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()

    def _lines(self) -> list[str]:
        """The request log once it has stopped growing (the server logs after answering)."""
        seen, stable_since = -1, time.time()
        while True:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            if len(lines) != seen:
                seen, stable_since = len(lines), time.time()
            elif time.time() - stable_since > 0.1:
                return lines
            time.sleep(0.02)

    def mark(self) -> int:
        return len(self._lines())

    def since(self, mark: int) -> list[dict]:
        return [json.loads(line) for line in self._lines()[mark:]]


@pytest.fixture(scope="module")
def service_account(tmp_path_factory):
    """An RSA key pair: the public half for the server, the private half for a key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    root = tmp_path_factory.mktemp("ee")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    pub = root / "sa.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"root": root, "pem": pem, "public": pub, "email": "eoembed-test@sa-project.iam.gserviceaccount.com"}


@pytest.fixture(scope="module")
def server(service_account):
    srv = EEServer(service_account["root"], service_account["email"], service_account["public"])
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=10)
    ee.Reset()


@pytest.fixture(autouse=True)
def offline(monkeypatch, server, tmp_path):
    """No way out: a home without credentials, no metadata-server probe, and the client's one
    fetch outside the API (the catalogue of deprecated assets) pointed at the loopback server."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("EE_PROJECT", raising=False)
    monkeypatch.setattr(ee.deprecation, "_DEPRECATED_ASSETS_URL", server.base + "/no-catalog.json")


@pytest.fixture
def key_file(service_account, server, tmp_path):
    """A service-account key whose token_uri is the loopback server."""
    info = {
        "type": "service_account", "project_id": "sa-project", "private_key_id": "k1",
        "private_key": service_account["pem"], "client_email": service_account["email"], "client_id": "1",
        "token_uri": server.base + "/token",
    }
    path = tmp_path / "key.json"
    path.write_text(json.dumps(info))
    return path


def _provider(server, **kw) -> EarthEngineProvider:
    kw.setdefault("project", PROJECT)
    kw.setdefault("credentials", Credentials(TOKEN))
    kw.setdefault("max_pixels_per_request", 512)
    kw.setdefault("workers", 4)
    kw.setdefault("retries", 0)
    return EarthEngineProvider(url=server.base, **kw)


def _fetch(p, start, end, bands=("B02", "B04", "B8A"), frames=None, place=PLACE, **sensor):
    s = SensorSpec(bands=tuple(bands), **sensor)
    return p.fetch(p.request(place, TemporalSpec(start, end), s, frames))


def _centres(obs):
    return np.meshgrid(obs.grid.xs(), obs.grid.ys())


# ------------------------------------------------------------------------------ units
def test_band_names_and_tiling():
    assert [ee_band(b) for b in ("B01", "B02", "B8A", "B11", "SCL")] == ["B1", "B2", "B8A", "B11", "SCL"]
    for w, h, m in ((64, 48, 512), (1, 1, 10), (100, 7, 30), (2000, 1500, 512 * 512)):
        tiles = tiles_for(w, h, m)
        cover = np.zeros((h, w), int)
        for c0, r0, tw, th in tiles:
            assert tw * th <= m
            cover[r0:r0 + th, c0:c0 + tw] += 1
        assert (cover == 1).all()


def test_options_are_validated_and_registered_as_source_gee(tmp_path):
    with pytest.raises(SpecError, match="workers"):
        EarthEngineProvider(workers=0)
    with pytest.raises(SpecError, match="service-account key file"):
        EarthEngineProvider(credentials=str(tmp_path / "missing.json"))
    p = open_provider("gee", project="p", collection="COPERNICUS/S2_SR_HARMONIZED")
    assert isinstance(p, EarthEngineProvider)
    assert p.describe() == {"provider": "gee", "collection": COLL, "project": "p", "credentials": "persistent"}


# ------------------------------------------------------------------------------ against the server
def test_median_composite_request_building_tiling_and_parallel_fetch(server):
    p = _provider(server)
    mark = server.mark()
    obs = _fetch(p, "2020-06-01", "2020-07-01")
    log = server.since(mark)
    xs, ys = _centres(obs)
    west = xs < X0 + 320
    north = ys >= Y0 - 240
    for j, band in enumerate(obs.bands):
        v1, v2, v3 = (expected(b, band, xs, ys) for b in (100, 300, 200))
        stack = np.stack([v1, np.where(west, np.nan, v2), np.where(north, np.nan, v3)])
        np.testing.assert_allclose(obs.values()[0, j], np.nanmedian(stack, axis=0), rtol=0, atol=1e-2)
    assert obs.valid.all() and obs.dates == [date(2020, 6, 15)]  # the median of 06-05, 06-15, 06-25
    assert obs.grid.crs == CRS and (obs.grid.width, obs.grid.height) == (64, 48)
    m = obs.meta
    assert m["images"] == [i[0] for i in IMAGES[:3]]  # the 85 % cloudy image is filtered out
    assert m["cloud_cover"][IMAGES[1][0]] == 20.0 and m["dates"][0] == "2020-06-05"
    assert m["boa_offset"].startswith("removed by the collection") and m["project"] == PROJECT
    # tiles: 22 × 23 px (≤ 512 px, ≤ the server's 16 KiB answers), 3 × 3 of them, fetched in parallel
    pix = [r for r in log if r["path"].endswith("image:computePixels")]
    assert m["tiles"] == len(pix) == 9 and m["requests"] == 10
    cover = np.zeros((48, 64), int)
    for r in pix:
        g = r["grid"]
        assert r["status"] == 200 and r["fileFormat"] == "NPY" and g["crsCode"] == CRS
        w, h = g["dimensions"]["width"], g["dimensions"]["height"]
        at = g["affineTransform"]
        assert (at["scaleX"], at["scaleY"], at["shearX"], at["shearY"]) == (10, -10, 0, 0)
        c0, r0 = round((at["translateX"] - X0) / 10), round((Y0 - at["translateY"]) / 10)
        cover[r0:r0 + h, c0:c0 + w] += 1
        assert w * h <= 512 and w * h * 4 * 4 <= MAX_REQUEST_BYTES
    assert (cover == 1).all()
    assert 1 < max(r["inflight"] for r in pix) <= 4
    assert all(r["auth"] == "valid" and r["user_project"] == PROJECT for r in log if r["path"].startswith("/v1/"))
    used = set(pix[0]["functions"])
    assert {"ImageCollection.load", "Filter.intersects", "Filter.dateRangeContains", "Filter.greaterThan",
            "Collection.map", "Image.neq", "Image.and", "Image.updateMask", "reduce.median", "reduce.count",
            "Image.unmask"} <= used


def test_mosaic_takes_the_newest_clear_pixel(server):
    obs = _fetch(_provider(server), "2020-06-01", "2020-07-01", composite="mosaic")
    xs, ys = _centres(obs)
    west, north = xs < X0 + 320, ys >= Y0 - 240
    band = obs.bands[0]
    expect = np.where(~north, expected(200, band, xs, ys),
                      np.where(~west, expected(300, band, xs, ys), expected(100, band, xs, ys)))
    np.testing.assert_allclose(obs.values()[0, 0], expect, atol=1e-2)


def test_monthly_time_series_with_empty_month_policies(server):
    p = _provider(server)
    mark = server.mark()
    obs = _fetch(p, "2020-06-01", "2020-09-01", frames=FrameSpec.by_month("fill"), fill_value=-5)
    log = server.since(mark)
    # June: the median of its three images; July has none (its midpoint); August: its one image
    assert obs.dates == [date(2020, 6, 15), date(2020, 7, 16), date(2020, 8, 10)]
    assert obs.months.tolist() == [5, 6, 7] and obs.day_of_year.tolist() == [167, 198, 223]
    xs, ys = _centres(obs)
    np.testing.assert_allclose(obs.values()[2, 0], expected(500, "B02", xs, ys), atol=1e-2)
    assert not obs.valid[1].any() and (obs.values()[1] == -5).all() and obs.valid[[0, 2]].all()
    frames = obs.meta["frames"]
    assert [f["status"] for f in frames] == ["ok", "filled", "ok"]
    assert frames[0]["scenes"] == ["2020-06-05", "2020-06-15", "2020-06-25"] and frames[2]["scenes"] == ["2020-08-10"]
    # one listing, then the tiles of the two months that have images (July is not requested)
    assert sum(r["path"].endswith("computePixels") for r in log) == 18 and obs.meta["requests"] == 19
    nearest = _fetch(p, "2020-06-01", "2020-09-01", frames=FrameSpec.by_month("nearest"))
    np.testing.assert_array_equal(nearest.values()[1], nearest.values()[0])  # July ← June (the earlier tie)
    assert not nearest.valid[1].any()
    skip = _fetch(p, "2020-06-01", "2020-09-01", frames=FrameSpec.by_month("skip"))
    assert skip.dates == [date(2020, 6, 15), date(2020, 8, 10)]
    with pytest.raises(ProviderError, match="2020-07-01 to 2020-08-01"):
        _fetch(p, "2020-06-01", "2020-09-01", frames=FrameSpec.by_month("error"))
    halves = _fetch(p, "2020-06-01", "2020-07-01", frames=FrameSpec.bins(2), bands=["B02"])
    assert [f["scenes"] for f in halves.meta["frames"]] == [["2020-06-05", "2020-06-15"], ["2020-06-25"]]
    xs, ys = _centres(halves)
    first = np.where(xs < X0 + 320, expected(100, "B02", xs, ys),
                     (expected(100, "B02", xs, ys) + expected(300, "B02", xs, ys)) / 2)
    np.testing.assert_allclose(halves.values()[0, 0], first, atol=1e-2)


def test_empty_listing_names_the_window_and_cloud_limit(server):
    p = _provider(server)
    with pytest.raises(ProviderError, match=r"between 2019-01-01 and 2020-01-01 \(end excluded\).*≤ 30"):
        _fetch(p, "2019-01-01", "2020-01-01")
    with pytest.raises(ProviderError, match=r"2020-06-26 and 2020-06-30.*≤ 50"):
        _fetch(p, "2020-06-26", "2020-06-30", cloudy_pct=50)  # only the 85 % cloudy image


@pytest.mark.parametrize("make, match", [
    (lambda s: _provider(s, collection="NOPE/NOTHING"), "no image collection 'NOPE/NOTHING'"),
    (lambda s: _provider(s, project="denied-project"), "project 'denied-project' may not use Earth Engine"),
    (lambda s: _provider(s, credentials=Credentials("ya29.wrong")), "did not accept the credentials"),
    (lambda s: _provider(s, max_pixels_per_request=4096), "too large.*lower max_pixels_per_request"),
])
def test_server_errors_become_sentences(server, make, match):
    with pytest.raises(ProviderError, match=match) as err:
        _fetch(make(server), "2020-06-01", "2020-07-01")
    assert "ya29.wrong" not in str(err.value) and TOKEN not in str(err.value)


def test_missing_band_is_named(server):
    with pytest.raises(ProviderError, match="lacks a band.*B10"):
        _fetch(_provider(server), "2020-06-01", "2020-07-01", bands=["B04", "B10"])


def test_quota_exceeded_is_a_sentence_and_retries_recover(server):
    quota = {"match": "computePixels", "status": 429, "status_text": "RESOURCE_EXHAUSTED",
             "message": "Quota exceeded: too many concurrent requests."}
    server.fault({**quota, "count": 50})
    try:
        with pytest.raises(ProviderError, match="over its quota.*lower workers="):
            _fetch(_provider(server), "2020-06-01", "2020-07-01")
    finally:
        server.fault({"clear": True})
    server.fault({**quota, "count": 1})
    mark = server.mark()
    obs = _fetch(_provider(server, retries=1, max_pixels_per_request=4096 // 4), "2020-06-01", "2020-07-01",
                 bands=["B02"])
    statuses = [r["status"] for r in server.since(mark) if r["path"].endswith("computePixels")]
    assert statuses.count(429) == 1 and statuses.count(200) == obs.meta["tiles"]


def test_missing_project_and_missing_credentials(server, monkeypatch):
    with pytest.raises(ProviderError, match="no Google Cloud project.*EE_PROJECT"):
        _fetch(_provider(server, project=None), "2020-06-01", "2020-07-01")
    monkeypatch.setenv("EE_PROJECT", PROJECT)
    assert _fetch(_provider(server, project=None), "2020-06-01", "2020-07-01").meta["project"] == PROJECT
    # nothing stored in this (empty) home: a sentence saying how to authenticate
    with pytest.raises(ProviderError, match="not authenticated.*earthengine authenticate"):
        _fetch(_provider(server, credentials=None), "2020-06-01", "2020-07-01")


def test_unreachable_endpoint(server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = EarthEngineProvider(project=PROJECT, credentials=Credentials(TOKEN), url=f"http://127.0.0.1:{port}",
                            retries=0)
    t0 = time.time()
    with pytest.raises(ProviderError, match="could not reach Earth Engine at 127.0.0.1"):
        _fetch(p, "2020-06-01", "2020-07-01")
    assert time.time() - t0 < 10


@pytest.mark.parametrize("message, says", [
    ("HTTPConnectionPool(host='127.0.0.1', port=40123): Max retries exceeded (Errno 111 refused)",
     "could not reach"),  # a port with 401 in it is no HTTP 401
    ("HTTPConnectionPool(host='127.0.0.1', port=54290): Max retries exceeded (Errno 111 refused)",
     "could not reach"),
    ("<HttpError 401 when requesting v1/projects/p: Request had invalid credentials>", "did not accept"),
    ("HttpError 429: Too Many Requests", "over its quota"),
])
def test_errors_are_explained_by_their_words_not_by_digits_inside_a_port(message, says):
    p = EarthEngineProvider(project=PROJECT, credentials=Credentials(TOKEN), url="http://127.0.0.1:40123")
    assert says in str(p._explain(RuntimeError(message), "listing images"))


def test_service_account_key_and_secret_hygiene(server, service_account, key_file, caplog):
    caplog.set_level(logging.DEBUG)
    p = _provider(server, credentials=str(key_file), project=None)
    mark = server.mark()
    obs = _fetch(p, "2020-06-01", "2020-07-01", bands=["B02"])
    log = server.since(mark)
    grants = [r for r in log if r["path"] == "/token"]
    assert [g["grant"] for g in grants] == ["valid"]  # a JWT signed with the key, verified by the server
    assert obs.meta["project"] == "sa-project"  # the key's own project
    assert all(r["auth"] == "valid" for r in log if r["path"].startswith("/v1/"))
    # an error echoing the request's Authorization header: the sentence carries no token
    server.fault({"match": "computePixels", "status": 500, "count": 50, "echo_auth": True,
                  "message": "backend error"})
    try:
        with pytest.raises(ProviderError) as err:
            _fetch(p, "2020-06-01", "2020-07-01", bands=["B02"])
    finally:
        server.fault({"clear": True})
    issued = [r["issued"] for r in server.since(mark) if r.get("issued")]
    assert issued and "Bearer" in str(err.value)  # the echo reached the client …
    secrets = issued + [service_account["pem"].splitlines()[1], "BEGIN PRIVATE KEY"]
    texts = [str(err.value), json.dumps(obs.meta, default=str), json.dumps(p.describe()), caplog.text]
    for secret in secrets:
        for text in texts:
            assert secret not in text  # … but no token or key material anywhere


def test_application_default_credentials_are_the_persistent_fallback(server, key_file, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    obs = _fetch(_provider(server, credentials=None, project=None), "2020-06-01", "2020-07-01", bands=["B02"])
    assert obs.meta["project"] == "sa-project" and obs.valid.all()


def test_a_place_in_any_crs_gets_the_sentinel2_lattice_of_its_utm_zone(server):
    # Earth Engine's S2 images are on 10 m multiples of their MGRS tile's UTM zone: the grid
    # rule's fallback, whatever CRS the place is written in
    from eoembed.specs import PointBuffer
    from pyproj import Transformer

    p = _provider(server)
    x, y = X0 + 333.3, Y0 - 222.2
    lon, lat = Transformer.from_crs(CRS, 4326, always_xy=True).transform(x, y)
    when, sensor = TemporalSpec("2020-06-01", "2020-06-10"), SensorSpec(bands=("B02",))
    reqs = []
    for crs in (CRS, "EPSG:4326", "EPSG:3857", "EPSG:3035", "EPSG:25832"):
        px, py = Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
        reqs.append(p.request(PointBuffer(px, py, 150, crs=crs), when, sensor))
    assert all(r.grid == reqs[0].grid for r in reqs)
    g = reqs[0].grid
    assert g.crs == CRS and (g.width, g.height) == (30, 30)
    assert (g.transform.c, g.transform.f) == (X0 + 180, Y0 - 70)  # by hand: 333.3 − 150 → 180, −222.2 + 150 → −70
    a, b = p.fetch(reqs[0]), p.fetch(reqs[2])
    np.testing.assert_array_equal(a.values(), b.values())
    assert b.meta["grid"] == {"crs": CRS, "basis": "utm zone of the place"}
