"""The STAC provider against a real STAC API and COG server on 127.0.0.1 (no internet).

The server (``servers/stac_server.py``, its own process) serves STAC JSON for items built here
from the real Sentinel-2 L2A tiles in ``../shared/data/s2_l2a_tiles``: every band written as a
COG at its native resolution (10/20/60 m), plus a scene classification (SCL) band. Pixel
values are real; the catalogue metadata (dates, cloud cover, baselines, SCL clouds) is made up
so that every answer is known. Tile origins are snapped to the 60 m lattice, as real
Sentinel-2 tiles are, so 10 m grids read the COGs without resampling.
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
import rasterio
from affine import Affine
from eoembed.errors import ProviderError, SpecError
from eoembed.providers import open_provider
from eoembed.providers.redact import redact
from eoembed.providers.stac import StacProvider, boa_offset_for, parse_item
from eoembed.specs import BBox, FrameSpec, PointBuffer, SensorSpec, TemporalSpec
from rasterio.warp import Resampling, reproject, transform_bounds

SERVER = Path(__file__).parent / "servers" / "stac_server.py"
LAYOUT = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
       "B8A": 20, "B09": 60, "B11": 20, "B12": 20, "SCL": 20}
EARTH_SEARCH_KEYS = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
                     "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
                     "B11": "swir16", "B12": "swir22", "SCL": "scl"}
SAS_SECRET = "sEcReT-sas-signature-4711"
TEN_M = ["B02", "B03", "B04", "B08"]


# ------------------------------------------------------------------------------ fixtures
def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


class Catalogue:
    """Builds items: one COG per band at its native resolution, STAC JSON with ``{base}`` hrefs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.items: list[dict] = []
        self.arrays: dict[str, dict] = {}

    def add(self, collection: str, item_id: str, pixels: np.ndarray, crs: str, origin: tuple[float, float],
            when: str, cloud: float, props: dict, scl: np.ndarray | None = None, dn_offset: int = 0) -> None:
        x0, y0 = origin
        files = {}
        for b, arr in zip(LAYOUT + ("SCL",), list(pixels) + [scl if scl is not None else np.full((224, 224), 4)]):
            res = RES[b]
            data = arr.astype(np.float64)
            if res > 10:
                data = _block_mean(data, res // 10) if b != "SCL" else arr[:: res // 10, :: res // 10]
            if b != "SCL":
                data = np.where(data > 0, data + dn_offset, 0)
            data = np.rint(data).astype("uint16" if b != "SCL" else "uint8")
            name = f"{item_id}_{b}.tif"
            profile = dict(driver="COG", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
                           crs=crs, transform=Affine(res, 0, x0, 0, -res, y0), blocksize=128, compress="deflate",
                           nodata=0 if b != "SCL" else None)
            with rasterio.open(self.root / "data" / name, "w", **profile) as dst:
                dst.write(data[None])
            files[b] = name
        w, s, e, n = transform_bounds(crs, "EPSG:4326", x0, y0 - 2240, x0 + 2240, y0, densify_pts=21)
        assets = {
            EARTH_SEARCH_KEYS[b]: {
                "href": "{base}/data/" + f,
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "eo:bands": [{"name": b}] if b != "SCL" else [],
            }
            for b, f in files.items()
        }
        assets["thumbnail"] = {"href": "{base}/data/none.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
        self.items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
            "bbox": [w, s, e, n],
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"datetime": when, "eo:cloud_cover": cloud, "platform": "sentinel-2a", **props},
            "assets": assets, "links": [],
        })
        self.arrays[item_id] = {"pixels": pixels, "crs": crs, "origin": origin, "scl": scl}

    def write(self) -> None:
        cols = sorted({i["collection"] for i in self.items})
        collections = [
            {"type": "Collection", "stac_version": "1.0.0", "id": c, "description": "test", "license": "CC-BY-SA-4.0",
             "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
             "links": []}
            for c in cols
        ]
        (self.root / "catalog.json").write_text(json.dumps({"collections": collections, "items": self.items}))


class Server:
    """The STAC server process, its base URL, request log and fault injection."""

    def __init__(self, root: Path, sas_secret: str | None = None, name: str = "server") -> None:
        self.log = root / f"{name}-requests.jsonl"
        ready = root / f"{name}-port"
        for p in (self.log, ready):
            p.unlink(missing_ok=True)
        cmd = [sys.executable, str(SERVER), "--root", str(root), "--log", str(self.log), "--ready", str(ready)]
        if sas_secret:
            cmd += ["--sas-secret", sas_secret]
        self.proc = subprocess.Popen(cmd)
        t0 = time.time()
        while not ready.exists():
            if self.proc.poll() is not None or time.time() - t0 > 20:
                raise RuntimeError("the STAC test server did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{int(ready.read_text())}"

    def fault(self, match: str = "", status: int = 500, count: int = 1, clear: bool = False) -> None:
        """The next `count` requests to paths starting with `match` fail with `status`.

        Note: GDAL may send two HEAD requests when it opens a remote file (a stat, then the
        open), so one failed *attempt* to read an asset can use up to two faults.
        """
        body = {"clear": True} if clear else {"match": match, "status": status, "count": count}
        req = urllib.request.Request(self.base + "/_faults", method="POST", data=json.dumps(body).encode(),
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

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _snap(v: float, step: float = 60.0) -> float:
    return round(v / step) * step


@pytest.fixture(scope="module")
def world(real_tiles, tmp_path_factory):
    """The catalogue and a running server; yields (server, catalogue, facts about the place)."""
    tiles = {p.stem: p for p in real_tiles}
    px = {}
    for name in ("637U_59R_1_3", "433D_629L_3_1", "609U_541L_3_0", "282D_485L_3_3", "38D_378R_2_3"):
        with rasterio.open(tiles[name]) as src:
            px[name] = src.read().astype(np.int32)
            if name == "637U_59R_1_3":
                crs, t = src.crs.to_string(), src.transform
    origin = (_snap(t.c), _snap(t.f))  # EPSG:32632, near 9.85 E 57.23 N
    root = tmp_path_factory.mktemp("stac")
    cat = Catalogue(root)
    clear = np.full((224, 224), 4, np.uint8)
    left_cloud = clear.copy()
    left_cloud[:, :112] = 9  # cloud (high probability) over the western half
    top_cloud = clear.copy()
    top_cloud[:112, :] = 8  # cloud (medium probability) over the northern half
    es = {"s2:processing_baseline": "02.14"}
    # s2-main: one place, five acquisitions (real pixels of five different tiles)
    cat.add("s2-main", "S2A_32VNH_20200605_0_L2A", px["637U_59R_1_3"], crs, origin, "2020-06-05T10:40:21Z", 3.0,
            {**es, "s2:datatake_id": "DT-0605"})
    cat.add("s2-main", "S2B_32VNH_20200615_0_L2A", px["433D_629L_3_1"], crs, origin, "2020-06-15T10:40:21Z", 20.0,
            {**es, "s2:datatake_id": "DT-0615"}, scl=left_cloud)
    cat.add("s2-main", "S2A_32VNH_20200625_0_L2A", px["609U_541L_3_0"], crs, origin, "2020-06-25T10:40:21Z", 10.0,
            {"s2:processing_baseline": "04.00", "s2:datatake_id": "DT-0625"}, scl=top_cloud, dn_offset=1000)
    cat.add("s2-main", "S2B_32VNH_20200628_0_L2A", px["282D_485L_3_3"], crs, origin, "2020-06-28T10:40:21Z", 85.0,
            {**es, "s2:datatake_id": "DT-0628"})
    cat.add("s2-main", "S2A_32VNH_20200720_0_L2A", px["38D_378R_2_3"], crs, origin, "2020-07-20T10:40:21Z", 1.0,
            {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True,
             "s2:datatake_id": "DT-0720"})
    # s2-zones: the 2020-06-05 acquisition also delivered in the neighbouring zone (EPSG:32633),
    # and a later acquisition only in that zone
    a = px["637U_59R_1_3"]
    src_t = Affine(10, 0, origin[0], 0, -10, origin[1])
    w33, s33, e33, n33_ = transform_bounds(crs, "EPSG:32633", origin[0], origin[1] - 2240, origin[0] + 2240, origin[1])
    o33 = (_snap(w33) - 60, _snap(n33_) + 60)
    n33 = int((_snap(e33) + 120 - o33[0]) // 10)
    m33 = int((o33[1] - _snap(s33) + 120) // 10)
    warped = np.zeros((12, m33, n33), np.float32)
    reproject(a.astype(np.float32), warped, src_transform=src_t, src_crs=crs, src_nodata=0,
              dst_transform=Affine(10, 0, o33[0], 0, -10, o33[1]), dst_crs="EPSG:32633", dst_nodata=0,
              resampling=Resampling.bilinear)
    warped = warped[:, :224, :224]  # keep the COG shape; the ROI lies well inside
    cat.add("s2-zones", "S2A_32VNH_20200605_0_L2A", a, crs, origin, "2020-06-05T10:40:21Z", 3.0,
            {**es, "s2:datatake_id": "DT-0605"})
    cat.add("s2-zones", "S2A_33VUC_20200605_0_L2A", warped.astype(np.int32), "EPSG:32633", o33,
            "2020-06-05T10:40:23Z", 4.0, {**es, "s2:datatake_id": "DT-0605"})
    cat.add("s2-zones", "S2B_33VUC_20200608_0_L2A", warped.astype(np.int32), "EPSG:32633", o33,
            "2020-06-08T10:40:23Z", 4.0, {**es, "s2:datatake_id": "DT-0608"})
    cat.write()
    server = Server(root)
    facts = {"crs": crs, "origin": origin, "px": px, "warped": warped, "o33": o33}
    yield server, cat, facts
    server.stop()


def _provider(server: Server, collection: str = "s2-main", **kw) -> StacProvider:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("workers", 4)
    return StacProvider(url=server.base, collection=collection, **kw)


def _box(facts, col0: int, row0: int, ncols: int, nrows: int) -> BBox:
    """A box in the tile's own CRS covering pixels [row0, row0+nrows) × [col0, col0+ncols)."""
    x0, y0 = facts["origin"]
    return BBox(x0 + 10 * col0, y0 - 10 * (row0 + nrows), x0 + 10 * (col0 + ncols), y0 - 10 * row0, crs=facts["crs"])


def _fetch(provider, place, start, end, bands=TEN_M, frames=None, **sensor):
    s = SensorSpec(bands=tuple(bands), **sensor)
    return provider.fetch(provider.request(place, TemporalSpec(start, end), s, frames))


def _idx(b: str) -> int:
    return LAYOUT.index(b)


# ------------------------------------------------------------------------------ unit parts
def test_item_parsing_finds_cog_bands_by_key_or_eo_bands_and_ignores_the_rest():
    item = {
        "id": "x", "properties": {"datetime": "2022-03-01T10:00:00Z", "eo:cloud_cover": 5,
                                  "s2:processing_baseline": "04.00"},
        "geometry": None,
        "assets": {
            "red": {"href": "https://h/a/B04.tif", "type": "image/tiff; application=geotiff"},
            "red-jp2": {"href": "https://h/a/B04.jp2", "type": "image/jp2"},
            "B8A": {"href": "https://h/a/B8A.tif", "type": "image/tiff; application=geotiff"},
            "nir09": {"href": "https://h/a/B09.tif", "type": "image/tiff"},
            "visual": {"href": "https://h/a/TCI.tif", "type": "image/tiff"},
            "scl": {"href": "https://h/a/SCL.tif", "type": "image/tiff"},
            "band_x": {"href": "https://h/a/x.tif", "eo:bands": [{"name": "B11", "common_name": "swir16"}]},
        },
    }
    it = parse_item(item)
    assert it.hrefs == {"B04": "https://h/a/B04.tif", "B8A": "https://h/a/B8A.tif", "B09": "https://h/a/B09.tif",
                        "B11": "https://h/a/x.tif"}
    assert it.scl == "https://h/a/SCL.tif"
    assert it.boa_offset == 1000.0 and it.cloud_pct == 5.0 and it.date == date(2022, 3, 1)


@pytest.mark.parametrize("props, offset", [
    ({"s2:processing_baseline": "02.14"}, 0.0),
    ({"s2:processing_baseline": "04.00"}, 1000.0),
    ({"s2:processing_baseline": "05.10"}, 1000.0),
    ({"s2:processing_baseline": "05.10", "earthsearch:boa_offset_applied": True}, 0.0),
    ({"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}, 1000.0),
    ({}, 0.0),
])
def test_boa_offset_rule(props, offset):
    assert boa_offset_for(props) == offset


def test_redaction_removes_query_strings_tokens_and_bearer_credentials():
    text = ("HTTP 403 for /vsicurl/https://acct.blob.core.windows.net/c/B04.tif?st=2020&se=2099&sig=abc%2Fdef "
            "with Authorization: Bearer ya29.secretvalue and token=xyz")
    out = redact(text)
    for secret in ("abc%2Fdef", "ya29.secretvalue", "xyz", "se=2099"):
        assert secret not in out
    assert "https://acct.blob.core.windows.net/c/B04.tif" in out


def test_options_are_validated_and_registered_as_source_stac():
    with pytest.raises(SpecError, match="not a STAC API"):
        StacProvider(url="ftp://x")
    with pytest.raises(SpecError, match="retries"):
        StacProvider(retries=-1)
    p = open_provider("stac", url="planetary-computer")
    assert isinstance(p, StacProvider) and p.signing == "planetary-computer"
    assert p.url.startswith("https://planetarycomputer") and p.collection == "sentinel-2-l2a"
    assert StacProvider().url == "https://earth-search.aws.element84.com/v1"


# ------------------------------------------------------------------------------ against the server
def test_search_windowed_read_and_units(world):
    server, cat, facts = world
    p = _provider(server)
    place = _box(facts, 96, 64, 32, 32)  # 320 m × 320 m inside the 2240 m tile
    mark = server.mark()
    obs = _fetch(p, place, "2020-06-01", "2020-06-06", bands=TEN_M + ["B05", "B01"])
    log = server.since(mark)
    a = facts["px"]["637U_59R_1_3"]
    # 10 m bands on the 10 m grid: exactly the file's pixels
    for b in TEN_M:
        np.testing.assert_array_equal(obs.values([b])[0, 0], a[_idx(b), 64:96, 96:128])
    # the 20 m band lands where it belongs: every 10 m pixel lies between the values of its
    # 20 m pixel's 3 × 3 neighbourhood (bilinear), and matches the 2 × 2 means closely
    b05 = obs.values(["B05"])[0, 0]
    coarse = np.rint(_block_mean(a[_idx("B05")].astype(float), 2))
    fine = np.kron(coarse, np.ones((2, 2)))[64:96, 96:128]
    assert np.corrcoef(b05.ravel(), fine.ravel())[0, 1] > 0.9
    lo = np.minimum.reduce([np.roll(np.roll(coarse, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    hi = np.maximum.reduce([np.roll(np.roll(coarse, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    lo, hi = np.kron(lo, np.ones((2, 2)))[64:96, 96:128], np.kron(hi, np.ones((2, 2)))[64:96, 96:128]
    assert ((b05 >= lo - 0.5) & (b05 <= hi + 0.5)).all()
    assert obs.valid.all() and obs.meta["coverage"] == 1.0 and not obs.meta["partial"]
    assert obs.meta["items"] == ["S2A_32VNH_20200605_0_L2A"] and obs.meta["boa_offset_removed"] == {}
    assert obs.dates == [date(2020, 6, 5)]
    assert obs.grid.crs == "EPSG:32632" and obs.grid.transform.c == facts["origin"][0] + 960
    # windowed reads: every data request is a range request, and each COG is read in part only
    data = [r for r in log if r["path"].startswith("/data/")]
    assert data and all(r["range"] for r in data if r["method"] == "GET")
    assert not any(r["path"].endswith("_B06.tif") for r in data)  # bands not asked for are not touched
    for name in ("S2A_32VNH_20200605_0_L2A_B04.tif", "S2A_32VNH_20200605_0_L2A_B08.tif"):
        size = (cat.root / "data" / name).stat().st_size
        got = sum(r["bytes"] for r in data if r["path"] == "/data/" + name)
        assert 0 < got < 0.6 * size, (name, got, size)
        with rasterio.open(cat.root / "data" / name) as src:  # the tile block farthest from the place
            last = int(src.get_tag_item(f"BLOCK_OFFSET_{src.width // 128}_{src.height // 128}", "TIFF", bidx=1))
        spans = [tuple(int(v) for v in r["range"][6:].split("-")) for r in data if r["path"] == "/data/" + name and r["range"]]
        assert not any(lo_ <= last <= hi_ for lo_, hi_ in spans)


def test_median_and_mosaic_with_scl_cloud_masks_cloud_filter_and_boa_offset(world):
    server, cat, facts = world
    p = _provider(server)
    place = _box(facts, 96, 96, 32, 32)  # straddles both cloud edges (row 112, column 112)
    px = facts["px"]
    a = px["637U_59R_1_3"][:, 96:128, 96:128].astype(np.float32)
    b = px["433D_629L_3_1"][:, 96:128, 96:128].astype(np.float32)
    c = px["609U_541L_3_0"][:, 96:128, 96:128].astype(np.float32)  # DN + 1000 on the server
    rows, cols = np.mgrid[96:128, 96:128]
    b_ok, c_ok = cols >= 112, rows >= 112
    med = _fetch(p, place, "2020-06-01", "2020-07-01", cloudy_pct=30)
    assert med.meta["items"] == ["S2A_32VNH_20200605_0_L2A", "S2B_32VNH_20200615_0_L2A", "S2A_32VNH_20200625_0_L2A"]
    assert med.meta["boa_offset_removed"] == {"S2A_32VNH_20200625_0_L2A": 1000.0}
    assert med.meta["cloud_mask"] == "SCL" and med.dates == [date(2020, 6, 15)]  # the median of 05, 15, 25
    for j, band in enumerate(TEN_M):
        k = _idx(band)
        stack = np.stack([a[k], np.where(b_ok, b[k], np.nan), np.where(c_ok, c[k], np.nan)])
        np.testing.assert_allclose(med.values()[0, j], np.nanmedian(stack, axis=0), rtol=0, atol=1e-3)
    mos = _fetch(p, place, "2020-06-01", "2020-07-01", cloudy_pct=30, composite="mosaic")
    for j, band in enumerate(TEN_M):
        k = _idx(band)
        expect = np.where(c_ok, c[k], np.where(b_ok, b[k], a[k]))
        np.testing.assert_array_equal(mos.values()[0, j], expect)
    # a higher cloud limit lets the cloudy 2020-06-28 item in
    loose = _fetch(p, place, "2020-06-01", "2020-07-01", cloudy_pct=90)
    assert "S2B_32VNH_20200628_0_L2A" in loose.meta["items"]


def test_offset_already_applied_by_the_catalogue_is_not_removed_again(world):
    server, cat, facts = world
    obs = _fetch(_provider(server), _box(facts, 0, 0, 16, 16), "2020-07-01", "2020-08-01")
    assert obs.meta["boa_offset_removed"] == {}
    np.testing.assert_array_equal(obs.values()[0, 2], facts["px"]["38D_378R_2_3"][_idx("B04"), :16, :16])


def test_items_from_two_utm_zones_land_on_one_grid(world):
    server, cat, facts = world
    p = _provider(server, collection="s2-zones")
    place = _box(facts, 80, 80, 48, 40)
    a = facts["px"]["637U_59R_1_3"][:, 80:120, 80:128].astype(np.float32)
    obs = _fetch(p, place, "2020-06-01", "2020-06-11", frames=FrameSpec.bins(2))
    # bin 1: the zone-32 and zone-33 tiles of one datatake form one scene; the least cloudy
    # (zone 32, no resampling) fills every pixel
    assert obs.meta["scenes"][0] == ["S2A_32VNH_20200605_0_L2A", "S2A_33VUC_20200605_0_L2A"]
    np.testing.assert_array_equal(obs.values()[0, 2], a[_idx("B04")])
    # bin 2: only the zone-33 tile, warped onto the zone-32 grid: equal to rasterio's own
    # reprojection of that tile's pixels, and close to the original zone-32 pixels
    back = obs.values()[1]
    o33 = facts["o33"]
    for j, band in enumerate(TEN_M):
        expect = np.full((1, obs.grid.height, obs.grid.width), np.nan, np.float32)
        reproject(facts["warped"][_idx(band)].astype(np.int32)[None].astype(np.float32), expect,
                  src_transform=Affine(10, 0, o33[0], 0, -10, o33[1]), src_crs="EPSG:32633", src_nodata=0,
                  dst_transform=obs.grid.transform, dst_crs=obs.grid.crs, resampling=Resampling.bilinear)
        np.testing.assert_allclose(back[j], expect[0], rtol=1e-4, atol=0.5)
        assert np.corrcoef(back[j].ravel(), a[_idx(band)].ravel())[0, 1] > 0.8
    assert obs.valid.all() and obs.meta["scenes"][1] == ["S2B_33VUC_20200608_0_L2A"]


def test_a_place_written_in_another_zones_crs_is_read_on_the_items_lattice(world):
    server, cat, facts = world
    x0, y0 = facts["origin"]
    west, south, east, north = transform_bounds(facts["crs"], "EPSG:32633", x0 + 800, y0 - 1400, x0 + 1400, y0 - 800)
    place = BBox(west, south, east, north, crs="EPSG:32633")
    obs = _fetch(_provider(server), place, "2020-06-01", "2020-06-06", bands=["B04"])
    # the place's own CRS does not choose the grid: the items' CRS and pixel corners do
    assert obs.grid.crs == facts["crs"] and obs.meta["grid"]["crs"] == facts["crs"]
    assert "S2A_32VNH_20200605_0_L2A" in obs.meta["grid"]["basis"]
    col = (obs.grid.transform.c - x0) / 10
    row = (y0 - obs.grid.transform.f) / 10
    assert col == round(col) and row == round(row)
    r, c = int(round(row)), int(round(col))
    np.testing.assert_array_equal(
        obs.values()[0, 0], facts["px"]["637U_59R_1_3"][_idx("B04"), r : r + obs.grid.height, c : c + obs.grid.width]
    )


def test_monthly_frames_carry_dates_and_follow_the_empty_policy(world):
    server, cat, facts = world
    p = _provider(server)
    place = _box(facts, 120, 120, 8, 8)  # clear in every item
    obs = _fetch(p, place, "2020-05-01", "2020-08-01", frames=FrameSpec.by_month("fill"), fill_value=-1)
    # May has no item (its midpoint); June: the median of 06-05, 06-15, 06-25; July: its one item
    assert obs.dates == [date(2020, 5, 16), date(2020, 6, 15), date(2020, 7, 20)]
    assert obs.months.tolist() == [4, 5, 6] and obs.day_of_year.tolist() == [137, 167, 202]
    assert obs.valid[0].sum() == 0 and (obs.values()[0] == -1).all()
    assert [f["status"] for f in obs.meta["frames"]] == ["filled", "ok", "ok"]
    assert obs.meta["empty_frames"] == "fill"
    px = facts["px"]
    june = np.median(np.stack([px[n][_idx("B02"), 120:128, 120:128] for n in
                               ("637U_59R_1_3", "433D_629L_3_1", "609U_541L_3_0")]), axis=0)
    np.testing.assert_allclose(obs.values()[1, 0], june, atol=1e-3)
    np.testing.assert_array_equal(obs.values()[2, 0], px["38D_378R_2_3"][_idx("B02"), 120:128, 120:128])
    skip = _fetch(p, place, "2020-05-01", "2020-08-01", frames=FrameSpec.by_month("skip"))
    assert skip.dates == [date(2020, 6, 15), date(2020, 7, 20)]
    with pytest.raises(ProviderError, match="2020-05-01 to 2020-06-01"):
        _fetch(p, place, "2020-05-01", "2020-08-01", frames=FrameSpec.by_month("error"))


def test_empty_search_names_the_window_and_the_cloud_limit(world):
    server, cat, facts = world
    p = _provider(server)
    with pytest.raises(ProviderError, match=r"between 2019-01-01 and 2020-01-01 \(end excluded\).*≤ 30%"):
        _fetch(p, _box(facts, 0, 0, 8, 8), "2019-01-01", "2020-01-01")
    # only the 85 % cloudy item in the window
    with pytest.raises(ProviderError, match=r"2020-06-27 and 2020-06-30.*≤ 20%"):
        _fetch(p, _box(facts, 0, 0, 8, 8), "2020-06-27", "2020-06-30", cloudy_pct=20)
    # a place far away from every item
    with pytest.raises(ProviderError, match="no s2-main items"):
        _fetch(p, PointBuffer(12.5, 41.9, 100), "2020-06-01", "2020-07-01")


def test_missing_band_asset_is_a_provider_error_naming_the_band(world):
    server, cat, facts = world
    with pytest.raises(ProviderError, match="no asset for band B10"):
        _fetch(_provider(server), _box(facts, 0, 0, 8, 8), "2020-06-01", "2020-06-06", bands=["B04", "B10"])


def test_transient_failures_are_retried(world):
    server, cat, facts = world
    p = _provider(server, retries=3)
    server.fault("/search", 500, 2)
    server.fault("/data/S2A_32VNH_20200605_0_L2A_B03.tif", 429, 2)
    server.fault("/data/S2A_32VNH_20200605_0_L2A_B08.tif", 503, 3)
    mark = server.mark()
    obs = _fetch(p, _box(facts, 10, 10, 16, 16), "2020-06-01", "2020-06-06")
    log = server.since(mark)
    assert [r["status"] for r in log if r["path"] == "/search"] == [500, 500, 200]
    for band, status in (("B03", 429), ("B08", 503)):
        seen = [r["status"] for r in log if r["path"].endswith(f"_{band}.tif")]
        assert seen.count(status) == (2 if band == "B03" else 3) and seen[-1] in (200, 206)
    # 2 search retries, 2 for B03 and 3 for B08 (one request per attempt: the range reader reads
    # the header without a size probe; GDAL may spend two requests per attempt, so fewer retries)
    assert 5 <= obs.meta["http_retries"] <= 2 + 2 + 3
    np.testing.assert_array_equal(obs.values()[0, 3], facts["px"]["637U_59R_1_3"][_idx("B08"), 10:26, 10:26])


def test_retries_are_bounded_and_the_error_says_so(world):
    server, cat, facts = world
    p = _provider(server, retries=2)
    server.fault("/search", 503, 3)
    mark = server.mark()
    t0 = time.time()
    with pytest.raises(ProviderError, match="failed .*HTTP 503.* after 3 attempts"):
        _fetch(p, _box(facts, 0, 0, 8, 8), "2020-06-01", "2020-06-06")
    assert time.time() - t0 < 5
    assert [r["status"] for r in server.since(mark) if r["path"] == "/search"] == [503, 503, 503]
    # an asset that keeps failing: a ProviderError naming the band and item, after 3 attempts
    server.fault("/data/S2A_32VNH_20200605_0_L2A_B02.tif", 500, 100)
    mark = server.mark()
    try:
        with pytest.raises(ProviderError, match="band B02 of item S2A_32VNH_20200605_0_L2A.*3 attempts"):
            _fetch(p, _box(facts, 0, 0, 8, 8), "2020-06-01", "2020-06-06")
    finally:
        server.fault(clear=True)
    failed = [r for r in server.since(mark) if r["path"].endswith("_B02.tif")]
    assert 3 <= len(failed) <= 6 and all(r["status"] == 500 for r in failed)  # 3 attempts, then it gave up


@pytest.fixture(scope="module")
def signed_server(world):
    """A second server over the same files that refuses data requests without the SAS signature."""
    server = Server(world[1].root, sas_secret=SAS_SECRET, name="signed")
    yield server
    server.stop()


def test_planetary_computer_signing_and_secret_hygiene(world, signed_server, caplog):
    _, cat, facts = world
    server = signed_server
    place = _box(facts, 30, 30, 16, 16)
    caplog.set_level(logging.DEBUG)
    p = _provider(server, signing="planetary-computer", sas_url=server.base + "/sas")
    mark = server.mark()
    obs = _fetch(p, place, "2020-06-01", "2020-06-06")
    data = [r for r in server.since(mark) if r["path"].startswith("/data/")]
    assert data and all(f"sig={SAS_SECRET}" in r["query"] for r in data)
    np.testing.assert_array_equal(obs.values()[0, 0], facts["px"]["637U_59R_1_3"][_idx("B02"), 30:46, 30:46])
    assert SAS_SECRET not in json.dumps(obs.meta, default=str) and SAS_SECRET not in json.dumps(p.describe())
    # an asset refused (expired token, say): the error names the band, never the signed URL
    # (another place: the first one's tiles are in the open COGs' block cache, no request needed)
    server.fault("/data/S2A_32VNH_20200605_0_L2A_B03.tif", 403, 100)
    mark = server.mark()
    try:
        with pytest.raises(ProviderError) as err:
            _fetch(p, _box(facts, 150, 150, 16, 16), "2020-06-01", "2020-06-06")
    finally:
        server.fault(clear=True)
    assert "band B03" in str(err.value) and SAS_SECRET not in str(err.value)
    # the refusal made the provider drop its cached token and fetch a fresh one, once
    assert sum(r["path"].startswith("/sas/token/") for r in server.since(mark)) == 1
    # without signing the server refuses the data
    with pytest.raises(ProviderError, match="403") as err:
        _fetch(_provider(server), place, "2020-06-01", "2020-06-06")
    assert SAS_SECRET not in caplog.text


def test_the_range_reader_and_gdal_give_the_same_observation(world):
    """reader='auto' (eoembed's range reader for COGs on the grid's lattice, GDAL for the 20 m
    band it must resample) and reader='gdal' give identical pixels, validity and metadata."""
    server, _, facts = world
    bands = [*TEN_M, "B05"]
    for place in (_box(facts, 10, 10, 16, 16), _box(facts, facts["px"]["637U_59R_1_3"].shape[2] - 8, 3, 20, 12)):
        auto = _fetch(_provider(server), place, "2020-06-01", "2020-06-30", bands=bands)
        gdal = _fetch(_provider(server, reader="gdal"), place, "2020-06-01", "2020-06-30", bands=bands)
        np.testing.assert_array_equal(auto.values(), gdal.values())
        np.testing.assert_array_equal(auto.valid, gdal.valid)
        assert auto.grid == gdal.grid and auto.dates == gdal.dates
        assert auto.meta["coverage"] == gdal.meta["coverage"]
    with pytest.raises(SpecError, match="reader="):
        _provider(server, reader="curl")
