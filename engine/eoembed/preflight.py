"""Run-level checks before any item: a request that can never succeed fails once, with one sentence.

A batch isolates and retries each item, which is right for a place whose imagery is cloudy or a
read that times out, and wrong for a request that no rerun can fix: a model whose weights are
missing, corrupt or unreachable, imagery that lacks the bands a model reads, a time window no
imagery falls in. :func:`preflight` finds those before the first fetch and raises the typed error
(ModelError/WeightsError, ProviderError) that names the cause, instead of N item failures that
each say "rerun to retry".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import shapely

from .errors import EoembedError, ModelError, ProviderError
from .specs import TemporalSpec


def preflight(jobs: Sequence[Any], provider: Any, temporal: TemporalSpec, places: Sequence[Any] = ()) -> None:
    """Load every model once and check that the imagery can serve the run at all.

    `jobs` are the run's model jobs (``.key``, ``.embedder()``, ``.sensor``); `provider` the
    opened imagery source; `places` the run's places (``.spatial``). Raises the first
    run-level error found.
    """
    for job in jobs:
        check_model_loads(job.key, job.embedder())
    # precomputed products read their own tiles; the imagery source serves the other models
    imagery_jobs = [job for job in jobs if not getattr(job.embedder(), "precomputed", False)]
    if imagery_jobs:
        check_imagery(getattr(provider, "base", provider), temporal,
                      {job.key: tuple(job.sensor.bands or ()) for job in imagery_jobs}, [p.spatial for p in places])


def check_model_loads(key: str, embedder: Any) -> None:
    """Build the network and load its weights now (they are loaded once and kept)."""
    try:
        embedder.load()
    except EoembedError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure is the model's
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            f"model {key!r} could not be loaded ({type(exc).__name__}: {line}); check its weights "
            "and installation (nothing was embedded)"
        ) from None


def check_imagery(provider: Any, temporal: TemporalSpec, bands: dict[str, tuple[str, ...]],
                  spatials: Sequence[Any] = ()) -> None:
    """For an indexed source (local files): some place lies over the imagery, some scene falls
    in `temporal`, and the scenes there have each model's bands. A remote catalogue (a provider
    with ``connect()``) is opened and asked for its collection; its bands and dates are only
    known per place, so those are checked per item.
    """
    connect = getattr(provider, "connect", None)
    if callable(connect):  # a remote catalogue: reachable, and serving the collection
        connect()
    scenes = getattr(provider, "scenes", None)
    if not scenes:
        return
    note = provider.skipped_note() if hasattr(provider, "skipped_note") else ""
    if spatials:
        tree = shapely.STRtree([s.footprint for s in scenes])
        over = (len(tree.query(shapely.box(*sp.shape("EPSG:4326").bounds), predicate="intersects")) for sp in spatials)
        if not any(over):  # stops at the first place over imagery
            w, s_, e, n = shapely.union_all([s.footprint for s in scenes]).bounds
            raise ProviderError(
                f"no local imagery covers the places: none of the {len(spatials)} lies over the {len(scenes)} "
                f"indexed local scene(s) "
                f"(lon/lat bounds {w:.5f}, {s_:.5f}, {e:.5f}, {n:.5f}){note}; add imagery for the places or "
                "choose places inside it"
            )
    undated_ok = getattr(provider, "undated", "include") == "include"
    in_window = [s for s in scenes if (s.date is None and undated_ok) or (s.date and temporal.contains(s.date))]
    if not in_window:
        dates = sorted({s.date.isoformat() for s in scenes if s.date})
        shown = ", ".join(dates[:6]) + (f" … {dates[-1]}" if len(dates) > 6 else "")
        raise ProviderError(
            f"none of the {len(scenes)} local scenes is dated in {temporal.start}..{temporal.end} (end "
            f"excluded); their dates are {shown or 'unknown'}{note}: choose a window they fall in"
        )
    have = {b for s in in_window for b in s.bands}
    for key, wanted in bands.items():
        missing = [b for b in wanted if b not in have]
        if missing:
            raise ProviderError(
                f"model {key!r} reads bands {', '.join(wanted)}, but the local imagery in the window has no "
                f"{', '.join(missing)} (it has {', '.join(sorted(have))}){note}; add those bands or choose "
                "a model that needs fewer"
            )
