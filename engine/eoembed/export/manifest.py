"""The run manifest: one JSON line per item and model (ok / failed, stage, error), fsynced.

JSON lines survive SIGKILL well: every batch of records is appended with one ``write`` and
an ``fsync``, so a crash can leave at most one truncated last line, which readers skip (and
the next writer closes with a newline before appending). The latest record of a fingerprint
wins, so a rerun that retries an item simply appends its new state.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..providers.redact import scrub

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    """Append-only JSON-lines record of a batch export (thread-safe within one process)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record in file order; truncated or garbled lines are skipped."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(rec, dict) and "fp" in rec:
                    yield rec

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest record of every fingerprint."""
        return {rec["fp"]: rec for rec in self.records()}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append `records` in one write and fsync them (durable once this returns)."""
        lines = [json.dumps(scrub(r), default=str, separators=(",", ":")) for r in records]
        if not lines:
            return
        blob = ("\n".join(lines) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(self.path, "ab+") as fh:
                    if fh.tell() > 0:
                        fh.seek(-1, os.SEEK_END)
                        if fh.read(1) != b"\n":  # a crash cut the last line: close it off
                            blob = b"\n" + blob
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise ExportError(f"could not append to the manifest {self.path} ({exc}); check the disk") from exc


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The latest record per item and model of a manifest file (or of an export folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.exists():
        raise ExportError(f"no manifest at {p}; give an export folder written by export_batch")
    return list(Manifest(p).latest().values())
