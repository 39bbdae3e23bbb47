"""The output folder: created or reused up front, with one sentence when that cannot be done.

Every command writes into one folder. :func:`prepare_out_dir` checks it before any work starts
(a path that is a file, a parent that is a file, a folder that cannot be created or written,
``/proc`` …) and raises :class:`ExportError` naming the folder and the reason.
:func:`output_folder` also removes the folders it created when the work inside fails before
writing anything, so a failed command leaves no empty folder behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ExportError

_FIX = "choose a folder you can write to"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def prepare_out_dir(path: str | os.PathLike) -> tuple[Path, list[Path]]:
    """Create `path` (and missing parents) or reuse it; check it can be written.

    Returns the folder and the folders this call created (deepest last).
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"the output folder {out} is an existing file; give a folder (new or existing) instead")
    created: list[Path] = []
    probe = out
    while not probe.exists() and probe != probe.parent:
        created.insert(0, probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ExportError(f"cannot create the output folder {out}: {probe} is a file, not a folder; {_FIX}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise ExportError(f"cannot create the output folder {out} ({_reason(exc)}); {_FIX}") from None
    try:
        with tempfile.TemporaryFile(dir=out, prefix=".eoembed-write-check-"):
            pass
    except OSError as exc:
        _remove_empty(created)
        raise ExportError(f"cannot write into the output folder {out} ({_reason(exc)}); {_FIX}") from None
    return out, created


def _remove_empty(folders: list[Path]) -> None:
    for f in reversed(folders):
        try:
            f.rmdir()  # only succeeds when empty
        except OSError:
            return


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``with output_folder(p) as out:`` — :func:`prepare_out_dir`, and when the body raises,
    the folders created here are removed again if nothing was written into them."""
    out, created = prepare_out_dir(path)
    try:
        yield out
    except BaseException:
        _remove_empty(created)
        raise
