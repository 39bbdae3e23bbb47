"""Compositing per-scene pixel stacks: median or mosaic, over the whole window or per frame.

Shared by every provider so that a composite means the same thing whatever the source.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from ..errors import ProviderError
from ..grid import roi_mask
from ..specs import FrameSpec, TemporalSpec
from .base import FetchRequest, Observation, make_observation


def composite(
    stack: np.ndarray,
    valid: np.ndarray,
    dates: Sequence[date],
    method: str,
    fill_value: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Combine scenes ``(N, C, H, W)`` with validity ``(N, H, W)`` into one ``(C, H, W)`` image.

    ``median``: per-pixel median of the valid scenes. ``mosaic``: per pixel, the most recent
    valid scene. Pixels valid in no scene get `fill_value` and validity False.
    """
    n, c, h, w = stack.shape
    if n == 0:
        return np.full((c, h, w), fill_value, np.float32), np.zeros((h, w), bool)
    any_valid = valid.any(axis=0)
    if n == 1:
        out = np.where(valid[0][None], stack[0], np.float32(fill_value)).astype(np.float32)
        return out, any_valid
    if method == "median":
        masked = np.where(valid[:, None], stack, np.nan).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels are filled below
            out = np.nanmedian(masked, axis=0)
    elif method == "mosaic":
        order = np.argsort(np.array(dates, dtype="datetime64[D]"), kind="stable")[::-1]
        out = np.full((c, h, w), np.nan, np.float32)
        for i in order:  # newest first; fill only what is still empty
            take = valid[i] & np.isnan(out[0])
            if take.any():
                out[:, take] = stack[i][:, take]
    else:
        raise ValueError(f"unknown composite method {method!r}")
    out = np.where(any_valid[None], out, np.float32(fill_value)).astype(np.float32)
    return out, any_valid


def scene_date(dates: Sequence[date], valid: np.ndarray | None = None) -> date | None:
    """The median acquisition date of the scenes that gave the place a valid pixel (all of
    `dates` when `valid` is None or none did); None for no scenes. An even count takes the
    earlier of the two middle days' midpoint."""
    if valid is not None and len(dates):
        used = [d for d, v in zip(dates, valid) if v.any()]
        dates = used or list(dates)
    if not len(dates):
        return None
    days = sorted(d.toordinal() for d in dates)
    n = len(days)
    mid = days[n // 2] if n % 2 else (days[n // 2 - 1] + days[n // 2]) // 2
    return date.fromordinal(mid)


@dataclass
class Frames:
    """A time series of composites: values ``(T, C, H, W)``, validity ``(T, H, W)``, dates."""

    values: np.ndarray
    valid: np.ndarray
    dates: list[date]
    meta: list[dict]


def frame_series(
    stack: np.ndarray,
    valid: np.ndarray,
    dates: Sequence[date],
    temporal: TemporalSpec,
    frames: FrameSpec,
    method: str,
    fill_value: float,
) -> Frames:
    """Bin scenes into the frames of `frames` over `temporal` and composite each bin.

    A frame's date is the median acquisition date of the scenes composited into it
    (:func:`scene_date`); its bin is recorded beside it, and a bin without scenes is dated by
    its midpoint. Bins with no valid pixel follow ``frames.empty`` (skip, fill, nearest,
    error); what happened is recorded per frame.
    """
    windows = frames.windows(temporal)
    c, h, w = stack.shape[1:] if stack.ndim == 4 else (0, 0, 0)
    vals, vmask, fdates, fmeta = [], [], [], []
    for win in windows:
        idx = [i for i, d in enumerate(dates) if win.contains(d)]
        v, m = composite(stack[idx], valid[idx], [dates[i] for i in idx], method, fill_value)
        when = scene_date([dates[i] for i in idx], valid[idx] if idx else None)
        info = {
            "start": win.start.isoformat(),
            "end": win.end.isoformat(),
            "date": (when or win.midpoint).isoformat(),
            "date_from": "median scene date" if when else "bin midpoint",
            "scenes": [dates[i].isoformat() for i in idx],
            "valid_fraction": float(m.mean()) if m.size else 0.0,
            "status": "ok" if m.any() else "empty",
        }
        vals.append(v)
        vmask.append(m)
        fdates.append(when or win.midpoint)
        fmeta.append(info)
    empty = [i for i, f in enumerate(fmeta) if f["status"] == "empty"]
    if empty and frames.empty == "error":
        first = fmeta[empty[0]]
        raise ProviderError(
            f"{len(empty)} of {len(windows)} frames have no imagery (first: {first['start']} to "
            f"{first['end']}); widen the window, raise cloudy_pct, or choose empty='skip'|'fill'|'nearest'"
        )
    full = [i for i in range(len(windows)) if i not in empty]
    if not full:
        raise ProviderError(
            f"no imagery in any of the {len(windows)} frames between {temporal.start} and {temporal.end}"
        )
    if frames.empty == "skip":
        keep = full
    else:
        keep = list(range(len(windows)))
        for i in empty:
            if frames.empty == "nearest":
                j = min(full, key=lambda k: (abs(k - i), k))
                vals[i], vmask[i] = vals[j].copy(), np.zeros_like(vmask[j])
                fmeta[i]["status"] = f"copied from frame {j}"
            else:
                fmeta[i]["status"] = "filled"
    for i in empty:
        if frames.empty == "skip":
            fmeta[i]["status"] = "skipped"
    return Frames(
        np.stack([vals[i] for i in keep]).astype(np.float32) if keep else np.zeros((0, c, h, w), np.float32),
        np.stack([vmask[i] for i in keep]) if keep else np.zeros((0, h, w), bool),
        [fdates[i] for i in keep],
        fmeta,
    )


def scenes_to_observation(
    stack: np.ndarray,
    valid: np.ndarray,
    dates: Sequence[date],
    bands: Sequence[str],
    request: FetchRequest,
    meta: dict[str, Any],
    what: str,
    roi: np.ndarray | None = None,
    empty: str | None = None,
) -> Observation:
    """Scenes ``(N, C, H, W)`` on the request's grid, dated, made into the request's Observation:
    one composite over the window, or the request's frames; coverage recorded in `meta`.
    `empty`: the provider's own sentence when no pixel is valid (else one naming `what`).

    Shared by the local and STAC providers and user arrays, so that the same pixels give the same input.
    """
    sensor, temporal = request.sensor, request.temporal
    meta = {**meta, "window": temporal.key(), "composite": sensor.composite}
    if request.frames is None:
        values, ok = composite(stack, valid, dates, sensor.composite, sensor.fill_value)
        values, ok, frame_dates = values[None], ok[None], [scene_date(dates, valid) or temporal.midpoint]
    else:
        fr = frame_series(stack, valid, dates, temporal, request.frames, sensor.composite, sensor.fill_value)
        values, ok, frame_dates = fr.values, fr.valid, fr.dates
        meta["frames"] = fr.meta
        meta["empty_frames"] = request.frames.empty
    coverage = float(ok.any(axis=0).mean()) if ok.size else 0.0
    if coverage == 0.0:
        raise ProviderError(empty or (
            f"{what} has no valid pixels in {temporal.key()} (all nodata or clouds); "
            "choose another window or place"
        ))
    meta["coverage"] = round(coverage, 6)
    meta["partial"] = coverage < 1.0
    if meta["partial"]:
        meta["fill_value"] = sensor.fill_value
    if roi is None:
        roi = roi_mask(request.spatial, request.grid)
    return make_observation(values, ok, request.grid, bands, frame_dates, roi, meta)
