"""HTTP reads for product readers: byte ranges, whole small files cached on disk, bounded retries.

The same rules as the imagery providers: transient failures (HTTP 408/429/5xx, dropped
connections) are retried with exponential backoff and jitter, GDAL never retries or caches a
failed URL on its own, and every URL that reaches an error message goes through ``redact``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from ..errors import ProviderError, SpecError
from ..providers.raster_io import http_gdal_env
from ..providers.redact import install_log_redaction, redact

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
_GDAL_TRANSIENT = re.compile(
    r"HTTP response code: (408|429|5\d\d)|timed out|Timeout|Connection (refused|reset|closed)|"
    r"Couldn't connect|Could not resolve|SSL|Recv failure|Send failure|transfer closed",
    re.IGNORECASE,
)


class HttpStatusError(OSError):
    """An HTTP answer that is not a success; `status` is its code."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"HTTP {status} for {redact(url)}")
        self.status = status


class NotFound(ProviderError):
    """A product file that does not exist (HTTP 404 or no such local file)."""


def cache_root() -> Path:
    """Where product indexes and small files are cached (``$EOEMBED_PRODUCTS_CACHE`` or
    ``~/.cache/eoembed/products``)."""
    env = os.environ.get("EOEMBED_PRODUCTS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eoembed" / "products"


def is_transient(exc: BaseException) -> bool:
    """True for failures worth another try: 408/429/5xx answers and broken connections."""
    import requests
    from rasterio.errors import RasterioIOError

    if isinstance(exc, HttpStatusError):
        return exc.status in _TRANSIENT_STATUS
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    if isinstance(exc, RasterioIOError):
        return bool(_GDAL_TRANSIENT.search(str(exc)))
    return False


class Remote:
    """One product source's HTTP client: ranges, cached files, retries, byte and request counts."""

    def __init__(self, *, retries: int = 3, backoff: float = 0.5, timeout: float = 60.0) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise SpecError(f"retries={retries!r} must be a whole number from 0 to 10")
        if not isinstance(backoff, (int, float)) or backoff < 0:
            raise SpecError(f"backoff={backoff!r} must be a number of seconds ≥ 0")
        self.retries, self.backoff, self.timeout = retries, float(backoff), float(timeout)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.stats: dict[str, int] = {"requests": 0, "bytes": 0, "http_retries": 0}
        install_log_redaction("rasterio", "urllib3", "zarr")

    # -- retries ------------------------------------------------------------------------------
    def retry(self, what: str, call: Callable[[], T]) -> T:
        """`call()` with bounded retries of transient failures (exponential backoff + jitter)."""
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as exc:
                if attempt >= self.retries or not is_transient(exc):
                    raise
                delay = min(self.backoff * 2**attempt * random.uniform(0.5, 1.5), 30.0)
                with self._lock:
                    self.stats["http_retries"] += 1
                log.info("%s failed (%s); retry %d of %d in %.2f s", redact(what), redact(exc), attempt + 1,
                         self.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def failure(self, what: str, url: str, exc: BaseException) -> ProviderError:
        """One sentence for a read that failed for good (credentials and query strings removed)."""
        host = urlparse(url).netloc or "its file"
        tries = f" after {self.retries + 1} attempts" if is_transient(exc) else ""
        if isinstance(exc, HttpStatusError) and exc.status == 404:
            return NotFound(f"{what} is not at {redact(url)} (HTTP 404); check the product URL or the year")
        return ProviderError(f"could not read {what} from {host} ({redact(exc)}){tries}; try again later")

    # -- plain HTTP -----------------------------------------------------------------------------
    def _session(self) -> Any:
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _get_once(self, url: str, start: int | None, end: int | None) -> bytes:
        headers = {}
        if start is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._session().get(url, headers=headers, timeout=self.timeout) as resp:
            if resp.status_code not in (200, 206):
                raise HttpStatusError(url, resp.status_code)
            body = resp.content
        if start is not None and resp.status_code == 200:  # server ignored the range
            body = body[start:end]
        with self._lock:
            self.stats["requests"] += 1
            self.stats["bytes"] += len(body)
        return body

    def get(self, url: str, start: int | None = None, end: int | None = None, what: str = "a file") -> bytes:
        """Bytes ``[start, end)`` of `url` (all of it without `start`), retried; ProviderError.

        A local path (a mirror on disk) is read directly."""
        if not is_url(url):
            return _read_local(url, start, end, what)
        try:
            return self.retry(f"reading {what}", lambda: self._get_once(url, start, end))
        except Exception as exc:
            raise self.failure(what, url, exc) from None

    def suffix(self, url: str, n: int, what: str = "a file") -> bytes:
        """The last `n` bytes of `url`."""
        if not is_url(url):
            size = Path(url).stat().st_size if Path(url).is_file() else 0
            return _read_local(url, max(0, size - n), None, what)

        def once() -> bytes:
            with self._session().get(url, headers={"Range": f"bytes=-{n}"}, timeout=self.timeout) as resp:
                if resp.status_code not in (200, 206):
                    raise HttpStatusError(url, resp.status_code)
                body = resp.content if resp.status_code == 206 else resp.content[-n:]
            with self._lock:
                self.stats["requests"] += 1
                self.stats["bytes"] += len(body)
            return body

        try:
            return self.retry(f"reading {what}", once)
        except Exception as exc:
            raise self.failure(what, url, exc) from None

    def exists(self, url: str) -> bool:
        """Whether `url` answers (404 → False); other failures raise ProviderError."""
        try:
            self.get(url, 0, 1, what="a key")
            return True
        except NotFound:
            return False

    def cached(self, url: str, what: str) -> Path:
        """A local copy of the small file at `url`, downloaded once (atomic) and reused after."""
        if not is_url(url):
            if not Path(url).is_file():
                raise ProviderError(f"{what} is not at {url}; check the product path")
            return Path(url)
        digest = hashlib.sha256(redact(url).encode()).hexdigest()[:16]
        name = Path(urlparse(url).path).name or "file"
        path = cache_root() / digest / name
        if path.is_file() and path.stat().st_size > 0:
            return path
        data = self.get(url, what=what)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    # -- GDAL -------------------------------------------------------------------------------------
    def gdal_env(self) -> dict[str, Any]:
        """GDAL options for windowed COG and VRT reads over HTTP (retries are ours, see :meth:`retry`)."""
        return http_gdal_env(self.timeout, vrt=True)


def is_url(url: str) -> bool:
    return str(url).startswith(("http://", "https://"))


def _read_local(path: str, start: int | None, end: int | None, what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"{what} is not at {path} (no such file); check the product path")
    with open(p, "rb") as f:
        if start:
            f.seek(start)
        return f.read() if end is None else f.read(end - (start or 0))


def gdal_path(url: str) -> str:
    """The path GDAL opens for `url`: ``/vsicurl/`` for HTTP(S), the path itself otherwise."""
    return f"/vsicurl/{url}" if url.startswith(("http://", "https://")) else url


def join(base: str, *parts: str) -> str:
    """`base` and `parts` joined with single slashes (URLs or local paths)."""
    out = base.rstrip("/")
    for p in parts:
        out += "/" + str(p).strip("/")
    return out
