"""EmbedTask: a QgsTask that supervises the engine's worker process and adds its results.

``run()`` (a background thread) only supervises the worker through :mod:`runner`; it never
touches widgets or the project. ``finished()`` (the main thread) turns results into layers, or
failures into one message bar line with the details in the log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsTask

from . import messages
from .runner import RunnerCanceled, RunnerError, run_job


class EmbedTask(QgsTask):
    """Embed a snapshot of features (a job dict) in a worker process; add the results as layers."""

    def __init__(
        self,
        job: dict[str, Any],
        iface: Any = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
        on_done: Callable[[EmbedTask], None] | None = None,
    ) -> None:
        n = len(job.get("places", []))
        title = f"eoembed: {job['model']} on {n} feature{'s' * (n != 1)}"
        super().__init__(title, QgsTask.Flag.CanCancel)
        self.title = title
        self.job = job
        self.iface = iface
        self.python = python
        self.env = env
        self.on_done = on_done
        self.result: dict[str, Any] | None = None
        self.error: RunnerError | None = None
        self.canceled = False
        self.worker_pid: int | None = None
        self.status_text = ""
        #: every step text the worker reported, in order (what the task list showed)
        self.steps: list[str] = []
        self.layers: list[Any] = []
        #: None while running, then "done", "canceled" or "failed" (readable after QGIS deletes the task)
        self.outcome: str | None = None

    # -- background thread --------------------------------------------------------------
    def _progress(self, pct: float, text: str) -> None:
        """The worker's progress and step text, shown in QGIS's task list ("… — embedded 8 of 40")."""
        if text and text != self.status_text:
            self.status_text = text
            self.steps.append(text)
            self.setDescription(f"{self.title} — {text}")
        self.setProgress(pct)

    def _started(self, pid: int) -> None:
        self.worker_pid = pid

    def run(self) -> bool:
        try:
            self.result = run_job(self.job, self._progress, self.isCanceled, self.python,
                                  env=self.env, on_start=self._started)
            return True
        except RunnerCanceled:
            self.canceled = True
            return False
        except RunnerError as exc:
            self.error = exc
            return False
        except Exception as exc:  # noqa: BLE001 - never let a traceback reach QGIS's dialog
            import traceback

            self.error = RunnerError(f"the eoembed task failed unexpectedly ({type(exc).__name__}: {exc})",
                                     traceback.format_exc())
            return False

    # -- main thread --------------------------------------------------------------------
    def finished(self, result: bool) -> None:  # noqa: FBT001 - QgsTask's signature
        try:
            if result and self.result is not None:
                self.outcome = "done"
                self._apply()
            elif self.canceled or self.isCanceled():
                self.canceled = True
                self.outcome = "canceled"
                messages.info(self.iface, "the eoembed job was cancelled; nothing was added", Qgis.Warning)
            else:
                self.outcome = "failed"
                err = self.error or RunnerError("the eoembed job stopped without a result")
                messages.error(self.iface, str(err), err.details)
        except Exception as exc:  # noqa: BLE001
            import traceback

            self.outcome = "failed"
            messages.error(self.iface, f"eoembed could not add the results ({exc})", traceback.format_exc())
        finally:
            if self.on_done is not None:
                self.on_done(self)

    def _apply(self) -> None:
        from .layers import add_results

        res = self.result or {}
        from qgis.core import QgsProject

        source = QgsProject.instance().mapLayer(self.job.get("layer_id", "")) if self.job.get("layer_id") else None
        self.layers = add_results(res, self.job, source=source)
        failed = res.get("failed") or []
        kept = [p for p in (res.get("pooled"), res.get("geoparquet")) if p]
        kept += [g["path"] for g in res.get("grids", [])]
        where = str(Path(kept[0]).parent) if kept else self.job["out_dir"]
        if failed:
            messages.log("\n".join(f"feature {f['id']}: {f['message']}" for f in failed), Qgis.Warning)
            messages.info(
                self.iface,
                f"embedded {len(self.job['places']) - len(failed)} of {len(self.job['places'])} features "
                f"({len(failed)} failed, e.g. {failed[0]['id']}: {failed[0]['message']}); files in {where}",
                Qgis.Warning, 0,
            )
        else:
            messages.info(self.iface, f"embedded {len(self.job['places'])} features with {res.get('model')}; "
                          f"files in {where}", Qgis.Success)
