"""Same ground, same grid, same embedding: from every CRS and from local files or STAC.

Real Sentinel-2 L2A tiles (``../shared/data/s2_l2a_tiles``) are written as one COG per band at
origins that are not multiples of 10 m; the same COGs are read by the local provider and, through
the loopback STAC API (``servers/stac_server.py``, its own process), by the STAC provider.
Places are written in seven CRSs. Checked by coordinates and by embedding equality (rcf and the
real Galileo nano weights).
"""

from __future__ import annotations

import dataclasses
import warnings
from datetime import date

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from eoembed.embedders.registry import build_embedder
from eoembed.grid import roi_grid
from eoembed.providers.local import LocalProvider
from eoembed.providers.stac import StacProvider
from eoembed.specs import FrameSpec, Geometry, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject, transform_bounds
from test_provider_stac import Server

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")  # tile order
CRSS = ["EPSG:32632", "EPSG:4326", "EPSG:3857", "EPSG:32633", "EPSG:3035", "EPSG:25832", "EPSG:2154"]
JUNE = TemporalSpec("2020-06-01", "2020-06-30")
POOLED = OutputSpec.pooled()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _write_cogs(folder, scene: str, pixels: np.ndarray, crs: str, transform: Affine) -> dict[str, str]:
    """One COG per band (uint16, nodata 0); returns band → file name."""
    names = {}
    for band, arr in zip(BANDS, pixels):
        name = f"{scene}_{band}.tif"
        profile = dict(driver="COG", width=arr.shape[1], height=arr.shape[0], count=1, dtype="uint16", crs=crs,
                       transform=transform, blocksize=128, compress="deflate", nodata=0)
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(np.clip(arr, 0, 65535).astype("uint16")[None])
        names[band] = name
    return names


def _item(item_id: str, when: str, crs: str, transform: Affine, shape: tuple[int, int], files: dict[str, str],
          proj: bool) -> dict:
    h, w = shape
    west, south, east, north = transform_bounds(crs, "EPSG:4326", transform.c, transform.f + transform.e * h,
                                                transform.c + transform.a * w, transform.f, densify_pts=21)
    assets = {}
    for band, name in files.items():
        asset = {"href": "{base}/data/" + name, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                 "roles": ["data"], "eo:bands": [{"name": band}]}
        if proj:
            asset.update({"proj:shape": [h, w], "proj:transform": list(transform)[:6]})
        assets[band] = asset
    props = {"datetime": when, "eo:cloud_cover": 1.0, "platform": "sentinel-2a", "s2:datatake_id": item_id,
             "s2:processing_baseline": "02.14"}
    if proj:
        props["proj:epsg"] = int(crs.split(":")[1])
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "s2",
            "bbox": [west, south, east, north],
            "geometry": {"type": "Polygon",
                         "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]},
            "properties": props, "assets": assets, "links": []}


@pytest.fixture(scope="module")
def world(real_tiles, tmp_path_factory):
    """COGs of two real tiles (one near a UTM zone border, also warped into the next zone),
    a local provider and a STAC provider over the same files."""
    import json

    tiles = {p.stem: p for p in real_tiles}
    if not {"637U_59R_1_3", "609U_541L_3_0"} <= set(tiles):
        pytest.skip("the tiles 637U_59R_1_3 and 609U_541L_3_0 are not in ../shared/data/s2_l2a_tiles")
    root = tmp_path_factory.mktemp("same_ground")
    data = root / "data"
    data.mkdir()
    facts = {}
    items = []
    with rasterio.open(tiles["637U_59R_1_3"]) as src:  # EPSG:32632, origin 549892.697, 6344077.614
        px, crs, t = src.read().astype(np.float32), src.crs.to_string(), src.transform
    assert (t.c % 10, t.f % 10) != (0, 0)
    files = _write_cogs(data, "S2A_T32VNH_20200605", px, crs, t)
    items.append(_item("S2A_T32VNH_20200605", "2020-06-05T10:40:21Z", crs, t, px.shape[1:], files, proj=True))
    facts["main"] = {"px": px, "crs": crs, "transform": t}
    # the border tile: EPSG:32616 imagery that lies east of 84° W (in zone 17) ...
    with rasterio.open(tiles["609U_541L_3_0"]) as src:
        bpx, bcrs, bt = src.read().astype(np.float32), src.crs.to_string(), src.transform
    files = _write_cogs(data, "S2A_T16UGE_20200111", bpx, bcrs, bt)
    items.append(_item("S2A_T16UGE_20200111", "2020-01-11T16:40:21Z", bcrs, bt, bpx.shape[1:], files, proj=False))
    # ... and the same ground delivered in EPSG:32617 ten days later, on a lattice at an odd origin
    w17, s17, e17, n17 = transform_bounds(bcrs, "EPSG:32617", *rasterio.transform.array_bounds(224, 224, bt))
    t17 = Affine(10, 0, np.floor(w17 / 10) * 10 - 26.7, 0, -10, np.ceil(n17 / 10) * 10 + 33.1)
    warped = np.zeros((12, 240, 240), np.float32)
    reproject(bpx, warped, src_transform=bt, src_crs=bcrs, src_nodata=0, dst_transform=t17, dst_crs="EPSG:32617",
              dst_nodata=0, resampling=Resampling.bilinear)
    files = _write_cogs(data, "S2A_T17ULA_20200121", np.rint(warped), "EPSG:32617", t17)
    items.append(_item("S2A_T17ULA_20200121", "2020-01-21T16:40:21Z", "EPSG:32617", t17, (240, 240), files,
                       proj=False))
    facts["border"] = {"px": bpx, "crs": bcrs, "transform": bt, "t17": t17}
    collection = {"type": "Collection", "stac_version": "1.0.0", "id": "s2", "description": "test",
                  "license": "CC-BY-SA-4.0", "links": [],
                  "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}
    (root / "catalog.json").write_text(json.dumps({"collections": [collection], "items": items}))
    server = Server(root, name="same-ground")
    local = LocalProvider(data)
    stac = StacProvider(url=server.base, collection="s2", backoff=0.01, workers=4)
    yield local, stac, facts
    server.stop()


def _point(crs: str, lon: float, lat: float, buffer_m: float = 320) -> PointBuffer:
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    return PointBuffer(x, y, buffer_m, crs=crs)


def _lonlat(f: dict, col: float, row: float, crs: str | None = None, t: Affine | None = None) -> tuple[float, float]:
    x, y = (t or f["transform"]) * (col, row)
    return Transformer.from_crs(crs or f["crs"], "EPSG:4326", always_xy=True).transform(x, y)


@pytest.fixture(scope="module")
def models(shared_dir):
    nano = shared_dir / "weights" / "galileo_nano"
    out = {"rcf": build_embedder("rcf")}
    if (nano / "encoder.pt").is_file():
        out["galileo-nano"] = build_embedder("galileo", weights=str(nano))
    return out


def test_seven_crss_one_grid_one_embedding_local_and_stac(world, models):
    local, stac, facts = world
    f = facts["main"]
    lon, lat = _lonlat(f, 101.3, 87.8)
    vectors: dict[str, list[np.ndarray]] = {m: [] for m in models}
    grids = []
    for crs in CRSS:
        place = _point(crs, lon, lat)
        for provider in (local, stac):
            for name, emb in models.items():
                obs = provider.fetch(provider.request(place, JUNE, emb.sensor_for(SensorSpec())))
                grids.append(obs.grid)
                assert obs.meta["grid"]["crs"] == "EPSG:32632"
                assert "S2A_T32VNH_20200605" in obs.meta["grid"]["basis"]
                vectors[name].append(emb.embed([obs], POOLED)[0].to_numpy())
    # one grid: the tile's CRS and lattice, 64 × 64 around the point, for every CRS and both sources
    g = grids[0]
    assert all(x == g for x in grids)
    assert g.crs == "EPSG:32632" and (g.width, g.height) == (64, 64)
    col, row = ~f["transform"] * (g.transform.c, g.transform.f)
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
    assert abs(round(col) + 32 - 101.3) <= 0.5 and abs(round(row) + 32 - 87.8) <= 0.5
    for name, vecs in vectors.items():
        cos = [_cos(vecs[0], v) for v in vecs]
        assert min(cos) >= 0.9999, (name, cos)


def test_stac_reads_the_items_lattice_without_resampling(world):
    local, stac, facts = world
    f = facts["main"]
    lon, lat = _lonlat(f, 60.5, 150.5)
    place = _point("EPSG:3857", lon, lat, 200)
    obs = stac.fetch(stac.request(place, JUNE, SensorSpec(bands=("B04", "B8A"))))
    col, row = (round(v) for v in ~f["transform"] * (obs.grid.transform.c, obs.grid.transform.f))
    for j, band in enumerate(("B04", "B8A")):
        want = f["px"][BANDS.index(band), row : row + 40, col : col + 40]
        np.testing.assert_array_equal(obs.values()[0, j], want)


@pytest.mark.parametrize(
    "window, crs",
    [(TemporalSpec("2020-01-01", "2020-01-16"), "EPSG:32616"),  # only the zone-16 tile: carried into it
     (TemporalSpec("2020-01-16", "2020-02-01"), "EPSG:32617"),  # only the zone-17 copy
     (TemporalSpec("2020-01-01", "2020-02-01"), "EPSG:32617")],  # both: the place's own zone
)
def test_across_a_zone_border_local_and_stac_choose_the_same_grid(world, models, window, crs):
    local, stac, facts = world
    f = facts["border"]
    lon, lat = _lonlat(f, 112.0, 112.0)
    assert lon > -84.0  # the place lies in zone 17, the tile's pixels in zone 16
    emb = models["rcf"]
    sensor = emb.sensor_for(SensorSpec())
    seen = []
    for place_crs in ("EPSG:4326", "EPSG:3857", "EPSG:32616", "EPSG:32617", "EPSG:3978"):
        place = _point(place_crs, lon, lat, 300)
        pair = [p.fetch(p.request(place, window, sensor)) for p in (local, stac)]
        assert pair[0].grid == pair[1].grid and pair[0].grid.crs == crs
        np.testing.assert_allclose(pair[0].values(), pair[1].values(), rtol=0, atol=1e-3)
        vecs = [emb.embed([o], POOLED)[0].to_numpy() for o in pair]
        assert _cos(*vecs) >= 0.9999
        seen.append(pair[0].grid)
    assert all(g == seen[0] for g in seen)
    t = f["transform"] if crs == "EPSG:32616" else f["t17"]
    col, row = ~t * (seen[0].transform.c, seen[0].transform.f)
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)


@pytest.mark.parametrize(
    "window, dates",
    [(TemporalSpec("2020-01-01", "2020-01-31"), [date(2020, 1, 11), date(2020, 1, 21)]),  # bin middles 01-08, 01-23
     (TemporalSpec("2020-01-05", "2020-02-28"), [date(2020, 1, 16)])],  # both scenes in a bin whose middle is 01-18
)
def test_frames_are_dated_by_their_scenes(world, window, dates):
    local, stac, facts = world
    place = _point("EPSG:4326", *_lonlat(facts["border"], 112.0, 112.0), 100)
    for p in (local, stac):
        obs = p.fetch(p.request(place, window, SensorSpec(bands=("B04",)), FrameSpec.bins(2)))
        assert obs.dates == dates
        done = [f for f in obs.meta["frames"] if f["status"] == "ok"]
        assert [f["date"] for f in done] == [d.isoformat() for d in dates]
        assert all(f["date_from"] == "median scene date" for f in done)


def test_warped_reads_of_polygons_raise_no_georeferencing_warning(world):
    # rasterio wrapped arrays handed to reproject in in-memory datasets that start without a
    # geotransform; with concurrent warps that printed NotGeoreferencedWarning (a race: the old
    # code failed this test in about one run of two to four)
    local, stac, facts = world
    lon, lat = _lonlat(facts["border"], 112.0, 112.0)
    window = TemporalSpec("2020-01-01", "2020-01-16")  # only the zone-16 tile
    reqs = {local: [], stac: []}
    for k in range(12):
        x, y = lon + 0.002 * (k % 4 - 1.5), lat + 0.002 * (k // 4 - 1)
        poly = Geometry(shapely.Polygon([(x - 0.003, y - 0.002), (x + 0.003, y - 0.003), (x, y + 0.002)]))
        for p in (local, stac):
            req = p.request(poly, window, SensorSpec(bands=("B04", "B08")))
            assert req.grid.crs == "EPSG:32616"
            # the same polygon on a grid in the next zone: every read is warped
            reqs[p].append(dataclasses.replace(req, grid=roi_grid(poly, 10, crs="EPSG:32617")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for p, batch in reqs.items():
            for obs in p.fetch_many(batch, workers=8):
                assert obs.valid.any() and obs.roi_mask.any() and not obs.roi_mask.all()
    seen = [f"{w.filename}:{w.lineno}" for w in caught if issubclass(w.category, NotGeoreferencedWarning)]
    assert not seen, seen
