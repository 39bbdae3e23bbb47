"""Windowed reads of remote cloud-optimised GeoTIFFs by HTTP range requests, tiles shared.

For a grid on the COG's own pixel lattice (what the grid rule gives STAC items) a read is the
tiles under the window: each COG's header is fetched once (one request, no size probe), each
tile once (adjacent tiles in one request) and kept decoded in a cache shared by every place and
thread, so places on the same tiles cost no request and almost no CPU. Failures are never
cached: a failed header or tile is fetched afresh by the next read. Errors are raised as
:class:`~eoembed.providers.transient.RemoteFailure` with their cause, like GDAL's.

COGs this reader does not decode, and grids off their lattice, are left to GDAL (``None``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..grid import GridSpec
from ..specs import crs_string, parse_crs
from .cog_header import HEADER_BYTES, CogHeader, NotTiff, Unsupported, decode_tile, parse_header
from .raster_io import lattice_offset
from .redact import redact
from .transient import TRANSIENT_STATUS, Failure, RemoteFailure, classify

#: decoded tiles kept, in bytes (a 1024 × 1024 uint16 Sentinel-2 tile is 2 MiB)
CACHE_BYTES = 256 * 2**20
#: byte gaps between two tiles small enough to fetch both in one request
MERGE_GAP = 8192


class _SingleFlight:
    """Values by key, computed once while several threads ask (failures are not kept)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Any, Future] = {}

    def claim(self, key: Any) -> tuple[Future, bool]:
        """The future for `key` and whether the caller must compute it."""
        with self._lock:
            fut = self._running.get(key)
            if fut is not None:
                return fut, False
            fut = self._running[key] = Future()
            return fut, True

    def done(self, key: Any) -> None:
        with self._lock:
            self._running.pop(key, None)


class CogReader:
    """Aligned window reads of remote COGs for many places and threads (see the module doc).

    `get(url, start, end)` returns bytes ``start..end`` (inclusive) of `url` or raises; it is the
    provider's HTTP client (signing, timeouts). Keys are the unsigned hrefs, so a refreshed
    signature keeps what was read.
    """

    def __init__(self, get: Callable[[str, int, int], bytes], cache_bytes: int = CACHE_BYTES) -> None:
        self._get = get
        self._headers: dict[str, CogHeader | None] = {}  # None: GDAL reads this one
        self._tiles: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._max = max(0, cache_bytes)
        self._lock = threading.Lock()
        self._flight = _SingleFlight()
        self.requests = 0  # HTTP requests made (for tests and benchmarks)

    # -- HTTP --------------------------------------------------------------------------------
    def _fetch(self, url: str, start: int, end: int) -> bytes:
        with self._lock:
            self.requests += 1
        try:
            return self._get(url, start, end)
        except RemoteFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            raise RemoteFailure(classify(exc, url)) from exc

    # -- headers -----------------------------------------------------------------------------
    def header(self, href: str, url: str) -> CogHeader | None:
        """The COG's header (fetched once), or None when GDAL must read this file."""
        with self._lock:
            if href in self._headers:
                return self._headers[href]
        fut, mine = self._flight.claim(("header", href))
        if not mine:
            return fut.result()
        try:
            head = self._parse(href, url)
            with self._lock:
                self._headers[href] = head
            fut.set_result(head)
            return head
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            self._flight.done(("header", href))

    def _parse(self, href: str, url: str) -> CogHeader | None:
        data = self._fetch(url, 0, HEADER_BYTES - 1)
        try:
            return parse_header(data, lambda start, n: self._fetch(url, start, start + n - 1))
        except Unsupported:
            return None
        except NotTiff:
            raise RemoteFailure(Failure("not-raster", False, None, redact(href), "the file is not a GeoTIFF")) from None
        except (ValueError, IndexError, OverflowError) as exc:  # struct/shape errors: a header cut short
            if len(data) >= HEADER_BYTES:
                return None  # a header this parser cannot follow: GDAL's turn
            raise RemoteFailure(Failure("short", True, None, redact(href), f"the header was cut short ({exc})")) from None

    # -- reads -------------------------------------------------------------------------------
    def read(self, href: str, url: str, grid: GridSpec, nodata: float | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Values ``(bands, H, W)`` float32 and validity ``(H, W)`` of the COG on `grid`, as
        :func:`~eoembed.providers.raster_io.read_to_grid` gives them; None when the COG or the
        grid needs GDAL (an unsupported layout, another CRS or lattice)."""
        head = self.header(href, url)
        if head is None:
            return None
        window = _window(head, grid)
        if window is None:
            return None
        return _assemble(head, grid, window, nodata, self._tiles_of(href, url, head, window[2]))

    def read_cached(self, href: str, grid: GridSpec, nodata: float | None) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`read` when the header and every tile it needs are already here (no request,
        no waiting: the caller's own thread can do it), else None."""
        with self._lock:
            head = self._headers.get(href)
            if head is None:
                return None
            window = _window(head, grid)
            if window is None:
                return None
            tiles = {}
            for k in window[2]:
                arr = self._tiles.get((href, k))
                if arr is None:
                    return None
                self._tiles.move_to_end((href, k))
                tiles[k] = arr
        return _assemble(head, grid, window, nodata, tiles)

    def _tiles_of(self, href: str, url: str, head: CogHeader, wanted: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        with self._lock:
            for k in wanted:
                arr = self._tiles.get((href, k))
                if arr is not None:
                    self._tiles.move_to_end((href, k))
                    got[k] = arr
        missing = [k for k in wanted if k not in got]
        mine, theirs = [], []
        for k in missing:
            fut, own = self._flight.claim(("tile", href, k))
            (mine if own else theirs).append((k, fut))
        try:
            if mine:
                fetched = self._fetch_tiles(url, head, [k for k, _ in mine])
                for k, fut in mine:
                    got[k] = fetched[k]
                    self._keep((href, k), fetched[k])
                    fut.set_result(fetched[k])
        except BaseException as exc:
            for _, fut in mine:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        finally:
            for k, _ in mine:
                self._flight.done(("tile", href, k))
        for k, fut in theirs:
            try:
                got[k] = fut.result()
            except Exception:  # another read's fetch failed: fetch it here (failures are not shared)
                got[k] = self._fetch_tiles(url, head, [k])[k]
                self._keep((href, k), got[k])
        return got

    def _fetch_tiles(self, url: str, head: CogHeader, tiles: list[int]) -> dict[int, np.ndarray]:
        """Decoded tiles, adjacent byte ranges fetched in one request; sparse tiles (no bytes) filled."""
        out: dict[int, np.ndarray] = {}
        fill = head.nodata if head.nodata is not None and not np.isnan(head.nodata) else 0
        spans: list[tuple[int, int, list[int]]] = []  # (start, end inclusive, tiles)
        for k in sorted(tiles, key=lambda k: head.offsets[k]):
            start, n = head.offsets[k], head.counts[k]
            if n == 0 or start == 0:
                native = head.dtype.newbyteorder("=")
                out[k] = np.full((head.tile_height, head.tile_width, head.bands), fill, native)
                continue
            if spans and start - spans[-1][1] - 1 <= MERGE_GAP:
                s, e, ks = spans[-1]
                spans[-1] = (s, max(e, start + n - 1), ks + [k])
            else:
                spans.append((start, start + n - 1, [k]))
        for s, e, ks in spans:
            blob = self._fetch(url, s, e)
            if len(blob) < e - s + 1:
                raise RemoteFailure(Failure("short", True, None, redact(url), "a tile read was cut short"))
            for k in ks:
                a = head.offsets[k] - s
                try:
                    out[k] = decode_tile(head, blob[a : a + head.counts[k]])
                except Exception as exc:  # noqa: BLE001 - a tile that does not decode: a corrupt reply or file
                    raise RemoteFailure(Failure("short", True, None, redact(url), f"a tile did not decode ({exc})")) from None
        return out

    def _keep(self, key: tuple[str, int], arr: np.ndarray) -> None:
        with self._lock:
            if key in self._tiles:
                return
            self._tiles[key] = arr
            self._bytes += arr.nbytes
            while self._bytes > self._max and self._tiles:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.nbytes


def _window(head: CogHeader, grid: GridSpec) -> tuple[tuple[int, int], tuple[int, int, int, int], list[int]] | None:
    """The grid's offset in the COG, the part of it inside the image (r0, r1, c0, c1) and the
    tiles under that part; None when the grid is off the COG's lattice."""
    off = _aligned(head, grid)
    if off is None:
        return None
    row, col = off
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + grid.height, head.height), min(col + grid.width, head.width)
    if r0 >= r1 or c0 >= c1:
        return off, (r0, r1, c0, c1), []
    ty0, ty1 = r0 // head.tile_height, (r1 - 1) // head.tile_height
    tx0, tx1 = c0 // head.tile_width, (c1 - 1) // head.tile_width
    tiles = [ty * head.tiles_across + tx for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)]
    return off, (r0, r1, c0, c1), tiles


def _assemble(head: CogHeader, grid: GridSpec, window: tuple, nodata: float | None,
              tiles: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The window cut from decoded tiles, as float32 values with validity (nodata → invalid)."""
    (row, col), (r0, r1, c0, c1), wanted = window
    h, w = grid.height, grid.width
    if not wanted:
        return np.zeros((head.bands, h, w), np.float32), np.zeros((h, w), bool)
    if len(wanted) == 1:  # inside one tile: a view of it
        ty, tx = divmod(wanted[0], head.tiles_across)
        ya, xa = ty * head.tile_height, tx * head.tile_width
        data = tiles[wanted[0]][r0 - ya : r1 - ya, c0 - xa : c1 - xa]
    else:
        data = np.empty((r1 - r0, c1 - c0, head.bands), head.dtype.newbyteorder("="))
        for k in wanted:
            ty, tx = divmod(k, head.tiles_across)
            ya, xa = ty * head.tile_height, tx * head.tile_width
            ys, ye = max(r0, ya), min(r1, ya + head.tile_height)
            xs, xe = max(c0, xa), min(c1, xa + head.tile_width)
            data[ys - r0 : ye - r0, xs - c0 : xe - c0] = tiles[k][ys - ya : ye - ya, xs - xa : xe - xa]
    vals = np.array(data.transpose(2, 0, 1), np.float32, order="C")  # a copy: tiles stay as cached
    nd = head.nodata if head.nodata is not None else nodata
    ok = None
    if nd is not None and not np.isnan(nd):
        ok = (vals[0] != np.float32(nd)) if head.bands == 1 else ~(vals == np.float32(nd)).all(axis=0)
    if vals.dtype.kind == "f" and head.dtype.kind == "f":
        ok = ~np.isnan(vals).any(axis=0) if ok is None else ok & ~np.isnan(vals).any(axis=0)
    if ok is None:
        ok = np.ones(vals.shape[1:], bool)
    else:
        vals[:, ~ok] = 0.0
    if (r0, r1, c0, c1) == (row, row + h, col, col + w):  # all inside the image
        return vals, ok
    out = np.zeros((head.bands, h, w), np.float32)
    valid = np.zeros((h, w), bool)
    out[:, r0 - row : r1 - row, c0 - col : c1 - col] = vals
    valid[r0 - row : r1 - row, c0 - col : c1 - col] = ok
    return out, valid


def _aligned(head: CogHeader, grid: GridSpec) -> tuple[int, int] | None:
    """(row, col) of the grid's top-left pixel in the COG when both share CRS, pixel size and
    lattice (the rule GDAL's reads follow: :func:`~eoembed.providers.raster_io.lattice_offset`)."""
    if not _same_crs(head.epsg, grid.crs):
        return None
    a, _, c, _, e, f = head.transform
    return lattice_offset(a, c, e, f, grid)


_CRS_SAME: dict[tuple[int, str], bool] = {}


def _same_crs(epsg: int, crs: str) -> bool:
    key = (epsg, crs)
    same = _CRS_SAME.get(key)
    if same is None:
        same = crs == f"EPSG:{epsg}" or crs_string(parse_crs(crs)) == crs_string(parse_crs(f"EPSG:{epsg}"))
        if len(_CRS_SAME) < 4096:
            _CRS_SAME[key] = same
    return same


def http_range_getter(timeout: float, connections: int = 32) -> tuple[Callable[[str, int, int], bytes], Callable[[], None]]:
    """``(get, close)``: ``get(url, start, end)`` fetches bytes ``start..end`` of `url` over kept-alive
    connections (urllib3: half the CPU per request of ``requests``), or raises an exception whose
    cause :func:`~eoembed.providers.transient.classify` reads (an HTTP status as RemoteFailure).

    Proxies come from the environment (``https_proxy``, ``no_proxy`` …) and certificates from
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` / ``SSL_CERT_FILE`` or certifi, as for ``requests``.
    """
    import os
    import urllib.request
    from urllib.parse import urlsplit

    import urllib3

    ca = next((os.environ[k] for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
               if os.environ.get(k) and os.path.isfile(os.environ[k])), None)
    if ca is None:
        try:
            import certifi

            ca = certifi.where()
        except ImportError:
            ca = None
    options = {"num_pools": 16, "maxsize": max(1, connections), "block": False, "retries": False,
               "timeout": urllib3.Timeout(connect=timeout, read=timeout), "cert_reqs": "CERT_REQUIRED", "ca_certs": ca}
    direct = urllib3.PoolManager(**options)
    managers: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()
    proxies = urllib.request.getproxies()

    def manager(url: str) -> Any:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        with lock:
            pm = managers.get(key)
            if pm is None:
                proxy = proxies.get(parts.scheme)
                if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
                    pm = urllib3.ProxyManager(proxy, **options)
                else:
                    pm = direct
                managers[key] = pm
            return pm

    def get(url: str, start: int, end: int) -> bytes:
        resp = manager(url).request("GET", url, headers={"Range": f"bytes={start}-{end}"}, preload_content=True)
        if resp.status >= 400:
            raise RemoteFailure(Failure("http", resp.status in TRANSIENT_STATUS, resp.status, redact(url),
                                        f"HTTP {resp.status}"))
        body = resp.data
        if resp.status == 200:  # the server ignored the range and sent the whole file
            return body[start : end + 1]
        return body

    def close() -> None:
        with lock:
            for pm in {id(m): m for m in [direct, *managers.values()]}.values():
                pm.clear()

    return get, close
