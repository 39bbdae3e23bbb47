"""Scale-out: the same export on a dask.distributed LocalCluster of several processes."""

from __future__ import annotations

from pathlib import Path

import eoembed
import numpy as np
import pytest
from eoembed.export import load_export, read_manifest
from export_helpers import far_place, places, write_tiles

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_dask_export_equals_threaded_export_and_workers_load_models_once(tmp_path: Path) -> None:
    imagery = write_tiles(tmp_path / "tiles")[0].parent
    pl = places(30)
    pl["nowhere"] = far_place()
    # (rcf-empirical fits its filters on each process's first batch, so it is left out here)
    models = [("rcf", {"features": 16})]
    kw = dict(outputs="both", source=str(imagery), chunk_size=4, backoff=0.01, retries=1)
    ref = eoembed.export_batch(pl, None, models, tmp_path / "threads", **kw)

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            seen: list[int] = []
            got = eoembed.export_batch(pl, None, models, tmp_path / "dask", executor="dask", scheduler=client,
                                       progress=lambda d, t, info: seen.append(d), **kw)

            def cache_state() -> list[tuple[str, bool]]:
                from eoembed.embedders import registry

                return sorted((k[0], e._loaded) for k, e in registry._CACHE.items())

            per_worker = client.run(cache_state)
            resumed = eoembed.export_batch(pl, None, models, tmp_path / "dask", executor="dask", scheduler=client,
                                           **kw)
    finally:
        cluster.close()

    assert (got.ok, got.failed) == (ref.ok, ref.failed) == (60, 2)
    assert seen[-1] == 62 and len(seen) > 3  # results streamed back chunk by chunk
    # both worker processes did work, and each built the model once (its own cache)
    assert len(per_worker) == 2
    for state in per_worker.values():
        assert state == [("rcf", True)]
    assert (resumed.ok, resumed.skipped, resumed.failed) == (0, 60, 2)  # only the failed ones retried

    a, b = load_export(tmp_path / "threads")["models"], load_export(tmp_path / "dask")["models"]
    for m in ("rcf",):
        assert a[m]["pooled"]["ids"] == b[m]["pooled"]["ids"] == [k for k in pl if k != "nowhere"]
        np.testing.assert_allclose(a[m]["pooled"]["vectors"], b[m]["pooled"]["vectors"], rtol=1e-5, atol=1e-6)
        assert list(a[m]["grids"]) == list(b[m]["grids"])
        for k in a[m]["grids"]:
            np.testing.assert_allclose(a[m]["grids"][k].to_numpy(), b[m]["grids"][k].to_numpy(), rtol=1e-5, atol=1e-6)
    rec = {(r["model"], r["id"]): r for r in read_manifest(tmp_path / "dask")}
    assert rec[("rcf", "nowhere")]["stage"] == "fetch" and rec[("rcf", "p000")]["status"] == "ok"


def test_dask_needs_model_ids_and_a_reachable_scheduler(tmp_path: Path) -> None:
    from eoembed.embedders.rcf import RCFEmbedder

    imagery = write_tiles(tmp_path / "tiles", n_tiles=1)[0].parent
    with pytest.raises(eoembed.SpecError, match="model ids"):
        eoembed.export_batch(places(2, 1), None, [RCFEmbedder("rcf", features=8)], tmp_path / "o",
                             source=str(imagery), executor="dask")
    with pytest.raises(eoembed.SpecError, match="executor"):
        eoembed.export_batch(places(2, 1), None, "rcf", tmp_path / "o", source=str(imagery), executor="spark")
