"""The `eoembed` command line in a subprocess: outputs on disk, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from eoembed.cli import main
from eoembed.export import read_geoparquet
from pyproj import CRS, Transformer

UTM33 = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)  # 100×100 px: 1 km square
ENTRY_POINT = Path(sys.executable).parent / "eoembed"


def run_cli(*args: str, entry_point: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(ENTRY_POINT)] if entry_point else [sys.executable, "-m", "eoembed.cli"]
    env = {k: v for k, v in os.environ.items() if k != "EOEMBED_DEBUG"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=env)


def _lonlat(x: float, y: float) -> list[float]:
    return list(Transformer.from_crs(UTM33, 4326, always_xy=True).transform(x, y))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiff_writer):
    """A folder of imagery (one dated 10-band stack) and a GeoJSON of 3 points and 1 polygon."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    tiff_writer(root / "imagery" / "S2_20220610.tif", rng.uniform(500, 3500, (10, 100, 100)).astype(np.int16),
               crs=UTM33, transform=ORIGIN)
    pts = {"a": (500_200, 4_999_800), "b": (500_500, 4_999_500), "c": (500_800, 4_999_300)}
    feats = [
        {"type": "Feature", "properties": {"name": k}, "geometry": {"type": "Point", "coordinates": _lonlat(*xy)}}
        for k, xy in pts.items()
    ]
    ring = [_lonlat(x, y) for x, y in [(500_300, 4_999_300), (500_700, 4_999_350), (500_500, 4_999_700),
                                        (500_300, 4_999_300)]]
    feats.append({"type": "Feature", "properties": {"name": "field"},
                  "geometry": {"type": "Polygon", "coordinates": [ring]}})
    (root / "places.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    outside = [{"type": "Feature", "properties": {"name": "rome"},
                "geometry": {"type": "Point", "coordinates": [12.49, 41.89]}}]
    (root / "outside.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": outside}))
    return root


def test_models_lists_rcf(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "rcf" and "dim=512" in line for line in lines)


@pytest.mark.slow
def test_describe_prints_the_model_card_as_json_through_the_entry_point():
    if not ENTRY_POINT.exists():
        pytest.skip("the eoembed console script is not installed next to this Python")
    r = run_cli("describe", "rcf", "--json", entry_point=True)
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["id"] == "rcf" and card["dim"] == 512 and card["outputs"] == ["pooled", "grid"]
    assert card["bands"][:3] == ["B02", "B03", "B04"]


@pytest.mark.slow
def test_embed_writes_one_geoparquet_row_per_feature(workdir, tmp_path):
    r = run_cli("embed", "-i", str(workdir / "places.geojson"), "--imagery", str(workdir / "imagery"),
                "--id-field", "name", "--buffer", "100", "--year", "2022", "-o", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    assert "wrote 4 embeddings of 512 dims" in r.stdout
    res = read_geoparquet(tmp_path / "rcf_pooled.parquet")
    assert res["ids"] == ["a", "b", "c", "field"]
    assert CRS.from_user_input(res["crs"]) == CRS.from_epsg(4326)
    assert res["vectors"].shape == (4, 512) and np.isfinite(res["vectors"]).all()
    assert [g.geom_type for g in res["geometries"]] == ["Point", "Point", "Point", "Polygon"]
    assert res["geometries"][0].x == pytest.approx(_lonlat(500_200, 4_999_800)[0], abs=1e-9)
    assert res["meta"]["window"] == "2022-01-01/2023-01-01"
    assert len({tuple(v) for v in res["vectors"]}) == 4


@pytest.mark.slow
def test_embed_grid_writes_georeferenced_geotiffs(workdir, tmp_path):
    r = run_cli("embed", "-i", str(workdir / "places.geojson"), "--imagery", str(workdir / "imagery"),
                "--id-field", "name", "--buffer", "100", "--output", "grid", "-o", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.tif")) == ["a.tif", "b.tif", "c.tif", "field.tif"]
    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_epsg(32633)
        assert src.count == 512 and (src.width, src.height) == (5, 5)  # 200 m / (4 × 10 m) cells
        assert src.res == (40.0, 40.0)
        left, bottom, right, top = src.bounds
        # 20×20 px around (500200, 4999800), on the imagery's 10 m lattice
        assert (left, top) == (500_100.0, 4_999_900.0)


def _embed_args(workdir: Path, out: Path, args: list[str]) -> list[str]:
    subs = {"{missing}": str(workdir / "missing.geojson"), "{outside}": str(workdir / "outside.geojson"),
            "{nowhere}": str(workdir / "nowhere")}
    args = [subs.get(a, a) for a in args]
    for flag, value in (("-i", str(workdir / "places.geojson")), ("--imagery", str(workdir / "imagery"))):
        if flag not in args:
            args = [flag, value, *args]
    return ["embed", *args, "-o", str(out), "-q"]


def _one_error_line(stderr: str, word: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eoembed: error:") and word in lines[0], stderr


@pytest.mark.slow
def test_place_outside_the_imagery_exits_2_with_one_line(workdir, tmp_path):
    r = run_cli(*_embed_args(workdir, tmp_path / "out", ["-i", "{outside}"]))
    assert r.returncode == 2, (r.stdout, r.stderr)
    _one_error_line(r.stderr, "no local imagery covers the place")
    assert not list((tmp_path / "out").glob("*.parquet"))


@pytest.mark.parametrize(
    "args, word",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--start", "2022-09-01", "--end", "2022-06-01"], "empty or reversed"),
        (["--start", "2022-09-01"], "--start and --end go together"),
        (["-i", "{missing}"], "does not exist"),
        (["--imagery", "{nowhere}"], "does not exist"),
        (["--year", "2021"], "none is dated in 2021-01-01..2022-01-01"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(workdir, tmp_path, capsys, args, word):
    assert main(_embed_args(workdir, tmp_path / "out", args)) == 2
    _one_error_line(capsys.readouterr().err, word)
