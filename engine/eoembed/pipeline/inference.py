"""Inference: batched forward passes, a failing batch split into single items, retries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..embedders.base import Embedder
from ..embedding import Embedding
from ..providers.base import Observation
from ..specs import InputPrep, OutputSpec
from .fetch import Fetched
from .plan import ChunkTask, Item, ModelJob
from .retry import PERMANENT, RetryPolicy, error_text


@dataclass
class ItemResult:
    """What became of one item: an embedding, or the stage and error that stopped it."""

    item: Item
    embedding: Embedding | None = None
    stage: str = "ok"
    error: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)



def infer(
    embedder: Embedder,
    observations: Sequence[Observation],
    output: OutputSpec,
    prep: InputPrep | None,
    policy: RetryPolicy,
) -> list[tuple[Embedding | None, str | None, int]]:
    """Embed `observations` in batches; isolate and retry failures.

    Each round embeds the still-pending items as one batched call; when that call fails the
    items are embedded one by one so that good items are not sunk by a bad one. Items that
    still fail wait (backoff with jitter, once per round) and are retried, up to
    ``policy.retries`` times. Returns ``(embedding, error, attempts)`` per observation.
    """
    n = len(observations)
    done: list[Embedding | None] = [None] * n
    errors: list[str | None] = [None] * n
    attempts = [0] * n
    pending = list(range(n))
    for rnd in range(policy.retries + 1):
        if rnd:
            time.sleep(policy.wait(rnd - 1))
        for i in pending:
            attempts[i] += 1
        try:
            res = embedder.embed([observations[i] for i in pending], output, prep)
            for i, e in zip(pending, res):
                done[i], errors[i] = e, None
            pending = []
        except PERMANENT as exc:
            for i in pending:
                errors[i] = error_text(exc)
            break
        except Exception as exc:
            if len(pending) == 1:
                errors[pending[0]] = error_text(exc)
            else:
                still = []
                for i in pending:
                    try:
                        done[i], errors[i] = embedder.embed([observations[i]], output, prep)[0], None
                    except Exception as one:
                        errors[i] = error_text(one)
                        still.append(i)
                pending = still
        if not pending:
            break
    return list(zip(done, errors, attempts))


def infer_chunk(
    task: ChunkTask,
    fetched: Fetched,
    jobs: Sequence[ModelJob],
    prep: InputPrep | None,
    policy: RetryPolicy,
    broken: dict[str, str] | None = None,
) -> list[ItemResult]:
    """Run every model of the chunk on its fetched observations; one ItemResult per item."""
    broken = {} if broken is None else broken
    results: list[ItemResult] = []
    by_model = {j.key: j for j in jobs}
    for job in jobs:
        for output in job.outputs:
            items = [it for it in task.items if it.model == job.key and it.output == output]
            if not items:
                continue
            ready: list[tuple[Item, Observation, int]] = []
            for it in items:
                obs, msg, n = fetched.get((it.index, it.model), (None, "not fetched", 0))
                if obs is not None:
                    ready.append((it, obs, n))
                else:
                    results.append(ItemResult(it, stage="fetch", error=msg, attempts={"fetch": n}))
            if not ready:
                continue
            if job.key in broken:
                results += [ItemResult(it, stage="load", error=broken[job.key], attempts={"fetch": n}) for it, _, n in ready]
                continue
            embedder = by_model[job.key].embedder()
            try:
                policy.call(embedder.load)
            except Exception as exc:
                broken[job.key] = error_text(exc)
                results += [ItemResult(it, stage="load", error=broken[job.key], attempts={"fetch": n}) for it, _, n in ready]
                continue
            outs = infer(embedder, [o for _, o, _ in ready], output, prep, policy)
            for (it, _, nf), (emb, err, n) in zip(ready, outs):
                if emb is not None:
                    results.append(ItemResult(it, embedding=emb, attempts={"fetch": nf, "infer": n}))
                else:
                    results.append(ItemResult(it, stage="infer", error=err, attempts={"fetch": nf, "infer": n}))
    return results
