"""Keeping secrets out of errors, meta and logs: signed URLs, SAS tokens, OAuth bearer tokens.

Remote providers read with credentials (Earth Engine OAuth tokens, Planetary Computer SAS
tokens in asset URLs). Libraries underneath log URLs and put them into exception texts;
everything a provider raises or records goes through :func:`redact`, and the loggers of those
libraries get a filter that redacts their records before any handler sees them.
"""

from __future__ import annotations

import logging
import re

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


def redact(text: object) -> str:
    """`text` without URL query strings, SAS signatures, tokens, keys or bearer credentials."""
    out = _USERINFO.sub(r"\1<redacted>@", str(text))
    out = _QUERY.sub(r"\1?<redacted>", out)
    out = _PARAMS.sub(r"\1=<redacted>", out)
    out = _BEARER.sub("Bearer <redacted>", out)
    out = _GOOGLE_TOKEN.sub("<redacted>", out)
    out = _PEM.sub("<redacted private key>", out)
    return _JSON_SECRETS.sub(r'\1"<redacted>"', out)


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message with :func:`redact` (always lets the record through)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is the logging system's business
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


_FILTER = RedactingFilter()


def install_log_redaction(*packages: str) -> None:
    """Attach the redacting filter to every existing logger of `packages` (and their roots).

    Logger filters are not inherited, so each module logger gets its own; idempotent.
    """
    roots = set(packages)
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in roots]
    for name in names + list(roots):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
