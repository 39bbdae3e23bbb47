"""Run the engine in a supervised worker process: start, read its JSON lines, cancel, clean up.

No Qt here, so it is usable from a QgsTask, a Processing algorithm or a plain script::

    result = run_job(job, on_progress=lambda pct, text: ..., is_canceled=lambda: False)

The worker runs in its own process group; cancelling kills the whole group (SIGKILL), so the
engine's threads and any child processes stop at once, and the job's staging folder (where
unfinished outputs live) is removed. Nothing from the worker's failure ever raises anything but
:class:`RunnerError`.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve().with_name("worker.py")
#: how often is_canceled() is asked while the worker runs (seconds)
POLL_S = 0.1
#: environment variables of QGIS's own libraries that break the engine's bundled ones
#: (rasterio's PROJ fails with Debian's proj.db; QGIS's Python paths are not the engine's)
DROP_ENV = ("PROJ_DATA", "PROJ_LIB", "GDAL_DATA", "GDAL_DRIVER_PATH", "PYTHONPATH", "PYTHONHOME",
            "PYTHONSTARTUP", "QGIS_PREFIX_PATH")


class RunnerError(Exception):
    """The job failed; ``str(err)`` is one sentence for the user, `details` is for the log."""

    def __init__(self, message: str, details: str = "", failed: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.details = details
        self.failed = failed or []


class RunnerCanceled(RunnerError):
    """The job was cancelled by the user; the worker is gone and no partial files remain."""


def default_python() -> str:
    """The engine's interpreter without settings: $EOEMBED_PYTHON, else a checkout's .venv, else "".

    Never QGIS's own interpreter: on Windows and macOS ``sys.executable`` is the QGIS program,
    and QGIS's Python must not load the engine anyway.
    """
    env = os.environ.get("EOEMBED_PYTHON")
    if env:
        return env
    repo = Path(__file__).resolve().parents[2]
    for cand in (repo / ".venv" / "bin" / "python", repo / ".venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return str(cand)
    return ""


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the worker runs with: QGIS's library paths removed, `extra` added."""
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    env.update({k: v for k, v in (extra or {}).items() if v})
    return env


def _start(python: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    if not python:
        raise RunnerError("the eoembed engine is not set up yet; run eoembed ▸ Set up the engine "
                          "(or choose an engine Python in Settings ▸ Options ▸ eoembed)")
    if not Path(python).exists() and shutil.which(python) is None:
        raise RunnerError(
            f"the engine Python {python!r} does not exist; run eoembed ▸ Set up the engine "
            "or choose another one in Settings ▸ Options ▸ eoembed"
        )
    kwargs: dict[str, Any] = {}
    if os.name == "posix":
        kwargs["start_new_session"] = True  # own process group: killpg reaches its children
    else:  # pragma: no cover - Windows
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    try:
        return subprocess.Popen(
            [python, "-u", str(WORKER), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8", errors="replace", **kwargs,
        )
    except OSError as exc:
        raise RunnerError(f"could not start the engine Python {python!r} ({exc.strerror})", str(exc)) from exc


def kill(proc: subprocess.Popen) -> None:
    """Kill the worker's whole process group and reap it (returns within about a second)."""
    if proc.poll() is None:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - the kernel did not reap it in time
        proc.kill()


def _pump(stream: Any, sink: Callable[[str], None]) -> None:
    for line in iter(stream.readline, ""):
        sink(line.rstrip("\n"))
    stream.close()


def _supervise(
    proc: subprocess.Popen,
    on_event: Callable[[dict[str, Any]], None],
    is_canceled: Callable[[], bool],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str]]:
    """Read the worker's lines until it exits; returns (result, error, last stderr lines)."""
    lines: queue.Queue[str | None] = queue.Queue()
    err_tail: collections.deque[str] = collections.deque(maxlen=40)
    t_out = threading.Thread(target=_pump, args=(proc.stdout, lines.put), daemon=True)
    t_err = threading.Thread(target=_pump, args=(proc.stderr, err_tail.append), daemon=True)
    t_out.start()
    t_err.start()
    result = error = None
    while True:
        if is_canceled():
            kill(proc)
            raise RunnerCanceled("the job was cancelled")
        try:
            line = lines.get(timeout=POLL_S)
        except queue.Empty:
            if proc.poll() is not None and not t_out.is_alive() and lines.empty():
                break
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            err_tail.append(line)  # stray prints of libraries: keep them for the details
            continue
        if not isinstance(msg, dict):
            continue
        if msg.get("event") == "result":
            result = msg
        elif msg.get("event") == "error":
            error = msg
        else:
            on_event(msg)
    proc.wait()
    t_err.join(timeout=1)
    return result, error, list(err_tail)


def _crash(proc: subprocess.Popen, tail: list[str]) -> RunnerError:
    code = proc.returncode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    last = next((ln for ln in reversed(tail) if ln.strip()), "")
    hint = f": {last.strip()[:200]}" if last else ""
    return RunnerError(f"the engine worker {how} without a result{hint}", "\n".join(tail))


def run_job(
    job: dict[str, Any],
    on_progress: Callable[[float, str], None],
    is_canceled: Callable[[], bool],
    python: str | None = None,
    *,
    env: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run `job` in a worker process and return its result dict.

    ``{"pooled": gpkg path or None, "geoparquet": path or None, "grids": [{"id", "path",
    "pca_path"}], "failed": [{"id", "message"}], "model", "crs", "output", "dim"}``.
    `on_progress(percent, text)` is called from this thread; `is_canceled()` is polled at least
    every 0.1 s and, when true, the worker's process group is killed and :class:`RunnerCanceled`
    raised. A worker that fails raises :class:`RunnerError` (one sentence + ``details``).
    `env` adds variables (HF_HOME, …); `on_start(pid)` receives the worker's process id.
    """
    python = python or default_python()
    tmp = Path(tempfile.mkdtemp(prefix="eoembed-job-"))
    stage = Path(job["out_dir"]) / f".{job['name']}.part"
    proc = None
    try:
        job_file = tmp / "job.json"
        job_file.write_text(json.dumps(job))
        proc = _start(python, [str(job_file)], worker_env(env))
        if on_start is not None:
            on_start(proc.pid)

        def on_event(msg: dict[str, Any]) -> None:
            if msg.get("event") == "progress":
                total = max(int(msg.get("total") or 1), 1)
                pct = 100.0 * min(int(msg.get("done") or 0), total) / total
                on_progress(pct, str(msg.get("text", "")))

        result, error, tail = _supervise(proc, on_event, is_canceled)
        if error is not None:
            raise RunnerError(str(error.get("message") or "the engine failed"),
                              str(error.get("details") or "\n".join(tail)), error.get("failed"))
        if result is None or proc.returncode != 0:
            raise _crash(proc, tail)
        result.pop("event", None)
        on_progress(100.0, "done")
        return result
    finally:
        if proc is not None and proc.poll() is None:
            kill(proc)
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run_worker_command(args: str | list[str], python: str | None = None, timeout: float = 120.0,
                       env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``worker.py --models``, ``--probe`` or ``--text MODEL TEXT`` and return its result.

    Raises RunnerError (one sentence + details) when the worker fails or does not answer.
    """
    python = python or default_python()
    proc = _start(python, [args] if isinstance(args, str) else list(args), worker_env(env))
    deadline = time.monotonic() + timeout
    try:
        result, error, tail = _supervise(proc, lambda _m: None, lambda: time.monotonic() > deadline)
    except RunnerCanceled as exc:
        raise RunnerError(f"the engine Python {python!r} did not answer within {timeout:g} s") from exc
    if error is not None:
        raise RunnerError(str(error.get("message")), str(error.get("details", "")))
    if result is None:
        raise _crash(proc, tail)
    result.pop("event", None)
    return result
