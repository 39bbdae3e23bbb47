"""Fetching a chunk: one provider request per distinct pixel request, bands merged across models."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..providers import Provider
from ..providers.base import FetchRequest, Observation, make_observation
from ..specs import TemporalSpec
from .plan import ChunkTask, ModelJob
from .retry import RetryPolicy, error_text


def _group_key(req: FetchRequest) -> str:
    sensor = dataclasses.replace(req.sensor, bands=None)
    frames = req.frames.key() if req.frames else "composite"
    return "|".join((req.grid.key(), req.temporal.key(), sensor.key(), frames, req.spatial.key()))


def _subset(obs: Observation, bands: tuple[str, ...]) -> Observation:
    if obs.bands == bands:
        return obs
    return make_observation(obs.values(bands), obs.valid, obs.grid, bands, obs.dates, obs.roi_mask, obs.meta)


def _needed(task: ChunkTask) -> dict[int, set[str]]:
    needed: dict[int, set[str]] = {}
    for it in task.items:
        needed.setdefault(it.index, set()).add(it.model)
    return needed


def prepare_chunk(task: ChunkTask, jobs: Sequence[ModelJob], provider: Provider, temporal: TemporalSpec) -> None:
    """The provider's shared work for the chunk's places, per model (e.g. one catalogue search
    over all of them); a failure is left to each place's own fetch to meet and report."""
    needed = _needed(task)
    if len(needed) < 2:
        return
    for job in jobs:
        mine = [task.places[i][1] for i, models in needed.items() if job.key in models]
        with contextlib.suppress(Exception):
            provider.prepare(mine, temporal, job.sensor)


#: per (place index, model): the observation or None, the error text or None, and attempts
Fetched = dict[tuple[int, str], tuple["Observation | None", "str | None", int]]


def fetch_chunk(
    task: ChunkTask,
    jobs: Sequence[ModelJob],
    provider: Provider,
    temporal: TemporalSpec,
    policy: RetryPolicy,
    pool: ThreadPoolExecutor | None,
) -> Fetched:
    """Observations for every (place, model) the chunk needs, fetched once per pixel request.

    Requests of several models that differ only in bands are merged (union of bands); when the
    merged fetch fails, each model's own bands are fetched so one missing band cannot sink all.
    The chunk's shared work (:func:`prepare_chunk`) is the executor's, done once per chunk before
    its slices come here. Returns ``{(index, model): (observation, error, attempts)}``.
    """
    by_model = {j.key: j for j in jobs}
    needed = _needed(task)
    groups: dict[str, dict[str, Any]] = {}
    out: Fetched = {}
    pairs = [(index, m) for index, models in needed.items() for m in sorted(models)]

    def make(pair: tuple[int, str]) -> FetchRequest | Exception:
        job = by_model[pair[1]]
        try:  # a provider may search its catalogue to place the grid: in parallel
            return provider.request(task.places[pair[0]][1], temporal, job.sensor, job.frames)
        except Exception as exc:
            return exc

    made = list(pool.map(make, pairs) if pool is not None and len(pairs) > 1 else map(make, pairs))
    for (index, m), req in zip(pairs, made):
        if isinstance(req, Exception):
            out[(index, m)] = (None, error_text(req), 1)
            continue
        g = groups.setdefault(_group_key(req), {"req": req, "members": []})
        g["members"].append((index, m, req.sensor.bands))

    def run(group: dict[str, Any]) -> list[tuple[tuple[int, str], tuple[Observation | None, str | None, int]]]:
        req: FetchRequest = group["req"]
        members = group["members"]
        band_sets = list(dict.fromkeys(b for _, _, b in members))
        union = tuple(dict.fromkeys(b for bs in band_sets for b in bs))
        res: list[tuple[tuple[int, str], tuple[Observation | None, str | None, int]]] = []
        try:
            obs, n = policy.call(lambda: provider.fetch(dataclasses.replace(req, sensor=req.sensor.with_bands(union))))
            return [((i, m), (_subset(obs, b), None, n)) for i, m, b in members]
        except Exception as exc:
            tried = getattr(exc, "attempts", 1)
            if len(band_sets) == 1:
                return [((i, m), (None, error_text(exc), tried)) for i, m, _ in members]
        for bs in band_sets:
            try:
                obs, n = policy.call(lambda bs=bs: provider.fetch(dataclasses.replace(req, sensor=req.sensor.with_bands(bs))))
                res += [((i, m), (obs, None, tried + n)) for i, m, b in members if b == bs]
            except Exception as exc:
                res += [((i, m), (None, error_text(exc), tried + getattr(exc, "attempts", 1))) for i, m, b in members if b == bs]
        return res

    work = list(groups.values())
    results = pool.map(run, work) if pool is not None and len(work) > 1 else map(run, work)
    for pairs in results:
        out.update(pairs)
    return out
