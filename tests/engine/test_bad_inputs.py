"""A hostile day at the command line: every bad input is exit 2, one line, no traceback, no leftovers.

Each case runs ``eoembed embed`` and/or ``eoembed export`` in this process (stderr captured at
the file-descriptor level, so library prints and log lines count too) and asserts: exit code 2,
exactly one line on stderr that starts ``eoembed: error:`` and names the problem, no traceback,
no warning shown to the user, and no output folder left behind when the command created it.
Run-level errors of ``export`` (weights missing, corrupt or unreachable, bands the imagery lacks,
a window without imagery) fail before any item: no manifest, no run.json.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from eoembed.cli import main
from eoembed.export import safe_name
from eoembed.providers.local import LocalProvider
from pyproj import Transformer

UTM33 = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)
FOUR = ["B02", "B03", "B04", "B08"]


def _lonlat(x: float, y: float) -> list[float]:
    return list(Transformer.from_crs(UTM33, 4326, always_xy=True).transform(x, y))


def _collection(feats: list[dict], crs: dict | None = None) -> str:
    doc: dict = {"type": "FeatureCollection", "features": feats}
    if crs is not None:
        doc["crs"] = crs
    return json.dumps(doc)


def _point(name: str, x: float, y: float) -> dict:
    return {"type": "Feature", "properties": {"name": name}, "geometry": {"type": "Point", "coordinates": _lonlat(x, y)}}


@pytest.fixture(scope="module")
def w(tmp_path_factory, tiff_writer):
    """Imagery folders (good 10-band, 4-band, one with an unknown band name), vector files, bad weights."""
    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    ten = rng.uniform(500, 3500, (10, 60, 60)).astype(np.int16)
    tiff_writer(root / "imagery" / "S2_20220610.tif", ten, crs=UTM33, transform=ORIGIN)
    tiff_writer(root / "four" / "S2_20220610.tif", ten[:4], crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    tiff_writer(root / "nirx" / "S2_20220610.tif", ten[:4], crs=UTM33, transform=ORIGIN,
                descriptions=["B04", "B03", "B02", "NIRX"])
    (root / "garbled").mkdir()
    (root / "garbled" / "S2_20220611.tif").write_bytes(b"II*\x00" + bytes(200))
    tiff_writer(root / "garbled" / "S2_20220610.tif", ten, crs=UTM33,
                transform=Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_000_000.0))  # 100 km east
    pts = [_point("a", 500_150, 4_999_850), _point("b", 500_300, 4_999_700)]
    ring = [_lonlat(x, y) for x, y in [(500_200, 4_999_600), (500_450, 4_999_620), (500_300, 4_999_800),
                                        (500_200, 4_999_600)]]
    poly = {"type": "Feature", "properties": {"name": "field"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    (root / "places.geojson").write_text(_collection([*pts, poly]))
    (root / "dupes.geojson").write_text(_collection([_point("a", 500_150, 4_999_850), _point("a", 500_300, 4_999_700)]))
    utm = {"type": "Feature", "properties": {"name": "u"}, "geometry": {"type": "Point", "coordinates": [500_150, 4_999_850]}}
    (root / "badcrs.geojson").write_text(_collection([utm], {"type": "name", "properties": {"name": "EPSG:999999"}}))
    (root / "utmcrs.geojson").write_text(
        _collection([utm], {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}))
    (root / "corrupt.pt").write_bytes(bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    (root / "a-file").write_text("not a folder")
    return root


def _args(w: Path, command: str, out: Path, extra: list[str]) -> list[str]:
    subs = {"{w}": str(w)}
    extra = [a.replace("{w}", subs["{w}"]) for a in extra]
    args = [command, *extra]
    if "-i" not in extra:
        args += ["-i", str(w / "places.geojson")]
    if "--imagery" not in extra:
        args += ["--imagery", str(w / "imagery")]
    if "--id-field" not in extra:
        args += ["--id-field", "name"]
    if "-o" not in extra:
        args += ["-o", str(out)]
    return [*args, "--buffer", "60", "--year", "2022", "-q"] if "--year" not in extra else [*args, "--buffer", "60", "-q"]


def _shown(rec: list[warnings.WarningMessage]) -> list[str]:
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    return [str(r.message) for r in rec if not issubclass(r.category, hidden)]


def _run(w: Path, command: str, out: Path, extra: list[str], capfd) -> tuple[int, list[str]]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        code = main(_args(w, command, out, extra))
    err = capfd.readouterr().err
    assert "Traceback" not in err and not _shown(rec), (err, _shown(rec))
    return code, err.strip().splitlines()


BOTH = ("embed", "export")
CASES = [
    # (commands, args, words the one line must hold)
    (BOTH, ["-o", "{w}/a-file"], "is an existing file"),
    (BOTH, ["-o", "{w}/a-file/sub/out"], "is a file, not a folder"),
    (BOTH, ["-o", "/proc/eoembed-out"], "cannot create the output folder /proc/eoembed-out"),
    (BOTH, ["-i", "{w}/badcrs.geojson"], '"crs" member'),
    (BOTH, ["-i", "{w}/dupes.geojson"], "share the id 'a'"),
    (BOTH, ["--imagery", "{w}/nirx"], "band 4 is 'NIRX', not a Sentinel-2 band name"),
    (BOTH, ["--weights", "{w}/missing.pt"], "is neither an existing file or folder"),
    (BOTH, ["--weights", "{w}/corrupt.pt"], "corrupt or not a torch checkpoint"),
    (("export",), ["--imagery", "{w}/four"], "has no B05, B06, B07, B8A, B11, B12"),
    (("export",), ["--year", "2019"], "dated in 2019-01-01..2020-01-01"),
    (BOTH, ["--imagery", "{w}/garbled"], "S2_20220611.tif: unreadable"),
]


def _expand(cases):
    for commands, extra, words in cases:
        for c in commands:
            yield pytest.param(c, extra, words, id=f"{c}:{' '.join(extra)}")


@pytest.mark.slow
@pytest.mark.parametrize("command, extra, words", list(_expand(CASES)))
def test_bad_input_is_exit_2_one_line_and_nothing_left_behind(w, tmp_path, capfd, command, extra, words):
    if "--weights" in extra:
        extra = [*extra, "-m" if command == "embed" else "--models", "galileo-nano"]
    out = tmp_path / "out"
    code, lines = _run(w, command, out, extra, capfd)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("eoembed: error:") and words in lines[0], lines[0]
    assert not out.exists()
    assert not (w / "a-file").is_dir() and (w / "a-file").read_text() == "not a folder"


@pytest.mark.slow
def test_an_unreachable_weights_mirror_fails_at_once_without_retry_lines(w, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("EOEMBED_HF_ENDPOINT", "http://127.0.0.1:9")
    for var in ("EOEMBED_WEIGHTS_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import; other tests may set it
    out = tmp_path / "out"
    code, lines = _run(w, "export", out, ["--models", "galileo-nano"], capfd)
    assert code == 2 and len(lines) == 1, lines
    assert "http://127.0.0.1:9 cannot be reached" in lines[0] and "Retrying" not in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_a_run_level_error_in_an_existing_folder_writes_nothing(w, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, lines = _run(w, "export", out, ["--imagery", "{w}/four"], capfd)
    assert code == 2 and len(lines) == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no manifest, no run.json


@pytest.mark.slow
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_output_folder_is_one_sentence(w, tmp_path, capfd):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, lines = _run(w, "embed", ro / "out", [], capfd)
    finally:
        ro.chmod(0o700)
    assert code == 2 and len(lines) == 1 and "cannot create the output folder" in lines[0]


@pytest.mark.slow
def test_grid_files_follow_the_export_naming_rule(w, tmp_path, capfd):
    ids = ["a/b", "a_b", "a\\b", "..", ".", "x y", "ok"]
    feats = [_point(i, 500_100 + 30 * k, 4_999_900 - 30 * k) for k, i in enumerate(ids)]
    (tmp_path / "ids.geojson").write_text(_collection(feats))
    out = tmp_path / "grids"
    code = main(["embed", "-i", str(tmp_path / "ids.geojson"), "--imagery", str(w / "imagery"), "--id-field", "name",
                 "--buffer", "40", "--year", "2022", "--output", "grid", "-o", str(out), "-q"])
    assert code == 0, capfd.readouterr().err
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == sorted(f"{safe_name(i)}.tif" for i in ids) and len(set(names)) == len(ids)
    assert "ok.tif" in names and all(n.startswith(("a_b", "item-", "x_y", "ok")) for n in names)
    assert all(p.resolve().parent == out.resolve() for p in out.iterdir())


def test_a_geojson_crs_member_that_parses_is_honoured(w):
    from eoembed.features import read_places

    places = read_places(w / "utmcrs.geojson", id_field="name")
    assert places[0].crs == "EPSG:32633" and places[0].spatial.x == 500_150


def test_band_descriptions_are_used_where_they_parse_and_refused_where_not(w, tiff_writer, tmp_path):
    data = np.random.default_rng(1).uniform(500, 3500, (4, 20, 20)).astype(np.int16)
    tiff_writer(tmp_path / "ok" / "s.tif", data, crs=UTM33, transform=ORIGIN, descriptions=["B04", "B03", "B02", "nir"])
    p = LocalProvider(tmp_path / "ok")
    assert {b: i for b, (_, i) in p.scenes[0].bands.items()} == {"B04": 1, "B03": 2, "B02": 3, "B08": 4}
    tiff_writer(tmp_path / "mixed" / "good.tif", data, crs=UTM33, transform=ORIGIN, descriptions=FOUR)
    tiff_writer(tmp_path / "mixed" / "bad.tif", data, crs=UTM33, transform=ORIGIN,
                descriptions=["B04", "B03", "B02", "NIRX"])
    tiff_writer(tmp_path / "mixed" / "twice.tif", data, crs=UTM33, transform=ORIGIN,
                descriptions=["B04", "red", "B02", "B08"])
    p = LocalProvider(tmp_path / "mixed")
    assert [s.id for s in p.scenes] == ["good"]  # never re-read as B02, B03, B04, B08 by count
    reasons = dict((Path(f).name, why) for f, why in p.skipped)
    assert "band 4 is 'NIRX'" in reasons["bad.tif"] and "bands 1 and 2 are both B04" in reasons["twice.tif"]
