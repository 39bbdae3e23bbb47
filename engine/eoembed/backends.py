"""Choosing the imagery source from ``backend=`` / ``source=`` and recording the choice.

``backend="auto"`` picks, in this order: local imagery when it is given (``source=`` a path,
``source_options={"paths": ...}`` or the ``EOEMBED_IMAGERY`` environment variable, a list of
files or folders joined by the path separator), else a STAC API (Earth Search), else Google
Earth Engine when credentials exist on this machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SpecError
from .providers import PROVIDERS, Provider
from .sensors import COLLECTION_IDS
from .specs import SensorSpec

BACKENDS = ("auto", *PROVIDERS)
#: Environment variable naming local imagery that ``backend="auto"`` uses first.
IMAGERY_ENV = "EOEMBED_IMAGERY"


def _env_paths() -> list[str]:
    raw = os.environ.get(IMAGERY_ENV, "").strip()
    return [p for p in raw.split(os.pathsep) if p.strip()]


def _ee_credentials_exist() -> bool:
    if importlib.util.find_spec("ee") is None:
        return False
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    return (Path("~/.config/earthengine/credentials").expanduser().is_file()
            or Path("~/.config/gcloud/application_default_credentials.json").expanduser().is_file())


def choose_source(
    source: str | Path | Provider | None,
    backend: str | None,
    source_options: dict[str, Any] | None,
) -> tuple[str | Path | Provider, dict[str, Any], str]:
    """The source to open, its options and why it was chosen.

    `source` (a name, a path or a Provider) wins when given; `backend` then must agree with it.
    """
    options = dict(source_options or {})
    name = None if backend is None else str(backend).strip().lower()
    if name is not None and name not in BACKENDS:
        raise SpecError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if source is not None:
        kind = source.name if isinstance(source, Provider) else (
            source if isinstance(source, str) and source in PROVIDERS else "local")
        if name not in (None, "auto", kind):
            raise SpecError(f"backend={backend!r} contradicts source={source!r} (a {kind} source); give one of them")
        return source, options, "source given"
    if name in (None, "auto"):
        if options.get("paths"):
            return "local", options, "auto: local imagery given in source_options"
        env = _env_paths()
        if env:
            return "local", {**options, "paths": env}, f"auto: local imagery from ${IMAGERY_ENV}"
        if importlib.util.find_spec("pystac_client") is not None:
            return "stac", options, "auto: no local imagery given, so the STAC API (Earth Search)"
        if _ee_credentials_exist():
            return "gee", options, "auto: no local imagery or STAC client, Earth Engine credentials found"
        raise SpecError(
            f"backend='auto' found no imagery: give source=<folder of GeoTIFFs> (or set ${IMAGERY_ENV}), "
            "install the STAC extra, or authenticate Earth Engine"
        )
    if name == "local" and not options.get("paths"):
        env = _env_paths()
        if not env:
            raise SpecError(
                f"backend='local' needs imagery: pass source=<files or folder> or set ${IMAGERY_ENV}"
            )
        return "local", {**options, "paths": env}, f"local imagery from ${IMAGERY_ENV}"
    return name, options, f"backend={name!r}"  # type: ignore[return-value]


def open_source(
    source: str | Path | Provider | None,
    backend: str | None,
    source_options: dict[str, Any] | None,
    embedders: Sequence[Any] = (),
) -> tuple[Provider, dict[str, Any]]:
    """The opened provider (product models routed to their readers) and the ``meta["backend"]``
    record of how it was chosen."""
    from .products import NoImagery, open_for, route_products

    requested = backend or ("source" if source is not None else "auto")
    if source is None and requested == "auto" and _all_products(embedders):
        provider: Provider = NoImagery()
        why = "auto: every model is a precomputed product, no imagery is read"
    else:
        chosen, options, why = choose_source(source, backend, source_options)
        provider = open_for(chosen, options, embedders)
    record = {"requested": requested, "source": provider.name, "why": why}
    return route_products(provider, embedders), record


def _all_products(embedders: Sequence[Any]) -> bool:
    return bool(embedders) and all(getattr(e, "precomputed", False) for e in embedders)


def record_backend(out: Path, record: dict[str, Any]) -> None:
    """Add how the source was chosen to an export's ``run.json`` (written atomically)."""
    from .export.atomic import atomic_path
    from .export.layout import RUN_NAME

    path = out / RUN_NAME
    if not path.is_file():
        return
    info = json.loads(path.read_text())
    info["backend"] = record
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=str))


def collection_record(sensor: SensorSpec | None, provider: Provider) -> dict[str, Any] | None:
    """``meta["collection"]``: the collection asked for, eoembed's name and the source's id."""
    if sensor is None:
        return None
    ids = COLLECTION_IDS.get(sensor.collection, {})
    return {
        "requested": sensor.requested_collection or sensor.collection,
        "collection": sensor.collection,
        "source_id": ids.get(provider.name, sensor.collection),
    }


#: Where eoembed deliberately departs from rs-embed's defaults; recorded in every result's meta.
CONVENTIONS: dict[str, str] = {
    "footprint": "PointBuffer buffer_m is ground metres in the place's UTM zone, not EPSG:3857 units "
                 "(which shrink on the ground by cos(latitude))",
    "grid": "grid outputs are georeferenced: x/y are pixel-centre coordinates in the result's CRS, "
            "not row/column indices",
    "inputs": "inputs get the model's own normalisation (meta['preprocessing']) before the network",
    "input_prep": "default input_prep is 'resize' (one forward pass), not 'tile'",
}
