"""The threaded executor's stream: chunks come out whole and in order while two inference
streams run at once, slices are fetched by several threads after their chunk's shared work,
and a run infers with two streams of one torch thread each on two cores."""

from __future__ import annotations

import threading
import time

import eoembed
import torch
from eoembed.embedders.rcf import RCFEmbedder
from eoembed.pipeline import stream_chunks
from eoembed.pipeline.inference import ItemResult
from eoembed.pipeline.plan import ChunkTask, Item
from eoembed.specs import OutputSpec, PointBuffer
from export_helpers import places, write_tiles


def _chunk(number: int, first: int, n: int) -> ChunkTask:
    spots = {i: (f"p{i}", PointBuffer(10.0 + i * 1e-3, 45.0, 100.0)) for i in range(first, first + n)}
    items = [Item(i, f"p{i}", "m", OutputSpec.pooled(), f"fp{i}") for i in spots]
    return ChunkTask(number, spots, items)


def test_two_streams_overlap_yet_chunks_come_out_whole_and_in_order() -> None:
    chunks = [_chunk(0, 0, 10), _chunk(1, 10, 7), _chunk(2, 17, 5)]
    lock = threading.Lock()
    running = 0
    most = 0
    prepared: list[int] = []
    fetched_after_prepare: list[bool] = []

    def prepare(t: ChunkTask) -> None:
        time.sleep(0.02)
        with lock:
            prepared.append(t.number)

    def fetch(part: ChunkTask) -> dict:
        with lock:
            fetched_after_prepare.append(part.number in prepared)
        return {}

    def infer(part: ChunkTask, fetched: dict) -> list[ItemResult]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.03 if min(part.places) % 2 == 0 else 0.005)  # slices finish out of order
        with lock:
            running -= 1
        return [ItemResult(it) for it in part.items]

    out = list(stream_chunks(chunks, fetch, infer, slice_size=2, ahead=3, streams=2, fetchers=2, prepare=prepare))
    assert [t.number for t, _ in out] == [0, 1, 2]
    for (_, results), want in zip(out, chunks):
        assert [r.item.index for r in results] == [it.index for it in want.items]  # whole, in order
    assert most == 2  # two slices were inferred at the same time
    assert prepared == [0, 1, 2] and all(fetched_after_prepare)  # each chunk's shared work came first


def test_a_failing_slice_stops_the_stream_with_its_error() -> None:
    def infer(part: ChunkTask, fetched: dict) -> list[ItemResult]:
        if 4 in part.places:
            raise RuntimeError("broken slice")
        return [ItemResult(it) for it in part.items]

    stream = stream_chunks([_chunk(0, 0, 8)], lambda t: {}, infer, slice_size=2, ahead=2, streams=2)
    try:
        list(stream)
    except RuntimeError as exc:
        assert "broken slice" in str(exc)
    else:
        raise AssertionError("the slice's error was swallowed")


def test_a_run_infers_in_two_streams_of_one_thread_on_two_cores(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("eoembed.pipeline.budget.available_cores", lambda: 2)
    folder = write_tiles(tmp_path / "img" / "tiles")[0].parent
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    class Spy(RCFEmbedder):
        def embed(self, observations, output, prep=None):  # noqa: ANN001, ANN201
            with lock:
                seen.append((threading.current_thread().name, torch.get_num_threads()))
            time.sleep(0.05)  # long enough that the second stream starts meanwhile
            return super().embed(observations, output, prep)

    s = eoembed.export_batch(places(12), None, [Spy(features=16, batch_size=2)], tmp_path / "o", source=str(folder))
    assert s.ok == 12
    assert {n for _, n in seen} == {1}  # one torch thread per stream on two cores
    assert len({name for name, _ in seen}) == 2  # slices went to both inference threads
