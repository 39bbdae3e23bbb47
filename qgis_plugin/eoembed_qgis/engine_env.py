"""The managed engine environment: find a real Python, make a venv, install the bundled wheel.

No Qt here (the QgsTask that runs it lives in :mod:`engine_setup`), so every step can be run
and tested as plain functions::

    base = find_base_python()
    plan = install_plan(base, target, wheel, find_links=None, cuda=False)
    for step in plan: run_step(step, log=print, is_canceled=lambda: False)

The interpreter is never QGIS's executable: on Windows and macOS ``sys.executable`` inside QGIS
is the QGIS program itself, so the Python beside ``sys.prefix`` (OSGeo4W, the macOS bundle) is
used; on Linux the system ``python3``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: the plugin's bundled engine wheels (put there by scripts/package_plugin)
WHEELS = Path(__file__).resolve().with_name("wheels")
#: the oldest Python the engine supports
MIN_PYTHON = (3, 10)
#: where CPU-only PyTorch wheels live for Linux (PyPI's Linux wheels carry CUDA, ~2.5 GB more)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: environment variables of QGIS that must not reach pip or the new interpreter
DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PROJ_DATA", "PROJ_LIB", "GDAL_DATA",
            "GDAL_DRIVER_PATH", "QGIS_PREFIX_PATH", "VIRTUAL_ENV")


class SetupError(Exception):
    """A set-up step failed; one sentence for the user, the tail of the log in `details`."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class SetupCanceled(SetupError):
    """The user cancelled; the half-made environment is removed."""


@dataclass
class Step:
    """One command of the set-up, with what to show while it runs."""

    title: str
    argv: list[str]
    weight: float = 1.0


def bundled_wheel() -> Path | None:
    """The newest eoembed wheel inside the plugin, or None (a plugin run from a checkout)."""
    found = sorted(WHEELS.glob("eoembed-*.whl"))
    return found[-1] if found else None


def venv_python(target: Path) -> Path:
    """The interpreter of the venv at `target`."""
    return target / "Scripts" / "python.exe" if os.name == "nt" else target / "bin" / "python"


def _candidates() -> list[str]:
    """Interpreters to try, best first, for this platform."""
    prefix = [Path(sys.prefix), Path(sys.exec_prefix), Path(getattr(sys, "base_prefix", sys.prefix))]
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    out: list[Path | str | None] = []
    if os.name == "nt":  # OSGeo4W / the standalone installer: <prefix>\python.exe
        out += [p / "python.exe" for p in prefix] + [shutil.which("python3"), shutil.which("python")]
    elif sys.platform == "darwin":  # QGIS.app/Contents/MacOS/bin/python3 or Frameworks/…/bin
        out += [p / "bin" / f"python{ver}" for p in prefix] + [p / "bin" / "python3" for p in prefix]
        exe = Path(sys.executable).resolve()
        out += [exe.parent / "bin" / "python3", exe.parent.parent / "MacOS" / "bin" / "python3"]
        out += [shutil.which("python3")]
    else:  # Linux and other Unixes: the system Python QGIS is built against
        out += [Path("/usr/bin") / f"python{ver}", Path("/usr/bin/python3"), shutil.which("python3")]
    seen, result = set(), []
    for c in out:
        if c and str(c) not in seen:
            seen.add(str(c))
            result.append(str(c))
    return result


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without QGIS's Python and library paths."""
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra or {})
    return env


def check_python(python: str) -> tuple[bool, str]:
    """(usable as a venv base, what it is or why not): a real Python ≥ 3.10 with venv, not QGIS."""
    name = Path(python).name.lower()
    if "qgis" in name:
        return False, f"{python} is the QGIS program, not a Python interpreter"
    if not Path(python).is_file():
        return False, f"{python} does not exist"
    code = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{python} could not be run ({exc})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"{python} cannot make virtual environments ({last}); install python3-venv"
    version = proc.stdout.split()[0]
    if tuple(int(v) for v in version.split(".")) < MIN_PYTHON:
        return False, f"{python} is Python {version}; the engine needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
    return True, f"{python} (Python {version})"


def find_base_python(preferred: str | None = None) -> str:
    """A Python to build the engine's venv from (`preferred` first); SetupError naming what was tried."""
    tried = []
    for cand in ([preferred] if preferred else []) + _candidates():
        ok, why = check_python(cand)
        if ok:
            return cand
        tried.append(why)
    raise SetupError("no usable Python was found to build the engine environment; install Python "
                     f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ (with venv) or choose one in Settings",
                     "\n".join(tried))


def install_plan(base: str, target: Path, wheel: Path, *, find_links: str | None = None,
                 cuda: bool = False, recreate: bool = False) -> list[Step]:
    """The commands that make (or repair/update) the engine venv at `target` from `wheel`.

    `find_links`: a folder of wheels to install from without any index (offline). Otherwise
    pip's configured indexes are used; on Linux PyTorch comes from the CPU-only index unless
    `cuda` is asked for.
    """
    py = str(venv_python(target))
    steps = []
    if recreate or not venv_python(target).exists():
        steps.append(Step("creating the virtual environment", [base, "-m", "venv", "--clear", str(target)], 1))
    # no bytecode compilation now (PyTorch has thousands of modules): the first import compiles
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", "--no-compile"]
    if find_links:
        pip += ["--no-index", "--find-links", find_links]
    elif sys.platform.startswith("linux") and not cuda:
        steps.append(Step("installing PyTorch (CPU)", pip + ["torch", "--index-url", TORCH_CPU_INDEX], 6))
    steps.append(Step(f"installing {wheel.name} and its dependencies", pip + ["--upgrade", str(wheel)], 4))
    steps.append(Step("checking what the engine imports", [py, "-c", VERIFY], 1))
    return steps


#: what a finished environment must import (the worker's own needs)
VERIFY = ("import eoembed, torch, numpy, rasterio, pyproj, shapely, pyarrow, pyogrio, xarray; "
          "print('eoembed', eoembed.__version__ if hasattr(eoembed, '__version__') else '', 'torch', torch.__version__)")


def run_step(step: Step, log: Callable[[str], None], is_canceled: Callable[[], bool],
             env: dict[str, str] | None = None) -> None:
    """Run one step, streaming its output to `log`; SetupCanceled/SetupError on cancel/failure."""
    log(f"$ {' '.join(step.argv)}")
    kwargs: dict = {"start_new_session": True} if os.name == "posix" else {}
    proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", errors="replace", env=clean_env(env), **kwargs)
    tail: list[str] = []
    import queue
    import threading

    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in iter(proc.stdout.readline, ""):
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        if is_canceled():
            proc.kill()
            proc.wait()
            raise SetupCanceled("the engine set-up was cancelled")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        tail = (tail + [line])[-60:]
        log(line)
    if proc.wait() != 0:
        last = next((ln for ln in reversed(tail) if ln.strip()), "")
        raise SetupError(f"{step.title} failed: {last.strip()[:300]}", "\n".join(tail))


def set_up(base: str, target: Path, wheel: Path, log: Callable[[str], None],
           is_canceled: Callable[[], bool] = lambda: False, progress: Callable[[float], None] = lambda p: None,
           *, find_links: str | None = None, cuda: bool = False, recreate: bool = False) -> str:
    """Make (or repair/update) the engine venv; returns its Python. A failed first set-up is removed."""
    fresh = not venv_python(target).exists()
    steps = install_plan(base, target, wheel, find_links=find_links, cuda=cuda, recreate=recreate)
    total, done = sum(s.weight for s in steps), 0.0
    t0 = time.monotonic()
    try:
        for s in steps:
            log(f"— {s.title}")
            run_step(s, log, is_canceled)
            done += s.weight
            progress(100.0 * done / total)
    except SetupError:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        raise
    log(f"— done in {time.monotonic() - t0:.0f} s")
    return str(venv_python(target))
