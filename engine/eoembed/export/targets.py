"""Where and how ``export_batch`` writes when called with ``target=`` / ``config=`` keywords.

eoembed writes one export folder (per-model GeoParquet + NPZ, grids as GeoTIFF/NetCDF, a
manifest); ``ExportTarget.combined(path)`` and ``ExportTarget.per_item(folder, names)`` both
name that folder, ``per_item`` also naming the places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..specs import FetchSpec, SensorSpec

_EXPORT_SUFFIXES = (".npz", ".json", ".parquet", ".nc")


@dataclass(frozen=True)
class ExportTarget:
    """The export folder (`out`) and, for ``per_item``, one name per place."""

    out: Path
    layout: str = "combined"
    names: tuple[str, ...] | None = None

    @classmethod
    def combined(cls, out_file: str | Path) -> ExportTarget:
        """One export at `out_file` (a suffix such as ``.npz`` is dropped: it names a folder)."""
        p = Path(out_file)
        return cls(p.with_suffix("") if p.suffix.lower() in _EXPORT_SUFFIXES else p, "combined")

    @classmethod
    def per_item(cls, out_dir: str | Path, *, names: Sequence[str] | None = None) -> ExportTarget:
        """An export in `out_dir` whose places are called `names` (in order)."""
        return cls(Path(out_dir), "per_item", tuple(str(n) for n in names) if names is not None else None)


@dataclass(frozen=True)
class ExportConfig:
    """Run settings: chunking, workers, retries, progress. eoembed always writes embeddings and a
    manifest and always resumes; it does not store the input pixels (`save_inputs` is recorded)."""

    format: str = "npz"
    save_inputs: bool = True
    save_embeddings: bool = True
    save_manifest: bool = True
    fail_on_bad_input: bool = False
    chunk_size: int = 16
    infer_batch_size: int | None = None
    num_workers: int | None = None  # None: eoembed's thread budget chooses
    continue_on_error: bool = False
    max_retries: int = 0
    retry_backoff_s: float = 0.0
    resume: bool = True
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.format not in ("npz", "netcdf", "parquet"):
            raise SpecError(f"format={self.format!r} must be 'npz', 'netcdf' or 'parquet' (eoembed writes all of them)")
        if not self.save_embeddings:
            raise SpecError("save_embeddings=False would write nothing; eoembed exports always hold the embeddings")

    def run_options(self) -> dict[str, Any]:
        """The keywords of :func:`eoembed.pipeline.run_export` these settings mean."""
        opts: dict[str, Any] = {
            "chunk_size": self.chunk_size, "workers": self.num_workers, "retries": self.max_retries,
            "backoff": self.retry_backoff_s, "continue_on_error": self.continue_on_error and not self.fail_on_bad_input,
        }
        if self.show_progress:
            opts["progress"] = _print_progress
        return opts


def _print_progress(done: int, total: int, info: Any = None) -> None:
    print(f"eoembed export: {done}/{total}", flush=True)


@dataclass(frozen=True)
class ExportModelRequest:
    """One model of an export with its own configuration (and, at most one for the run, sensor)."""

    name: str
    sensor: SensorSpec | None = None
    fetch: FetchSpec | None = None
    modality: str | None = None
    model_config: dict[str, Any] | None = field(default=None, hash=False)

    @classmethod
    def configure(cls, name: str, **model_config: Any) -> ExportModelRequest:
        return cls(name, model_config=dict(model_config))


def export_models(models: Any, infer_batch_size: int | None) -> tuple[list[Any], list[SensorSpec | FetchSpec]]:
    """The models as run_export takes them (``(id, config)`` where configured) and the sensors or
    fetch settings that ExportModelRequests ask for."""
    single = isinstance(models, (str, ExportModelRequest)) or not isinstance(models, Sequence)
    items = [models] if single else list(models)
    out: list[Any] = []
    sensors: list[SensorSpec | FetchSpec] = []
    for m in items:
        if isinstance(m, ExportModelRequest):
            if m.modality is not None:
                raise SpecError(
                    f"modality={m.modality!r} for {m.name!r}: eoembed models read Sentinel-2 L2A only; drop modality"
                )
            cfg = dict(m.model_config or {})
            sensors += [s for s in (m.sensor, m.fetch) if s is not None]
            m = (m.name, cfg) if cfg else m.name
        if infer_batch_size is not None:
            if isinstance(m, str):
                m = (m, {})
            if isinstance(m, tuple):
                m = (m[0], {"batch_size": infer_batch_size, **m[1]})
        out.append(m)
    return out, sensors


def export_places(spatials: Sequence[Any], target: ExportTarget) -> Any:
    """The places as run_export takes them: ``{name: spec}`` when the target names them."""
    if target.names is None:
        return list(spatials)
    if len(target.names) != len(spatials):
        raise SpecError(f"ExportTarget names {len(target.names)} places but {len(spatials)} spatials were given")
    if len(set(target.names)) != len(target.names):
        raise SpecError("ExportTarget names a place twice; give each place its own name")
    return dict(zip(target.names, spatials))
