"""Transient failures are told from permanent ones by cause, and retried at every stage.

The loopback STAC server (its own process) injects each kind of fault at a set rate: HTTP
429/500/503, connections reset, replies cut short, requests that time out. A batch export with
the default retries must embed ≥ 95 % of the places, a rerun the rest, and lose none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from eoembed import export_batch
from eoembed.errors import ProviderError
from eoembed.providers.stac import StacProvider
from eoembed.providers.transient import RemoteFailure, classify, probe
from eoembed.specs import PointBuffer, SensorSpec, TemporalSpec
from rasterio.errors import RasterioIOError
from stac_fixture import StacServer, build_catalogue, points

WINDOW = TemporalSpec("2022-06-01", "2022-07-01")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = build_catalogue(tmp_path_factory.mktemp("faults"))
    srv = StacServer(root)
    yield srv
    srv.stop()


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


def _http_error(status: int) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    return requests.HTTPError(f"{status} Server Error", response=resp)


@pytest.mark.parametrize("exc, cause, transient, status", [
    (RasterioIOError("HTTP response code: 503"), "http", True, 503),
    (RasterioIOError("HTTP response code: 404"), "http", False, 404),
    (_http_error(429), "http", True, 429),
    (_http_error(403), "http", False, 403),
    (RasterioIOError("CURL error: Operation timed out after 1002 milliseconds with 0 bytes received"),
     "timeout", True, None),
    (requests.ReadTimeout("read timed out"), "timeout", True, None),
    (RasterioIOError("CURL error: Empty reply from server"), "reset", True, None),
    (requests.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end closed connection'))"),
     "reset", True, None),
    (_chained(RasterioIOError("Read failed. See previous exception for details."),
              RasterioIOError("TIFFFillTile:Read error at row 0, col 0, tile 0; got 812 bytes, expected 8192")),
     "short", True, None),
    (json.JSONDecodeError("Unterminated string starting at", '{"a": "b', 6), "short", True, None),
    (RasterioIOError("'/vsicurl/http://h/x.tif' not recognized as being in a supported file format."),
     "not-raster", False, None),
    (RasterioIOError("x.tif: /vsicurl/http://h/x.tif:Cannot read TIFF header"), "not-raster", False, None),
    (ValueError("something else"), "other", False, None),
])
def test_failures_are_classified_by_cause(exc, cause, transient, status):
    f = classify(exc)
    assert (f.cause, f.transient, f.status) == (cause, transient, status)


def test_a_hidden_cause_is_found_by_probing_the_server(server):
    server.faults(clear=True)
    url = f"{server.base}/data/S2A_33TVM_20220610_L2A_B02.tif"
    assert probe(url, 5).cause == "short"  # a TIFF after all: the open was cut short
    server.faults(match="/data/", status=503, count=1)
    assert (probe(url, 5).status, probe(url, 5).cause) == (503, "short")
    server.faults(rate=1.0, kinds=["short"], match="/data/")
    assert (probe(url, 5).cause, probe(url, 5).transient) == ("short", True)  # 2 of 4 bytes: not "not a TIFF"
    server.faults(clear=True)
    f = probe(f"{server.base}/data/none.tif?sig=s3cr3t", 5)
    assert (f.status, f.transient) == (404, False) and "s3cr3t" not in f.url
    assert classify(RuntimeError("x").with_traceback(None)).cause == "other"
    assert classify(_chained(RuntimeError("x"), RemoteFailure(f))).status == 404


def test_a_permanent_failure_is_one_sentence_with_the_redacted_url_and_status_and_is_not_retried(server):
    server.faults(clear=True)
    p = StacProvider(url=server.base + "/?token=t0ps3cret", collection="s2", backoff=0.01, timeout=5)
    x, y = points(1)[0]
    server.faults(match="/data/S2A_33TVM_20220610_L2A_B03.tif", status=404, count=100)
    try:
        with pytest.raises(ProviderError) as err:
            p.fetch(p.request(PointBuffer(x, y, 60, crs="EPSG:32633"), WINDOW, SensorSpec(bands=("B02", "B03"))))
    finally:
        stats = server.injected()
        server.faults(clear=True)
    msg = str(err.value)
    assert "HTTP 404" in msg and "/data/S2A_33TVM_20220610_L2A_B03.tif" in msg and "after" not in msg
    assert "\n" not in msg and "t0ps3cret" not in msg
    assert stats == {}  # counted faults are not rate faults


def test_a_permanent_item_failure_is_not_retried_by_the_pipeline(server, tmp_path):
    server.faults(clear=True)
    server.faults(match="/data/S2A_33TVM_20220610_L2A_B03.tif", status=404, count=100)
    try:
        ok, failed = _run(server, tmp_path, 2, retries=0)
    finally:
        server.faults(clear=True)
    assert (ok, failed) == (0, 2)
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    failed_records = [r for r in records if r.get("status") == "failed"]
    assert failed_records and all(r["attempts"]["fetch"] == 1 for r in failed_records), failed_records
    assert all("HTTP 404" in r["error"] for r in failed_records)


def _run(server: StacServer, out: Path, n: int, **opts) -> tuple[int, int]:
    places = {f"p{i}": PointBuffer(x, y, 60, crs="EPSG:32633") for i, (x, y) in enumerate(points(n))}
    s = export_batch(places, WINDOW, "rcf", out, source="stac",
                     source_options={"url": server.base, "collection": "s2", "backoff": 0.05, **opts})
    return s.ok, s.failed


@pytest.mark.slow
@pytest.mark.parametrize("kinds, n, opts", [
    (["429", "500", "503", "reset", "short"], 20, {}),
    (["timeout"], 6, {"timeout": 1}),
])
def test_export_survives_a_fifteen_percent_fault_rate(server, tmp_path, kinds, n, opts):
    server.faults(clear=True)
    server.faults(rate=0.15, kinds=kinds, match="/", delay=1.3, seed=11)
    try:
        ok, failed = _run(server, tmp_path, n, **opts)
        injected = server.injected()
        assert ok + failed == n and ok >= 0.95 * n, (ok, failed)
        ok2, failed2 = _run(server, tmp_path, n, **opts)  # the rerun completes, nothing lost
        assert ok + ok2 == n and failed2 == 0
    finally:
        server.faults(clear=True)
    assert sum(injected.values()) >= 10 and set(injected) <= set(kinds)
    table = pq.read_table(tmp_path / "rcf" / "pooled.parquet")
    assert sorted(table.column("id").to_pylist()) == sorted(f"p{i}" for i in range(n))


@pytest.mark.parametrize("what", ["collection", "url"])
def test_a_wrong_collection_or_dead_api_fails_once_before_any_place(server, tmp_path, what):
    server.faults(clear=True)
    opts = {"url": server.base, "collection": "s2-typo", "backoff": 0.01} if what == "collection" else \
        {"url": "http://127.0.0.1:9/stac?token=t0ps3cret", "collection": "s2", "backoff": 0.01}
    places = {f"p{i}": PointBuffer(x, y, 60, crs="EPSG:32633") for i, (x, y) in enumerate(points(5))}
    with pytest.raises(ProviderError) as err:
        export_batch(places, WINDOW, "rcf", tmp_path / "out", source="stac", source_options=opts)
    msg = str(err.value)
    assert ("no collection 's2-typo' (it has s2)" in msg if what == "collection"
            else "could not open the STAC API at http://127.0.0.1:9/stac?<redacted>" in msg), msg
    assert not (tmp_path / "out").exists()
