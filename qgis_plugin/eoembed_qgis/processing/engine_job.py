"""What the embedding algorithms share: parameters, the job dict, running it through the feedback.

The algorithms never run the engine in QGIS's process: they build the job dict of
:mod:`eoembed_qgis.runner` and run it in the engine's worker process, with the feedback's
progress bar and cancel button wired to it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from ..analysis_io import crs_text  # noqa: F401 - re-exported for the algorithms

MODEL, BUFFER, START, END, YEAR = "MODEL", "BUFFER", "START", "END", "YEAR"
IMAGERY, IMAGERY_FOLDER = "IMAGERY", "IMAGERY_FOLDER"

_MODELS: list[str] = []


def model_ids() -> list[str]:
    """Model ids for the model menu, asked once per session from the engine's Python.

    The worker answers (``worker.py --models``) so that torch stays out of QGIS; if it cannot,
    the engine in QGIS's own Python is asked, and as a last resort only "rcf" is offered.
    """
    if not _MODELS:
        ids: list[str] = []
        try:
            from .. import settings
            from ..runner import run_worker_command

            ids = sorted(run_worker_command("--models", settings.engine_python(), timeout=60,
                                            env=settings.worker_extra_env()).get("models", {}))
        except Exception:
            try:
                import eoembed

                ids = list(eoembed.list_models())
            except Exception:
                ids = []
        _MODELS[:] = ids or ["rcf"]
    return list(_MODELS)


def add_model_parameters(alg: QgsProcessingAlgorithm, *, buffer: bool = True) -> None:
    """Model, point buffer, time window (start/end or a year) and the imagery to read."""
    ids = model_ids()
    alg.addParameter(QgsProcessingParameterEnum(
        MODEL, "Model", options=ids, defaultValue=ids.index("rcf") if "rcf" in ids else 0))
    if buffer:
        alg.addParameter(QgsProcessingParameterNumber(
            BUFFER, "Buffer around points (m, half the side of the square embedded)",
            QgsProcessingParameterNumber.Double, defaultValue=320.0, minValue=1.0, maxValue=25_000.0))
    alg.addParameter(QgsProcessingParameterString(
        START, "Start date (YYYY-MM-DD, inclusive)", optional=True))
    alg.addParameter(QgsProcessingParameterString(
        END, "End date (YYYY-MM-DD, exclusive)", optional=True))
    alg.addParameter(QgsProcessingParameterNumber(
        YEAR, "Or a whole year (instead of start/end)", QgsProcessingParameterNumber.Integer,
        optional=True, minValue=1972, maxValue=2100))
    alg.addParameter(QgsProcessingParameterMultipleLayers(
        IMAGERY, "Imagery (raster layers or GeoTIFF/VRT files)", QgsProcessing.TypeRaster, optional=True))
    alg.addParameter(QgsProcessingParameterFile(
        IMAGERY_FOLDER, "Or a folder of imagery", QgsProcessingParameterFile.Folder, optional=True))


def _date(text: str, name: str) -> str:
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError as exc:
        raise QgsProcessingException(f"{name} {text!r} is not a date; write it as YYYY-MM-DD") from exc


def temporal(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> dict | None:
    """The job's time window: a year, or start/end, or None (every date of local imagery)."""
    start = (alg.parameterAsString(parameters, START, context) or "").strip()
    end = (alg.parameterAsString(parameters, END, context) or "").strip()
    y = alg.parameterAsInt(parameters, YEAR, context) if parameters.get(YEAR) not in (None, "") else 0
    if y and (start or end):
        raise QgsProcessingException("give either a year or start/end dates, not both")
    if y:
        return {"start": f"{y:04d}-01-01", "end": f"{y + 1:04d}-01-01"}
    if bool(start) != bool(end):
        raise QgsProcessingException("give both a start and an end date (or a year)")
    if not start:
        return None
    s, e = _date(start, "start date"), _date(end, "end date")
    if e <= s:
        raise QgsProcessingException(f"the end date {e} must be after the start date {s}")
    return {"start": s, "end": e}


def imagery(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> dict:
    """The job's imagery source: the chosen raster layers' files and the folder."""
    paths = [lyr.source().split("|")[0] for lyr in alg.parameterAsLayerList(parameters, IMAGERY, context)]
    folder = alg.parameterAsFile(parameters, IMAGERY_FOLDER, context)
    if folder:
        paths.append(folder)
    if not paths:
        raise QgsProcessingException("choose the imagery to embed: raster layers, files or a folder")
    return {"kind": "local", "paths": paths}


def base_job(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext, stem: str) -> dict:
    """The parts of a job every embedding algorithm shares (places, crs and output added later)."""
    ids = model_ids()
    index = alg.parameterAsEnum(parameters, MODEL, context)
    if not 0 <= index < len(ids):
        raise QgsProcessingException(f"model #{index} is not one of {', '.join(ids)}")
    buffer = alg.parameterAsDouble(parameters, BUFFER, context) if BUFFER in parameters else 320.0
    out_dir = Path(QgsProcessingUtils.tempFolder()) / "eoembed"
    return {
        "model": ids[index], "model_config": {}, "weights": None, "buffer_m": buffer or 320.0,
        "temporal": temporal(alg, parameters, context), "source": imagery(alg, parameters, context),
        "device": "cpu", "out_dir": str(out_dir), "name": f"{stem}_{uuid.uuid4().hex[:8]}",
    }


def run(job: dict, feedback: QgsProcessingFeedback) -> dict:
    """Run `job` in the engine's worker; progress and cancel go through `feedback`."""
    from ..runner import RunnerCanceled, RunnerError, run_job

    def on_progress(pct: float, text: str) -> None:
        feedback.setProgress(pct)
        if text:
            feedback.setProgressText(text)

    feedback.pushInfo(f"eoembed: model {job['model']}, {len(job['places'])} place(s), output {job['output']}")
    try:
        result = run_job(job, on_progress, feedback.isCanceled)
    except RunnerCanceled as exc:
        raise QgsProcessingException("eoembed: the job was cancelled") from exc
    except RunnerError as exc:
        if exc.details:
            feedback.pushDebugInfo(exc.details)
        for f in exc.failed:
            feedback.reportError(f"feature {f.get('id')}: {f.get('message')}")
        raise QgsProcessingException(f"eoembed: {exc}") from exc
    for f in result.get("failed") or []:
        feedback.reportError(f"feature {f.get('id')} was not embedded: {f.get('message')}")
    return result


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Copy `src` to `dst` through a temporary name beside it, so `dst` is never half-written."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(dst)


def remove_outputs(result: dict[str, Any]) -> None:
    """Delete a job's files once they are copied where the user asked."""
    paths = [result.get("pooled"), result.get("geoparquet")]
    for g in result.get("grids") or []:
        paths += [g.get("path"), g.get("pca_path")]
    for p in paths:
        if p and Path(p).exists():
            Path(p).unlink()
