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
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
)

from ..analysis_io import crs_text  # noqa: F401 - re-exported for the algorithms

MODEL, BUFFER, START, END, YEAR = "MODEL", "BUFFER", "START", "END", "YEAR"
IMAGERY, IMAGERY_FOLDER, DEVICE = "IMAGERY", "IMAGERY_FOLDER", "DEVICE"
DEVICES = ("cpu", "auto", "cuda", "mps")


def model_ids() -> list[str]:
    """Model ids for the model menu, from the cache (never starts the engine; see model_cache)."""
    from ..model_cache import model_ids as cached

    return cached(_python())


def _python() -> str:
    from .. import settings

    return settings.engine_python()


def _model_widget() -> dict:
    """Widget metadata: an editable combo of the cached model ids (the value stays a string id)."""
    try:
        from .model_widget import ModelWidgetWrapper
    except ImportError:  # no Processing GUI (qgis_process): a plain text field
        return {}
    return {"widget_wrapper": {"class": ModelWidgetWrapper}}


def add_model_parameters(alg: QgsProcessingAlgorithm, *, buffer: bool = True) -> None:
    """Model id, point buffer, time window (start/end dates or a year), imagery and device."""
    model = QgsProcessingParameterString(MODEL, "Model id (e.g. rcf, remoteclip-vit-b-32)", defaultValue="rcf")
    model.setMetadata(_model_widget())
    alg.addParameter(model)
    if buffer:
        alg.addParameter(QgsProcessingParameterNumber(
            BUFFER, "Buffer around points (m, half the side of the square embedded)",
            QgsProcessingParameterNumber.Double, defaultValue=320.0, minValue=1.0, maxValue=25_000.0))
    alg.addParameter(QgsProcessingParameterDateTime(
        START, "Start date (inclusive)", QgsProcessingParameterDateTime.Date, optional=True))
    alg.addParameter(QgsProcessingParameterDateTime(
        END, "End date (exclusive)", QgsProcessingParameterDateTime.Date, optional=True))
    alg.addParameter(QgsProcessingParameterNumber(
        YEAR, "Or a whole year (instead of start/end)", QgsProcessingParameterNumber.Integer,
        optional=True, minValue=1972, maxValue=2100))
    alg.addParameter(QgsProcessingParameterMultipleLayers(
        IMAGERY, "Imagery (raster layers or GeoTIFF/VRT files)", QgsProcessing.TypeRaster))
    alg.addParameter(QgsProcessingParameterFile(
        IMAGERY_FOLDER, "Also a folder of imagery", QgsProcessingParameterFile.Folder, optional=True))
    alg.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", options=list(DEVICES), defaultValue=0))


def _date(alg: QgsProcessingAlgorithm, parameters: dict, name: str, context: QgsProcessingContext) -> str:
    if parameters.get(name) in (None, ""):
        return ""
    value = parameters[name]
    if isinstance(value, str):  # processing.run / qgis_process: "YYYY-MM-DD"
        try:
            return date.fromisoformat(value.strip()[:10]).isoformat()
        except ValueError as exc:
            raise QgsProcessingException(f"{name} {value!r} is not a date; write it as YYYY-MM-DD") from exc
    d = alg.parameterAsDate(parameters, name, context)
    return d.toString("yyyy-MM-dd") if d.isValid() else ""


def temporal(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> dict | None:
    """The job's time window: a year, or start/end, or None (every date of local imagery)."""
    start, end = _date(alg, parameters, START, context), _date(alg, parameters, END, context)
    y = alg.parameterAsInt(parameters, YEAR, context) if parameters.get(YEAR) not in (None, "") else 0
    if y and (start or end):
        raise QgsProcessingException("give either a year or start/end dates, not both")
    if y:
        return {"start": f"{y:04d}-01-01", "end": f"{y + 1:04d}-01-01"}
    if bool(start) != bool(end):
        raise QgsProcessingException("give both a start and an end date (or a year)")
    if not start:
        return None
    if end <= start:
        raise QgsProcessingException(f"the end date {end} must be after the start date {start}")
    return {"start": start, "end": end}


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
    model = (alg.parameterAsString(parameters, MODEL, context) or "").strip().lower()
    if not model:
        raise QgsProcessingException("give a model id, e.g. rcf")
    device = DEVICES[alg.parameterAsEnum(parameters, DEVICE, context)] if parameters.get(DEVICE) not in (None, "") \
        else "cpu"
    buffer = alg.parameterAsDouble(parameters, BUFFER, context) if BUFFER in parameters else 320.0
    out_dir = Path(QgsProcessingUtils.tempFolder()) / "eoembed"
    return {
        "model": model, "model_config": {}, "weights": None, "buffer_m": buffer or 320.0,
        "temporal": temporal(alg, parameters, context), "source": imagery(alg, parameters, context),
        "device": device, "out_dir": str(out_dir), "name": f"{stem}_{uuid.uuid4().hex[:8]}",
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
        from .. import settings

        result = run_job(job, on_progress, feedback.isCanceled, settings.engine_python(),
                         env=settings.worker_extra_env())
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
