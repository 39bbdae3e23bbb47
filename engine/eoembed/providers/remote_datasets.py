"""Open remote rasters kept open and reused, so a COG's header is read once, not once per place.

Opening a COG over HTTP costs a size probe and a header read (two or three requests) before
any pixel; the places of a chunk mostly fall on the same few COGs. :class:`DatasetPool` keeps
datasets open after use, keyed by URL, and lends each to one thread at a time (a GDAL dataset
is not safe to share between threads): a borrower takes an idle dataset of that URL or opens
a new one, and gives it back when done. An open dataset also keeps GDAL's block cache, so a
tile that two places share is fetched once. A dataset whose read failed is closed rather than
given back, so a retry starts from a fresh open. At most `max_idle` datasets are kept; the least
recently used are closed first.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

#: datasets kept open per URL at most (concurrent readers of one URL beyond this open their own)
PER_URL = 4


class DatasetPool:
    """Idle open datasets by URL, lent to one borrower at a time (thread-safe)."""

    def __init__(self, opener: Callable[[str], Any], max_idle: int = 256) -> None:
        self._opener = opener
        self._max_idle = max(1, max_idle)
        self._idle: OrderedDict[int, tuple[str, Any]] = OrderedDict()  # oldest first
        self._by_url: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.opened = 0  # datasets opened so far (for stats)

    @contextlib.contextmanager
    def borrow(self, url: str, fresh: bool = False) -> Iterator[tuple[Any, bool]]:
        """``(dataset, reused)``: an open dataset of `url` for the caller alone (a newly opened
        one when `fresh`), given back after the block, closed on error; `reused` says whether it
        was kept open from before."""
        ds = None if fresh else self._take(url)
        reused = ds is not None
        if ds is None:
            ds = self._opener(url)
            with self._lock:
                self.opened += 1
        try:
            yield ds, reused
        except BaseException:
            with contextlib.suppress(Exception):
                ds.close()
            raise
        self._give_back(url, ds)

    def _take(self, url: str) -> Any:
        with self._lock:
            keys = self._by_url.get(url)
            if not keys:
                return None
            key = keys.pop()
            if not keys:
                del self._by_url[url]
            return self._idle.pop(key)[1]

    def _give_back(self, url: str, ds: Any) -> None:
        closing = []
        with self._lock:
            keys = self._by_url.setdefault(url, [])
            if len(keys) >= PER_URL:
                closing.append(ds)
            else:
                self._idle[id(ds)] = (url, ds)
                keys.append(id(ds))
            while len(self._idle) > self._max_idle:
                key, (old_url, old) = self._idle.popitem(last=False)
                self._by_url[old_url].remove(key)
                if not self._by_url[old_url]:
                    del self._by_url[old_url]
                closing.append(old)
        for d in closing:
            with contextlib.suppress(Exception):
                d.close()

    def discard(self, match: Callable[[str], bool]) -> None:
        """Close the idle datasets whose URL satisfies `match` (e.g. those signed with a stale token)."""
        with self._lock:
            gone = [(k, u, d) for k, (u, d) in self._idle.items() if match(u)]
            for k, u, _ in gone:
                del self._idle[k]
                self._by_url[u].remove(k)
                if not self._by_url[u]:
                    del self._by_url[u]
        for _, _, d in gone:
            with contextlib.suppress(Exception):
                d.close()

    def close(self) -> None:
        """Close every idle dataset."""
        self.discard(lambda _: True)
