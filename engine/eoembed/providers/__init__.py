"""Imagery providers: local files, STAC APIs and Google Earth Engine, behind one contract."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .base import FetchRequest, Observation, Provider
from .redact import install_log_redaction

install_log_redaction()  # every log record of every library is redacted from here on

__all__ = ["FetchRequest", "Observation", "Provider", "open_provider", "PROVIDERS"]

#: source name → "module:Class" inside eoembed.providers (imported on first use)
PROVIDERS: dict[str, str] = {
    "local": "local:LocalProvider",
    "stac": "stac:StacProvider",
    "gee": "gee:EarthEngineProvider",
}


def open_provider(source: str | Path | Provider, **options: Any) -> Provider:
    """A provider from a name ("local", "stac", "gee"), a path (local imagery) or an instance.

    ``open_provider("local", paths=["scenes/"])``, ``open_provider("scenes/")`` and
    ``open_provider("stac", url="earth-search")`` are all valid.
    """
    if isinstance(source, Provider):
        if options:
            raise SpecError("options cannot be applied to a Provider instance; pass them to its constructor")
        return source
    if isinstance(source, Path) or (isinstance(source, str) and source not in PROVIDERS):
        path = Path(source).expanduser()
        if not path.exists():
            raise SpecError(
                f"source={str(source)!r} is neither a provider ({', '.join(PROVIDERS)}) nor an existing "
                "file or folder of imagery"
            )
        from .local import LocalProvider

        return LocalProvider(path, **options)
    if source == "local" and "paths" not in options:
        raise SpecError("source='local' needs imagery: pass paths=[files or folders], or give the path as source")
    module, cls = PROVIDERS[source].split(":")
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise SpecError(
            f"source={source!r} needs an optional dependency that is not installed ({exc.name}); "
            f"install it with: pip install 'eoembed[{source}]'"
        ) from exc
    provider_cls = getattr(mod, cls)
    try:
        return provider_cls(**options)
    except TypeError as exc:
        raise SpecError(f"source={source!r} does not take these options: {exc}") from exc
