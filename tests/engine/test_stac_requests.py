"""Remote reads cost what the pixels cost: requests to the loopback STAC server, counted by kind.

One item over a real tile (13 single-band COGs, 128 px blocks; ``test_provider_stac.Catalogue``)
served by ``servers/stac_server.py`` in its own process. Sixteen places lie inside one block of
every asset; a batch over them must search once and read each COG's header and block once, not
once per place, and deliver the same pixels as a fresh provider fetching each place
on its own.
"""

from __future__ import annotations

import json
import urllib.request

import eoembed
import numpy as np
import pytest
import rasterio
from eoembed.export import load_export
from eoembed.specs import SensorSpec, TemporalSpec
from test_provider_stac import TEN_M, Catalogue, Server, _box, _provider, _snap

WINDOW = TemporalSpec("2020-06-01", "2020-07-01")
ASSETS = len(TEN_M) + 1  # the four 10 m bands and SCL


@pytest.fixture(scope="module")
def one_tile(real_tiles, tmp_path_factory):
    path = next(p for p in real_tiles if p.stem == "637U_59R_1_3")
    with rasterio.open(path) as src:
        px, crs, t = src.read().astype(np.int32), src.crs.to_string(), src.transform
    root = tmp_path_factory.mktemp("stac-requests")
    cat = Catalogue(root)
    origin = (_snap(t.c), _snap(t.f))
    cat.add("s2", "S2A_32VNH_20200605_0_L2A", px, crs, origin, "2020-06-05T10:40:21Z", 3.0,
            {"s2:processing_baseline": "02.14", "s2:datatake_id": "DT-0605"})
    cat.write()
    server = Server(root)
    yield server, {"crs": crs, "origin": origin}
    server.stop()


def _stats(server: Server) -> dict[str, int]:
    """Requests by kind since the last call (the server's own count, then reset)."""
    req = urllib.request.Request(server.base + "/_stats", method="POST", data=json.dumps({"reset": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _places(facts) -> dict[str, object]:
    """16 boxes of 8 × 8 px inside the first 128 px block of the 10 m COGs (one block of each asset)."""
    return {f"p{k:02d}": _box(facts, 8 + 14 * (k % 4), 8 + 14 * (k // 4), 8, 8) for k in range(16)}


@pytest.mark.parametrize("reader", ["auto", "gdal"])
def test_a_batch_searches_once_and_reads_each_cog_about_once(one_tile, reader) -> None:
    server, facts = one_tile
    places = _places(facts)
    sensor = SensorSpec(bands=tuple(TEN_M))
    prov = _provider(server, collection="s2", reader=reader)
    _stats(server)
    mark = server.mark()
    prov.prepare(list(places.values()), WINDOW, sensor)
    reqs = [prov.request(p, WINDOW, sensor) for p in places.values()]  # grids: from the same search
    got = prov.fetch_many(reqs, workers=4)
    batch = _stats(server)
    prov.close()
    assert batch.get("search") == 1  # one search for the 16 places, none of their own
    if reader == "auto":
        # the 10 m bands are on the grid's lattice: the range reader reads each COG's header once
        # (no size probe) and its one block once, shared by the 16 places; the 20 m SCL is
        # resampled, so GDAL reads it
        log = [r for r in server.since(mark) if r["path"].startswith("/data/")]
        for band in TEN_M:
            mine = [r for r in log if r["path"].endswith(f"_{band}.tif")]
            assert [r["method"] for r in mine] == ["GET", "GET"], band
            assert mine[0]["range"].startswith("bytes=0-") and not mine[1]["range"].startswith("bytes=0-")
    else:  # GDAL: each COG opened by at most a few concurrent readers, its block read by each once
        assert batch.get("tile_read", 0) <= 4 * ASSETS
    assert sum(batch.values()) <= len(places) * (ASSETS * 1 + 1)  # the issue's bound, per place
    # the same pixels as a fresh provider fetching each place alone, which costs a search and a
    # header read per place
    for req, obs in zip(reqs, got):
        alone = _provider(server, collection="s2")
        ref = alone.fetch(alone.request(req.spatial, WINDOW, sensor))
        assert ref.grid == obs.grid
        alone.close()
        np.testing.assert_array_equal(obs.values(), ref.values())
        np.testing.assert_array_equal(obs.valid, ref.valid)
        assert obs.meta["items"] == ref.meta["items"]
    one = _stats(server)
    assert one["search"] == len(places) and one["cog_header"] >= len(places) * ASSETS


def test_the_batch_export_asks_the_provider_to_prepare_each_chunk_once(one_tile, tmp_path) -> None:
    server, facts = one_tile
    places = _places(facts)
    prov = _provider(server, collection="s2")
    _stats(server)
    s = eoembed.export_batch(places, WINDOW, [("rcf", {"features": 16})], tmp_path / "o", source=prov,
                             backoff=0.01)
    counts = _stats(server)
    prov.close()
    assert (s.ok, s.failed) == (16, 0)
    assert counts.get("search") == 1
    assert list(load_export(tmp_path / "o")["models"]["rcf"]["pooled"]["ids"]) == list(places)


class _Ds:
    def __init__(self, url: str) -> None:
        self.url, self.closed = url, False

    def close(self) -> None:
        self.closed = True


def test_the_dataset_pool_lends_each_dataset_to_one_borrower_and_closes_failed_ones() -> None:
    from eoembed.providers.remote_datasets import PER_URL, DatasetPool

    opened: list[_Ds] = []
    pool = DatasetPool(lambda url: opened.append(_Ds(url)) or opened[-1], max_idle=6)
    with pool.borrow("a") as (a1, reused):
        assert not reused
        with pool.borrow("a") as (a2, reused2):  # a second borrower at once gets its own
            assert a2 is not a1 and not reused2
    with pool.borrow("a") as (again, reused):
        assert reused and again in (a1, a2)
    with pytest.raises(OSError), pool.borrow("a") as (bad, _):
        raise OSError("read failed")
    assert bad.closed  # a dataset whose read failed is not lent again
    with pool.borrow("a") as (nxt, reused):
        assert reused and nxt is not bad
    with pool.borrow("a", fresh=True) as (new, reused):
        assert not reused and new is opened[-1]
    # at most PER_URL idle per URL and max_idle in all, the least recently used closed first
    held = [pool.borrow("b") for _ in range(PER_URL + 2)]
    lent = [h.__enter__()[0] for h in held]
    for h in held:
        h.__exit__(None, None, None)
    assert sum(d.closed for d in lent) == 2
    assert sum(not d.closed for d in opened) == 6
    pool.discard(lambda url: url == "b")
    assert all(d.closed for d in lent)
    pool.close()
    assert all(d.closed for d in opened)
