"""Keeping secrets out of errors, stored metadata and logs: one rule, applied everywhere.

Remote providers read with credentials (Earth Engine OAuth tokens, Planetary Computer SAS
tokens in asset URLs, tokens in a STAC API URL). Libraries underneath log URLs and put them
into exception texts. The rule (:func:`redact`): URL query strings and user:password parts,
secret-looking parameters (``sig``, ``se``, ``token``, ``key`` …), bearer tokens, Google access
tokens, PEM private keys and JSON secret fields are replaced by ``<redacted>``.

It is applied where values are raised or logged, and where they are **stored**:
:func:`scrub` cleans a metadata tree (dict keys that name a secret lose their value) before
every writer (GeoTIFF tags, GeoParquet and NPZ metadata, NetCDF attributes, the manifest,
``run.json``) serialises it. For logs, :func:`install_log_redaction` puts a record factory in
front of :mod:`logging`, so that every record of every logger — including loggers that
libraries create after this call (``pystac_client``, ``urllib3``, ``requests``, GDAL through
``rasterio``) — is redacted before any handler, filter or ``lastResort`` sees it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@'\"<>]+@")
_QUERY = re.compile(r"(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*")
_PARAMS = re.compile(
    r"(?i)\b(sig|token|se|st|sv|sp|skoid|sktid|key|api_key|access_token|refresh_token|client_secret|"
    r"assertion|private_key)=[^&\s'\"]+"
)
_BEARER = re.compile(r"(?i)bearer\s+[\w.\-~+/]+=*")
_GOOGLE_TOKEN = re.compile(r"\bya29\.[\w\-.]+")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_JSON_SECRETS = re.compile(
    r"(?i)([\"']?(?:access_token|refresh_token|client_secret|private_key|id_token)[\"']?\s*[:=]\s*)[\"'][^\"']*[\"']"
)


#: what every pattern above needs somewhere in the text: most stored strings (ids, dates, band
#: names) have none of it and are returned after one search instead of seven substitutions
_MAYBE = re.compile(r"://|=|ya29\.|-----BEGIN|(?i:bearer|access_token|refresh_token|client_secret|private_key|id_token)")


def redact(text: object) -> str:
    """`text` without URL query strings, SAS signatures, tokens, keys or bearer credentials."""
    text = str(text)
    if _MAYBE.search(text) is None:
        return text
    out = _QUERY.sub(r"\1?<redacted>", text)
    out = _USERINFO.sub(r"\1<redacted>@", out)
    out = _PARAMS.sub(r"\1=<redacted>", out)
    out = _BEARER.sub("Bearer <redacted>", out)
    out = _GOOGLE_TOKEN.sub("<redacted>", out)
    out = _PEM.sub("<redacted private key>", out)
    return _JSON_SECRETS.sub(r'\1"<redacted>"', out)


_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_\-.])?(?:token|secret|password|passwd|sig|signature|api[_\-]?key|private[_\-]?key|"
    r"authorization|credentials?|access[_\-]?key|session[_\-]?key)$"
)


def scrub(value: Any) -> Any:
    """A copy of a metadata tree (dicts, lists, strings) that is safe to store: every string
    redacted, and the value of any key that names a secret (``token``, ``password`` …) dropped."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: ("<redacted>" if isinstance(k, str) and _SECRET_KEY.match(k) and v not in (None, "")
                    else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message with :func:`redact` (always lets the record through)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _clean_record(record)
        return True


def _clean_record(record: logging.LogRecord) -> None:
    try:
        msg = record.getMessage()
    except Exception:  # a malformed record is the logging system's business
        return
    clean = redact(msg)
    if clean != msg:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_FILTER = RedactingFilter()


def install_log_redaction(*packages: str) -> None:
    """Redact every log record from now on, whichever logger makes it (idempotent).

    A record factory wraps :func:`logging.getLogRecordFactory`, so loggers that do not exist
    yet are covered too; `packages` (kept for callers that name them) also get the filter on
    their existing loggers, and ``logging.lastResort`` gets it as a last line.
    """
    current = logging.getLogRecordFactory()
    if not getattr(current, "_eoembed_redacts", False):

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            _clean_record(record)
            return record

        factory._eoembed_redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)
    last = logging.lastResort
    if last is not None and _FILTER not in last.filters:
        last.addFilter(_FILTER)
    roots = set(packages)
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in roots]
    for name in names + list(roots):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
