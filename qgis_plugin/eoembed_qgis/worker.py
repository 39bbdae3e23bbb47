"""The engine side of the plugin: a script QGIS runs as ``<engine python> worker.py job.json``.

It lives in its own process so that torch, its threads and its memory never enter QGIS, and a
crash here becomes a message there. It imports only eoembed's public API (plus numpy, shapely
and rasterio, which the engine depends on) and speaks JSON lines on stdout::

    {"event": "progress", "done": 3, "total": 10, "text": "..."}
    {"event": "result", "pooled": ..., "grids": [...], "failed": [...], "model": ..., "crs": ...}
    {"event": "error", "message": "one sentence", "details": "traceback or context"}

Outputs are written into a staging folder ``<out_dir>/.<name>.part/`` and moved beside it only
when the whole job succeeded, so a killed job leaves no partial files (the runner removes the
staging folder). Other modes: ``worker.py --models`` prints the model cards, ``--probe`` prints
versions, paths and what is missing (the plugin's diagnostics).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

# This script's folder holds the plugin's modules; keep them from shadowing real packages.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

#: places per engine call: small enough for frequent progress, large enough for batching
CHUNK = 8
#: widest vector written as one GeoPackage field per dim (SQLite's limit is 2000 columns)
MAX_GPKG_DIMS = 1990
#: the pixels sampled (at most) to fit the principal components of the grids
PCA_SAMPLE = 20_000


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line to stdout and flush it (the runner reads lines as they come)."""
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


def staging_dir(job: dict[str, Any]) -> Path:
    """Where a job writes before its outputs are complete (shared with the runner)."""
    return Path(job["out_dir"]) / f".{job['name']}.part"


# -- job pieces -----------------------------------------------------------------------------
def _temporal(job: dict[str, Any]) -> Any:
    import eoembed

    t = job.get("temporal")
    if not t:
        return None
    return eoembed.TemporalSpec.range(t["start"], t["end"])


def _provider(job: dict[str, Any]) -> Any:
    from eoembed.providers import open_provider

    src = dict(job.get("source") or {})
    kind = src.pop("kind", "local")
    if kind == "local":
        paths = src.get("paths") or []
        if not paths and _precomputed(job["model"]):
            return "local"  # a precomputed product reads its own data: no imagery needed
        return open_provider("local", paths=paths)
    if kind == "stac":
        return open_provider("stac", **{k: v for k, v in src.items() if v not in (None, "")})
    if kind == "gee":
        return open_provider("gee", **{k: v for k, v in src.items() if v not in (None, "")})
    raise ValueError(f"imagery source kind {kind!r} must be local, stac or gee")


def _precomputed(model: str) -> bool:
    import eoembed

    return bool(eoembed.describe_model(model).precomputed)


def _places(job: dict[str, Any]) -> tuple[list[Any], list[dict[str, str]]]:
    """Places of the job in its CRS, and the features that could not become places."""
    import shapely
    from eoembed.features import place_from_geometry

    places, failed = [], []
    for item in job["places"]:
        try:
            geom = shapely.from_wkt(item["wkt"])
            places.append(place_from_geometry(str(item["id"]), geom, job["crs"], float(job.get("buffer_m", 320.0))))
        except Exception as exc:  # one bad feature must not stop the others
            failed.append({"id": str(item["id"]), "message": _sentence(exc)})
    return places, failed


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _embed(job: dict[str, Any], spatials: list[Any], provider: Any, grid: bool) -> list[Any]:
    import eoembed

    output = eoembed.OutputSpec.grid() if grid else eoembed.OutputSpec.pooled()
    return eoembed.get_embeddings_batch(
        job["model"], spatials, _temporal(job), output=output, source=provider,
        device=job.get("device") or "cpu", weights=job.get("weights"),
        model_config=job.get("model_config") or {},
    )


def _embed_chunks(job: dict[str, Any], places: list[Any], provider: Any, grid: bool,
                  failed: list[dict[str, str]], total: int, done0: int) -> list[tuple[Any, Any]]:
    """(place, embedding) for every place that worked; failures go to `failed` with their reason.

    A chunk that fails is retried place by place, so one bad place costs only itself.
    """
    out: list[tuple[Any, Any]] = []
    done = done0
    for i in range(0, len(places), CHUNK):
        chunk = places[i:i + CHUNK]
        try:
            embs = _embed(job, [p.spatial for p in chunk], provider, grid)
            out += list(zip(chunk, embs))
        except Exception:
            for p in chunk:
                try:
                    out.append((p, _embed(job, [p.spatial], provider, grid)[0]))
                except Exception as exc:
                    failed.append({"id": p.id, "message": _sentence(exc)})
        done += len(chunk)
        emit("progress", done=done, total=total, text=f"embedded {done} of {total} places")
    return out


# -- outputs --------------------------------------------------------------------------------
def _write_pooled(job: dict[str, Any], pairs: list[tuple[Any, Any]], stage: Path) -> dict[str, str]:
    """The pooled vectors as GeoParquet (engine format) and GeoPackage (what QGIS opens)."""
    import numpy as np
    from eoembed.export import write_geoparquet

    ids = [p.id for p, _ in pairs]
    geoms = [p.geometry for p, _ in pairs]
    vectors = np.stack([e.to_numpy() for _, e in pairs]).astype(np.float32)
    meta = {"model": job["model"], "job": {k: v for k, v in job.items() if k != "places"},
            "items": [e.meta for _, e in pairs][:1]}
    parquet = write_geoparquet(stage / f"{job['name']}.parquet", ids, geoms, vectors, job["crs"],
                               model=job["model"], meta=meta)
    gpkg = _write_gpkg(stage / f"{job['name']}.gpkg", ids, geoms, vectors, job["crs"], job["model"])
    return {"pooled": str(gpkg), "geoparquet": str(parquet)}


def _write_gpkg(path: Path, ids: list[str], geoms: list[Any], vectors: Any, crs: str, model: str) -> Path:
    """A GeoPackage with fields id, model, e0…e{D-1} (one float field per embedding dim)."""
    import numpy as np
    import pyogrio.raw
    import shapely

    types = {g.geom_type for g in geoms}
    gtype = types.pop() if len(types) == 1 else "Unknown"
    names = ["id", "model"]
    data = [np.asarray(ids, dtype=object), np.asarray([model] * len(ids), dtype=object)]
    if vectors.shape[1] <= MAX_GPKG_DIMS:
        names += [f"e{i}" for i in range(vectors.shape[1])]
        data += [np.ascontiguousarray(vectors[:, i], dtype=np.float64) for i in range(vectors.shape[1])]
    else:  # SQLite allows 2000 columns: wider vectors go in one JSON text field
        names.append("embedding")
        data.append(np.asarray([json.dumps([round(float(v), 7) for v in row]) for row in vectors], dtype=object))
    tmp = path.with_name(path.name + ".tmp.gpkg")
    pyogrio.raw.write(str(tmp), shapely.to_wkb(np.asarray(geoms, dtype=object)), data, names,
                      driver="GPKG", layer=path.stem, crs=_crs_wkt(crs), geometry_type=gtype,
                      promote_to_multi=False)
    os.replace(tmp, path)
    return path


def _crs_wkt(crs: str) -> str:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_wkt()


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep[:80] or "item"


def _write_grids(job: dict[str, Any], pairs: list[tuple[Any, Any]], stage: Path) -> list[dict[str, str]]:
    """One embedding GeoTIFF per place, plus a 3-band PCA-RGB GeoTIFF beside each for display."""
    from eoembed.export import write_geotiff

    grids = []
    for p, emb in pairs:
        path = write_geotiff(emb, stage / f"{job['name']}_{_safe(p.id)}.tif")
        grids.append({"id": p.id, "path": str(path)})
    arrays = [emb.to_numpy() for _, emb in pairs]
    basis = pca_basis(arrays)
    for g, (_, emb), arr in zip(grids, pairs, arrays):
        pca = Path(g["path"]).with_name(Path(g["path"]).stem + "_pca.tif")
        _write_pca(pca, pca_rgb(arr, basis), emb)
        g["pca_path"] = str(pca)
    return grids


def pca_basis(arrays: list[Any]) -> dict[str, Any]:
    """Mean, top-3 principal axes and a 2–98 % stretch shared by all grids of a job.

    Sharing one basis makes colours comparable between the features of one run.
    """
    import numpy as np

    pixels = [a.reshape(a.shape[0], -1).T for a in arrays]
    x = np.concatenate(pixels).astype(np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) > PCA_SAMPLE:
        x = x[np.random.default_rng(0).choice(len(x), PCA_SAMPLE, replace=False)]
    d = arrays[0].shape[0]
    if len(x) == 0:
        return {"mean": np.zeros(d), "axes": np.eye(d, 3).T, "lo": np.zeros(3), "hi": np.ones(3)}
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = np.zeros((3, d))
    axes[: min(3, len(vt))] = vt[:3]
    # a fixed sign per axis (largest loading positive) so reruns give the same colours
    axes *= np.where(axes[np.arange(3), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    scores = (x - mean) @ axes.T
    lo, hi = np.percentile(scores, 2, axis=0), np.percentile(scores, 98, axis=0)
    return {"mean": mean, "axes": axes, "lo": lo, "hi": np.where(hi > lo, hi, lo + 1.0)}


def pca_rgb(array: Any, basis: dict[str, Any]) -> Any:
    """``(D, H, W)`` embeddings → ``(3, H, W)`` uint8: principal components stretched to 1–255.

    0 is nodata (pixels with no finite embedding).
    """
    import numpy as np

    d, h, w = array.shape
    x = array.reshape(d, -1).T.astype(np.float64)
    ok = np.isfinite(x).all(axis=1)
    scores = (np.where(ok[:, None], x, basis["mean"]) - basis["mean"]) @ basis["axes"].T
    scaled = (scores - basis["lo"]) / (basis["hi"] - basis["lo"])
    rgb = (1 + np.clip(scaled, 0.0, 1.0) * 254).round().astype(np.uint8)
    rgb[~ok] = 0
    return rgb.T.reshape(3, h, w)


def _write_pca(path: Path, rgb: Any, emb: Any) -> None:
    import rasterio
    from eoembed.export import atomic_path

    _, h, w = rgb.shape
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 3, "height": h, "width": w,
               "crs": emb.crs, "transform": emb.transform, "nodata": 0, "photometric": "RGB",
               "compress": "deflate"}
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(rgb)
        for i, name in enumerate(("PC1", "PC2", "PC3"), start=1):
            dst.set_band_description(i, name)


def _extent_place(places: list[Any], job: dict[str, Any]) -> Any:
    """One place covering every footprint of the selection (for output 'grid_extent')."""
    import eoembed
    import shapely
    from eoembed.features import Place

    shapes = [p.spatial.shape(job["crs"]) for p in places]
    minx, miny, maxx, maxy = shapely.total_bounds(shapes)
    box = eoembed.BBox(minx, miny, maxx, maxy, crs=job["crs"])
    return Place("extent", box, shapely.box(minx, miny, maxx, maxy), box.crs)


def _move_out(stage: Path, out_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Move finished files from the staging folder to `out_dir`, rewriting their paths."""
    def moved(p: str | None) -> str | None:
        if not p:
            return p
        target = out_dir / Path(p).name
        os.replace(p, target)
        return str(target)

    result["pooled"] = moved(result.get("pooled"))
    if result.get("geoparquet"):
        result["geoparquet"] = moved(result["geoparquet"])
    for g in result["grids"]:
        g["path"] = moved(g["path"])
        g["pca_path"] = moved(g.get("pca_path"))
    shutil.rmtree(stage, ignore_errors=True)
    return result


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Do the whole job; returns the result dict (paths in `out_dir`)."""
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(job)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    places, failed = _places(job)
    total = len(job["places"])
    emit("progress", done=len(failed), total=total, text="indexing imagery")
    provider = _provider(job)
    mode = job.get("output", "pooled")
    if mode not in ("pooled", "grid", "grid_extent"):
        raise ValueError(f"output={mode!r} must be pooled, grid or grid_extent")
    if mode == "grid_extent" and places:
        extent = _extent_place(places, job)
        pairs = _embed_chunks(job, [extent], provider, True, failed, total, total - 1)
    else:
        pairs = _embed_chunks(job, places, provider, mode != "pooled", failed, total, len(failed))
    if not pairs:
        first = failed[0]["message"] if failed else "the selection is empty"
        raise JobFailed(f"no feature could be embedded: {first}", failed)
    result: dict[str, Any] = {"pooled": None, "grids": [], "failed": failed, "model": job["model"],
                              "crs": job["crs"], "output": mode}
    emit("progress", done=total, total=total, text="writing outputs")
    if mode == "pooled":
        result.update(_write_pooled(job, pairs, stage))
        result["dim"] = int(pairs[0][1].dim)
    else:
        result["grids"] = _write_grids(job, pairs, stage)
        result["crs"] = pairs[0][1].crs
        result["dim"] = int(pairs[0][1].dim)
    return _move_out(stage, out_dir, result)


class JobFailed(Exception):
    """Every place failed; carries the per-place reasons."""

    def __init__(self, message: str, failed: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.failed = failed


# -- other modes ----------------------------------------------------------------------------
def models() -> dict[str, Any]:
    """Every model id with its card (what the dialog shows)."""
    import eoembed

    cards = {}
    for m in eoembed.list_models():
        try:
            cards[m] = eoembed.describe_model(m).to_dict()
        except Exception as exc:
            cards[m] = {"id": m, "error": _sentence(exc)}
    return {"models": cards}


def probe() -> dict[str, Any]:
    """Versions, paths and what is missing in this Python environment."""
    import importlib

    out: dict[str, Any] = {"python": sys.executable, "python_version": sys.version.split()[0],
                           "packages": {}, "missing": [], "env": {}}
    for name in ("eoembed", "torch", "numpy", "rasterio", "pyproj", "shapely", "pyarrow", "pyogrio",
                 "xarray", "pystac_client", "ee", "huggingface_hub", "safetensors"):
        try:
            mod = importlib.import_module(name)
            out["packages"][name] = {"version": getattr(mod, "__version__", "?"),
                                     "path": str(Path(getattr(mod, "__file__", "") or "").parent)}
        except Exception as exc:
            out["missing"].append(f"{name} ({_sentence(exc)})")
    for key in ("HF_HOME", "EOEMBED_EE_PROJECT", "EOEMBED_DEVICE", "PROJ_DATA", "GDAL_DATA"):
        out["env"][key] = os.environ.get(key)
    try:
        import torch

        out["cuda"] = bool(torch.cuda.is_available())
    except Exception:
        out["cuda"] = False
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] in ("--models", "--probe"):
        try:
            emit("result", **(models() if argv[1] == "--models" else probe()))
            return 0
        except Exception as exc:
            emit("error", message=_sentence(exc), details=traceback.format_exc())
            return 1
    if len(argv) != 2:
        emit("error", message="usage: worker.py job.json | --models | --probe", details="")
        return 2
    try:
        job = json.loads(Path(argv[1]).read_text())
        emit("result", **run(job))
        return 0
    except JobFailed as exc:
        emit("error", message=_sentence(exc), details=json.dumps(exc.failed, indent=1), failed=exc.failed)
        return 1
    except Exception as exc:
        emit("error", message=_sentence(exc), details=traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
