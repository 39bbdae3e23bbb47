"""Why a remote request failed, and whether trying again can help.

:func:`classify` reads an exception and everything chained to it (``__cause__`` /
``__context__``): HTTP statuses (``requests``, ``pystac_client``, GDAL's
``HTTP response code: N``), GDAL's error classes (``CPLE_HttpResponseError`` …) and messages
(curl's timeouts, empty replies, transfers cut short, TIFF reads that got fewer bytes than
expected), ``requests``/``urllib3``/``http.client`` connection errors and JSON replies cut
short. The answer is a :class:`Failure`: a cause, the status when there is one, and whether
the failure is transient (a retry may succeed: 408/425/429/5xx, timeouts, resets, short
reads, refused connections) or permanent (any other status, a file that is not a raster).

GDAL sometimes hides the cause: when the first read of a remote file fails, all it says is
that the file is "not recognized as being in a supported file format". :func:`probe` then asks
the server directly (two bytes of the file) to tell a flaky server from a file that is not a
GeoTIFF.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass

from .redact import redact

#: HTTP statuses worth retrying: timeout, too early, too many requests, server-side failures.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})

_STATUS_TEXT = re.compile(r"(?:HTTP (?:response )?(?:code|status)[:\s]+|\bHTTP[/ ](?:1\.[01] )?)(\d{3})\b", re.I)
_TIMEOUT = re.compile(r"timed out|timeout|time-out", re.I)
_RESET = re.compile(
    r"Empty reply from server|Connection (?:reset|aborted|closed)|RemoteDisconnected|Recv failure|"
    r"Send failure|Broken pipe|Remote end closed|Server disconnected",
    re.I,
)
_SHORT = re.compile(
    r"transfer closed with|IncompleteRead|Unterminated string|Expecting (?:value|',' delimiter|property name)|"
    r"got \d+ bytes, expected \d+|Read error at|IReadBlock failed|Read failed|Connection broken|"
    r"partial file|end of file|unexpected EOF",
    re.I,
)
_REFUSED = re.compile(r"Connection refused|Couldn't connect|Could not resolve|Failed to connect|"
                      r"Name or service not known|Temporary failure in name resolution", re.I)
# GDAL's words when an open got no usable header: the real cause (a timeout, a cut-short reply,
# a file that is no TIFF) is hidden, and probe() finds it.
_NOT_RASTER = re.compile(r"not recognized as being in a supported file format|Cannot read TIFF header", re.I)
_URL = re.compile(r"(?:/vsicurl/)?(https?://[^\s'\"<>]+)")

_WORDS = {
    "timeout": "the request timed out",
    "reset": "the connection was reset",
    "short": "the reply was cut short",
    "refused": "the server could not be reached",
    "not-raster": "the file is not a readable raster",
}


@dataclass(frozen=True)
class Failure:
    """One failed request: its cause, HTTP status (if any), URL (redacted) and whether to retry.

    `cause` is ``"http"``, ``"timeout"``, ``"reset"``, ``"short"``, ``"refused"``,
    ``"not-raster"`` (GDAL could not open the file; :func:`probe` can tell more) or ``"other"``.
    """

    cause: str
    transient: bool
    status: int | None = None
    url: str | None = None
    detail: str = ""

    def reason(self) -> str:
        """A few words for an error sentence: ``HTTP 503``, ``the request timed out`` …"""
        if self.status is not None:
            return f"HTTP {self.status}"
        return _WORDS.get(self.cause, self.detail or "an unexpected error")


class RemoteFailure(Exception):
    """Raised in place of an exception whose cause was found out another way (see :func:`probe`)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.reason()} ({failure.url})" if failure.url else failure.reason())
        self.failure = failure


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 16:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        value = getattr(obj, "status_code", None)
        if value is None:
            value = getattr(obj, "status", None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    m = _STATUS_TEXT.search(str(exc))
    return int(m.group(1)) if m else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = redact(line)
    return line if len(line) <= 160 else line[:157] + "..."


def classify(exc: BaseException, url: str | None = None) -> Failure:
    """The :class:`Failure` an exception stands for (`url`: the request's URL, if known)."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, RemoteFailure):
            return e.failure
    found_url = url
    if found_url is None:
        for e in chain:
            m = _URL.search(str(e))
            if m:
                found_url = m.group(1)
                break
    where = redact(found_url) if found_url else None
    detail = _first_line(exc)
    names = {type(e).__name__ for e in chain}
    texts = " | ".join(str(e) for e in chain) + " | " + " ".join(sorted(names))

    def failure(cause: str, transient: bool, status: int | None = None) -> Failure:
        return Failure(cause, transient, status, where, detail)

    for e in chain:
        status = _status(e)
        if status is not None and status >= 400:
            return failure("http", status in TRANSIENT_STATUS, status)
    if any(isinstance(e, (TimeoutError, socket.timeout)) for e in chain) or names & {
        "Timeout", "ReadTimeout", "ConnectTimeout", "ReadTimeoutError", "ConnectTimeoutError"
    } or _TIMEOUT.search(texts):
        return failure("timeout", True)
    if any(isinstance(e, json.JSONDecodeError) for e in chain) or names & {
        "ChunkedEncodingError", "IncompleteRead", "ContentDecodingError"
    } or _SHORT.search(texts):
        return failure("short", True)
    if any(isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) for e in chain) or names & {
        "RemoteDisconnected", "ProtocolError"
    } or _RESET.search(texts):
        return failure("reset", True)
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or names & {
        "NewConnectionError", "NameResolutionError"
    } or _REFUSED.search(texts):
        return failure("refused", True)
    if names & {"ConnectionError", "MaxRetryError"}:
        return failure("reset", True)
    if _NOT_RASTER.search(texts):
        return failure("not-raster", False)
    if names & {"APIError"}:  # pystac-client's wrapper of a failure it could not attribute
        return failure("other", True)
    return failure("other", False)


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def probe(url: str, timeout: float, headers: dict[str, str] | None = None) -> Failure:
    """Ask the server for the first bytes of `url` to learn why GDAL could not open it.

    Transient when the server fails now (status, timeout, reset) or serves a TIFF after all
    (the earlier read was cut short); permanent for another status or a file that is not a TIFF.
    """
    import requests

    where = redact(url)
    try:
        resp = requests.get(url, headers={"Range": "bytes=0-3", **(headers or {})}, timeout=timeout, stream=True)
        try:
            head = resp.raw.read(4, decode_content=True) if resp.status_code < 400 else b""
        finally:
            resp.close()
    except Exception as exc:  # noqa: BLE001 - every failure is classified
        f = classify(exc, url)
        return Failure(f.cause, f.transient or f.cause == "other", f.status, where, f.detail)
    if resp.status_code >= 400:
        return Failure("http", resp.status_code in TRANSIENT_STATUS, resp.status_code, where,
                       f"HTTP {resp.status_code}")
    if len(head) < 4:  # fewer bytes than asked for: the reply was cut short again
        return Failure("short", True, None, where, "the reply was cut short")
    if head.startswith(_TIFF_MAGIC):
        return Failure("short", True, None, where, "the first read of the file was cut short")
    return Failure("not-raster", False, None, where, "the file is not a GeoTIFF")
