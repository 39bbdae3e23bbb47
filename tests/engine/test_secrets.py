"""Secrets stay secret: planted in a STAC URL, in the environment and in asset keys, then every
output file of an export (GeoParquet, NPZ, GeoTIFF tags, NetCDF, manifest, run.json) and a
DEBUG log of every library are scanned for them."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import rasterio
import xarray as xr
from eoembed import export_batch
from eoembed.providers.redact import redact, scrub
from eoembed.specs import PointBuffer, TemporalSpec
from stac_fixture import StacServer, build_catalogue, points

SECRETS = {
    "sig": "SIGs3cr3tVALUE", "se": "2099-12-31T00SE", "token": "TOKs3cr3tVALUE", "key": "KEYs3cr3tVALUE",
    "bearer": "BEARERs3cr3tVALUE", "env": "ENVs3cr3tVALUE", "userinfo": "PWs3cr3tVALUE",
}
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


def test_one_rule_covers_queries_tokens_keys_and_secret_fields():
    text = (f"GET https://u:{SECRETS['userinfo']}@h/a.tif?sig={SECRETS['sig']}&se={SECRETS['se']} "
            f"Authorization: Bearer {SECRETS['bearer']} key={SECRETS['key']} {PEM}")
    out = redact(text)
    assert not [s for s in (*SECRETS.values(), "MIIEvQIBADAN") if s in out], out
    assert "https://<redacted>@h/a.tif?<redacted>" in out
    tree = {"url": f"http://h/?token={SECRETS['token']}", "nested": [{"api_key": "k1", "password": "p",
            "client_secret": "c", "note": PEM}], "count": 3, "bands": ["B02"]}
    clean = json.dumps(scrub(tree))
    assert not any(s in clean for s in (SECRETS["token"], '"k1"', '"p"', '"c"', "MIIEvQ")), clean
    assert scrub(tree)["count"] == 3 and scrub(tree)["bands"] == ["B02"]


def _scan(path: Path) -> str:
    """Everything a file holds, as text: raw bytes plus what its format hides (zip, parquet, tags)."""
    parts = [path.read_bytes().decode("latin-1")]
    if path.suffix == ".npz":
        with zipfile.ZipFile(path) as z:
            parts += [z.read(n).decode("latin-1") for n in z.namelist()]
    elif path.suffix == ".parquet":
        t = pq.read_table(path)
        parts += [json.dumps(t.to_pylist(), default=str), str(t.schema.metadata)]
    elif path.suffix == ".tif":
        with rasterio.open(path) as src:
            parts += [json.dumps(src.tags()), json.dumps(src.descriptions)]
    elif path.suffix == ".nc":
        with xr.open_dataset(path) as ds:
            parts += [json.dumps(ds.attrs, default=str), json.dumps(ds["meta"].values.tolist(), default=str)]
    return "\n".join(parts)


@pytest.mark.slow
def test_no_planted_secret_reaches_any_output_file_or_log(tmp_path, monkeypatch):
    root = build_catalogue(tmp_path / "cat")
    srv = StacServer(root)
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["env"])
    monkeypatch.setenv("GDAL_HTTP_HEADERS", f"Authorization: Bearer {SECRETS['bearer']}")
    host = srv.base.replace("http://", f"http://user:{SECRETS['userinfo']}@")
    url = f"{host}/?se={SECRETS['se']}&sig={SECRETS['sig']}&token={SECRETS['token']}&key={SECRETS['key']}"
    places = {f"p{i}": PointBuffer(x, y, 60, crs="EPSG:32633") for i, (x, y) in enumerate(points(4))}
    try:
        # a permanent failure for one place puts an asset URL into an error message and the manifest
        # (a 404 is permanent: the open and the probe that finds its cause, then nobody asks again)
        srv.faults(match="/data/S2A_33TVM_20220610_L2A_B05.tif", status=404, count=2)
        s = export_batch(places, TemporalSpec("2022-06-01", "2022-07-01"), "rcf", tmp_path / "out",
                         outputs="both", source="stac", workers=1,
                         source_options={"url": url, "collection": "s2", "backoff": 0.01, "workers": 1})
        logging.getLogger("eoembed.test").warning("the provider reported %s", s.failures)
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
        handler.close()
        srv.stop()
    assert s.ok >= 4 and s.failed >= 1, s  # both outputs of 3 places, and one place's failure
    assert any("404" in f["error"] and "/data/" in f["error"] for f in s.failures)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".parquet", ".npz", ".tif", ".nc", ".jsonl", ".json"} <= kinds, kinds
    log_text = log_file.read_text()
    assert "urllib3" in log_text and "127.0.0.1" in log_text  # the libraries did log their requests
    for f in [*files, log_file]:
        text = _scan(f)
        leaked = [name for name, secret in SECRETS.items() if secret in text and name != "env" or
                  name == "env" and secret in text]
        assert not leaked, f"{f}: {leaked}"


def test_a_logger_created_after_import_is_redacted_too(tmp_path):
    import eoembed.providers  # noqa: F401 - installs the redaction

    log_file = tmp_path / "late.log"
    handler = logging.FileHandler(log_file)
    late = logging.getLogger("a_library_imported_later.http")
    late.addHandler(handler)
    late.setLevel(logging.INFO)
    try:
        late.info("GET %s", f"https://h/x.tif?sig={SECRETS['sig']}")
        try:
            raise RuntimeError(f"token={SECRETS['token']}")
        except RuntimeError:
            late.exception("failed with Authorization: Bearer %s", SECRETS["bearer"])
    finally:
        late.removeHandler(handler)
        handler.close()
    text = log_file.read_text()
    assert "https://h/x.tif?<redacted>" in text and "RuntimeError" in text
    assert not [s for s in (SECRETS["sig"], SECRETS["token"], SECRETS["bearer"]) if s in text], text
