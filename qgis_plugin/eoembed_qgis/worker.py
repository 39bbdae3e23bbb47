"""The engine side of the plugin: a script QGIS runs as ``<engine python> worker.py job.json``.

It lives in its own process so that torch, its threads and its memory never enter QGIS, and a
crash here becomes a message there. Every job runs through the engine's ``export_batch``
(chunking, retries, manifest, resume); the worker imports only eoembed's public API
(``eoembed`` and its ``eoembed.export`` formats, plus numpy, shapely and rasterio, which the
engine depends on) and speaks JSON lines on stdout::

    {"event": "progress", "done": 3, "total": 10, "text": "..."}
    {"event": "result", "pooled": ..., "grids": [...], "failed": [...], "model": ..., "crs": ...}
    {"event": "error", "message": "one sentence", "details": "traceback or context"}

Outputs are written into a staging folder ``<out_dir>/.<name>.part/`` and moved beside it only
when the whole job succeeded, so a killed job leaves no partial files (the runner removes the
staging folder). Other modes: ``worker.py --models`` prints the model cards, ``--probe`` prints
versions, paths and what is missing (the plugin's diagnostics).
"""

from __future__ import annotations

import contextlib
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

#: places per export_batch chunk: small enough for frequent progress and resume, large enough to batch
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


def _source(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(source name, source options) for export_batch."""
    src = dict(job.get("source") or {})
    kind = src.pop("kind", "local")
    if kind not in ("local", "stac", "gee"):
        raise ValueError(f"imagery source kind {kind!r} must be local, stac or gee")
    if kind == "local" and not src.get("paths") and _precomputed(job["model"]):
        return "local", {}  # a precomputed product reads its own data: no imagery needed
    return kind, {k: v for k, v in src.items() if v not in (None, "")}


def _precomputed(model: str) -> bool:
    import eoembed

    return bool(eoembed.describe_model(model).precomputed)


def _specs(job: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """{id: PointBuffer | Geometry} of the job's features, and the features that cannot be places."""
    import eoembed
    import shapely

    specs, failed = {}, []
    buffer_m = float(job.get("buffer_m", 320.0))
    for item in job["places"]:
        try:
            geom = shapely.from_wkt(item["wkt"])
            if geom.geom_type == "Point":
                specs[str(item["id"])] = eoembed.PointBuffer(geom.x, geom.y, buffer_m, crs=job["crs"])
            elif geom.geom_type in ("Polygon", "MultiPolygon"):
                specs[str(item["id"])] = eoembed.Geometry(geom, crs=job["crs"])
            else:
                raise ValueError(f"a {geom.geom_type} cannot be embedded; use points or polygons")
        except Exception as exc:  # one bad feature must not stop the others
            failed.append({"id": str(item["id"]), "message": _sentence(exc)})
    return specs, failed


def _extent_spec(specs: dict[str, Any], job: dict[str, Any]) -> Any:
    """One box covering every footprint of the selection (for output 'grid_extent')."""
    import eoembed

    boxes = []
    for spec in specs.values():
        if isinstance(spec, eoembed.PointBuffer):
            boxes.append((spec.x - spec.buffer_m, spec.y - spec.buffer_m, spec.x + spec.buffer_m, spec.y + spec.buffer_m))
        else:
            boxes.append(spec.shape(job["crs"]).bounds if hasattr(spec, "shape") else spec.geom.bounds)
    minx, miny = min(b[0] for b in boxes), min(b[1] for b in boxes)
    maxx, maxy = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return eoembed.BBox(minx, miny, maxx, maxy, crs=job["crs"])


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def fingerprint(job: dict[str, Any]) -> str:
    """What makes two jobs the same work (not their name or folder): the key of the resume folder."""
    import hashlib

    keys = ("model", "model_config", "weights", "places", "crs", "buffer_m", "temporal", "output", "source", "device")
    text = json.dumps({k: job.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resume_dir(job: dict[str, Any]) -> Path:
    """Where export_batch keeps a job's chunks and manifest until the job is complete."""
    return Path(job["out_dir"]) / ".eoembed-resume" / fingerprint(job)


def _export(job: dict[str, Any], specs: dict[str, Any], grid: bool, total: int, done0: int) -> Any:
    """Run the engine's export_batch (chunked, retried, resumable) with progress lines."""
    import eoembed

    source, options = _source(job)

    def progress(done: int, n: int, info: dict[str, Any]) -> None:
        skipped = int(info.get("skipped") or 0)
        text = f"embedded {done} of {n} places" + (f" ({skipped} resumed from an earlier run)" if skipped else "")
        emit("progress", done=done0 + done * (total - done0) // max(n, 1), total=total, text=text)

    cfg = job.get("model_config") or {}
    return eoembed.export_batch(
        specs, _temporal(job), job["model"], resume_dir(job), outputs="grid" if grid else "pooled",
        source=source, source_options=options, device=job.get("device") or "cpu", weights=job.get("weights"),
        model_config={job["model"]: cfg} if cfg else None, chunk_size=int(os.environ.get("EOEMBED_WORKER_CHUNK", CHUNK)),
        workers=2, progress=progress,
    )


def _loaded(export: Path, model: str) -> dict[str, Any]:
    import eoembed

    models = eoembed.load_export(export)["models"]
    return models.get(model) or next(iter(models.values()))


# -- outputs --------------------------------------------------------------------------------
def _write_pooled(job: dict[str, Any], pooled: dict[str, Any], export: Path, stage: Path) -> dict[str, str]:
    """The pooled vectors as GeoParquet (the engine's file) and GeoPackage (what QGIS opens).

    Each feature keeps its own geometry (the point or polygon), not the square that was embedded.
    """
    import numpy as np
    import shapely

    wkt = {str(p["id"]): p["wkt"] for p in job["places"]}
    ids = [str(i) for i in pooled["ids"]]
    geoms = [shapely.from_wkt(wkt[i]) for i in ids]
    vectors = np.asarray(pooled["vectors"], dtype=np.float32)
    parquet = next(export.rglob("pooled.parquet"))
    target = stage / f"{job['name']}.parquet"
    shutil.copyfile(parquet, target)
    gpkg = _write_gpkg(stage / f"{job['name']}.gpkg", ids, geoms, vectors, job["crs"], job["model"])
    return {"pooled": str(gpkg), "geoparquet": str(target), "dim": int(vectors.shape[1])}


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


def _write_grids(job: dict[str, Any], grids: dict[str, Any], stage: Path) -> list[dict[str, str]]:
    """One embedding GeoTIFF per place, plus a 3-band PCA-RGB GeoTIFF beside each for display."""
    from eoembed.export import write_geotiff

    order = [str(p["id"]) for p in job["places"] if str(p["id"]) in grids] or list(grids)
    out = []
    for pid in order:
        path = write_geotiff(grids[pid], stage / f"{job['name']}_{_safe(pid)}.tif")
        out.append({"id": pid, "path": str(path)})
    arrays = [grids[g["id"]].to_numpy() for g in out]
    basis = pca_basis(arrays)
    for g, arr in zip(out, arrays):
        pca = Path(g["path"]).with_name(Path(g["path"]).stem + "_pca.tif")
        _write_pca(pca, pca_rgb(arr, basis), grids[g["id"]])
        g["pca_path"] = str(pca)
    return out


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


def check_weights(job: dict[str, Any]) -> None:
    """Fail at once, naming the file to fetch, when the model's weights are neither here nor reachable.

    Done once per job, before any imagery is read, so an offline job fails in seconds instead
    of retrying every feature.
    """
    import eoembed

    weights = job.get("weights")
    if weights:
        if not Path(weights).exists():
            raise ValueError(f"the local weights {weights} for {job['model']} do not exist; fix the path in "
                             "Settings ▸ Options ▸ eoembed ▸ Local weights")
        return
    state = weights_state(eoembed.describe_model(job["model"]).to_dict())
    if state["state"] != "download" or hub_reachable():
        return
    url = f"https://huggingface.co/{state['repo']}/resolve/main/{state['file']}"
    raise ValueError(f"the weights of {job['model']} are not on this computer and Hugging Face cannot be reached "
                     f"(offline): download {url} and set the file in Settings ▸ Options ▸ eoembed ▸ Local weights")


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when the Hugging Face hub is off limits (HF_HUB_OFFLINE) or does not answer in `timeout` s."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def mask_outside_imagery(emb: Any, paths: list[str]) -> None:
    """Set to NaN (nodata) the cells of a grid whose centre lies outside every imagery file."""
    import numpy as np
    import rasterio
    import shapely
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom

    shapes = []
    for p in paths:
        files = [p] if Path(p).is_file() else [str(f) for f in Path(p).rglob("*") if f.suffix.lower() in (".tif", ".tiff", ".vrt")]
        for f in files:
            try:
                with rasterio.open(f) as src:
                    b = src.bounds
                    box = shapely.segmentize(shapely.box(*b), max(b.right - b.left, b.top - b.bottom) / 20)
                    shapes.append(shapely.geometry.shape(
                        transform_geom(src.crs, emb.crs, shapely.geometry.mapping(box))))
            except Exception:  # an unreadable file covers nothing
                continue
    values = emb.data.values
    if not shapes:
        return
    outside = geometry_mask([shapely.union_all(shapes)], out_shape=values.shape[1:], transform=emb.transform)
    values[:, outside] = np.nan


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
    """Do the whole job through export_batch; returns the result dict (paths in `out_dir`).

    The engine's chunks and manifest live in a resume folder keyed by the job's content: a job
    that was interrupted (cancelled, QGIS closed, a crash) and is started again with the same
    features and options only computes what is missing. The folder is removed on success.
    """
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(job)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    specs, failed = _specs(job)
    total = len(job["places"])
    mode = job.get("output", "pooled")
    if mode not in ("pooled", "grid", "grid_extent"):
        raise ValueError(f"output={mode!r} must be pooled, grid or grid_extent")
    emit("progress", done=len(failed), total=total, text="checking the model's weights")
    check_weights(job)
    if not specs:
        raise JobFailed(f"no feature could be embedded: {failed[0]['message'] if failed else 'the selection is empty'}",
                        failed)
    emit("progress", done=len(failed), total=total, text="indexing imagery")
    if mode == "grid_extent":
        summary = _export(job, {"extent": _extent_spec(specs, job)}, True, total, total - 1)
    else:
        summary = _export(job, specs, mode != "pooled", total, len(failed))
    failed += [{"id": str(f.get("id")), "message": str(f.get("error", "")).splitlines()[0]} for f in summary.failures]
    export = resume_dir(job)
    if summary.ok + summary.skipped == 0:  # nothing worth resuming
        _drop(export)
        first = failed[0]["message"] if failed else "the selection is empty"
        raise JobFailed(f"no feature could be embedded: {first}", failed)
    data = _loaded(export, job["model"])
    result: dict[str, Any] = {"pooled": None, "grids": [], "failed": failed, "model": job["model"],
                              "crs": job["crs"], "output": mode, "resumed": int(summary.skipped)}
    emit("progress", done=total, total=total, text="writing outputs")
    if mode == "pooled":
        result.update(_write_pooled(job, data["pooled"], export, stage))
    else:
        grids = data["grids"]
        if mode == "grid_extent" and _source(job)[0] == "local" and not _precomputed(job["model"]):
            for emb in grids.values():
                mask_outside_imagery(emb, (job.get("source") or {}).get("paths") or [])
        result["grids"] = _write_grids(job, grids, stage)
        first = next(iter(grids.values()))
        result["crs"], result["dim"] = first.crs, int(first.dim)
    moved = _move_out(stage, out_dir, result)
    _drop(export)
    return moved


def _drop(export: Path) -> None:
    """Remove a resume folder (and its parent when no other job waits there)."""
    shutil.rmtree(export, ignore_errors=True)
    with contextlib.suppress(OSError):
        export.parent.rmdir()


class JobFailed(Exception):
    """Every place failed; carries the per-place reasons."""

    def __init__(self, message: str, failed: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.failed = failed


# -- other modes ----------------------------------------------------------------------------
def hf_file(weights: str) -> tuple[str, str] | None:
    """(repo, file) of a card's ``"hf:owner/repo (path/in/repo)"`` weights, else None."""
    text = str(weights or "").strip()
    if not text.startswith("hf:") or "(" not in text:
        return None
    repo, _, rest = text[3:].partition("(")
    return repo.strip(), rest.rstrip(") ").strip()


def weights_state(card: dict[str, Any]) -> dict[str, Any]:
    """``{"state": "ready" | "download" | "local" | "unavailable", "text", "file"}`` for a card."""
    if card.get("error"):
        return {"state": "unavailable", "text": card["error"]}
    if card.get("precomputed"):
        return {"state": "ready", "text": "ready (precomputed product: no weights)"}
    weights = str(card.get("weights") or "")
    if weights.startswith("none"):
        return {"state": "ready", "text": "ready (no weights needed)"}
    hf = hf_file(weights)
    if hf is None:
        return {"state": "local", "text": f"needs a local weights file: {weights}"}
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hf[0], hf[1])
    except Exception:
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return {"state": "ready", "text": "ready (weights downloaded)", "file": cached}
    return {"state": "download", "text": f"needs download: {hf[0]}/{hf[1]}", "repo": hf[0], "file": hf[1]}


def models() -> dict[str, Any]:
    """Every canonical model id with its card and weights state (what the dialog shows)."""
    import eoembed

    cards = {}
    for m in eoembed.list_models():
        try:
            cards[m] = eoembed.describe_model(m).to_dict()
        except Exception as exc:
            cards[m] = {"id": m, "error": _sentence(exc)}
        cards[m]["weights_state"] = weights_state(cards[m])
    return {"models": cards}


def download(model: str) -> dict[str, Any]:
    """Fetch `model`'s checkpoint into the Hugging Face cache; returns the local file."""
    import eoembed

    card = eoembed.describe_model(model).to_dict()
    hf = hf_file(card.get("weights", ""))
    if hf is None:
        raise ValueError(f"{model}'s weights ({card.get('weights')}) are not on Hugging Face; "
                         "set a local file in Settings ▸ Options ▸ eoembed")
    from huggingface_hub import hf_hub_download

    emit("progress", done=0, total=1, text=f"downloading {hf[0]}/{hf[1]}")
    path = hf_hub_download(hf[0], hf[1])
    return {"model": model, "file": path}


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


def text_vector(model: str, text: str) -> dict[str, Any]:
    """The unit-length text embedding of `text` by the CLIP `model` (for text queries in QGIS)."""
    import eoembed
    import numpy as np

    vec = np.asarray(eoembed.embed_text(model, text, device=os.environ.get("EOEMBED_DEVICE", "cpu")),
                     dtype=np.float64)[0]
    return {"model": model, "vector": (vec / np.linalg.norm(vec)).tolist()}


def main(argv: list[str]) -> int:
    modes = {"--models": lambda: models(), "--probe": lambda: probe()}
    if len(argv) == 4 and argv[1] == "--text":
        modes["--text"] = lambda: text_vector(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "--download":
        modes["--download"] = lambda: download(argv[2])
    if len(argv) in (2, 3, 4) and argv[1] in modes:
        try:
            emit("result", **modes[argv[1]]())
            return 0
        except Exception as exc:
            emit("error", message=_sentence(exc), details=traceback.format_exc())
            return 1
    if len(argv) != 2:
        emit("error", message="usage: worker.py job.json | --models | --probe | --text MODEL TEXT", details="")
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
