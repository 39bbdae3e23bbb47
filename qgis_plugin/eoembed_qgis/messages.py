"""How the plugin talks to the user: one line in the message bar, details in the log panel."""

from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

#: the QGIS log panel tab the plugin writes to
LOG_CATEGORY = "eoembed"


def log(text: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
    """Write `text` to the "eoembed" tab of the QGIS log panel."""
    QgsMessageLog.logMessage(text, LOG_CATEGORY, level)


def first_sentence(text: str) -> str:
    """The first line of `text`, trimmed: what fits in a message bar."""
    for line in str(text).strip().splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"


def error(iface, message: str, details: str = "") -> None:
    """One sentence in the message bar (with a "more" button) and the details in the log."""
    line = first_sentence(message)
    log(f"{line}\n{details}".rstrip(), Qgis.Critical)
    bar = iface.messageBar() if iface is not None else None
    if bar is not None:
        more = (details or "").strip() or None
        if more:
            more += "\n\n(also in the log panel, tab \"eoembed\")"
        bar.pushMessage("eoembed", line, more, Qgis.Critical, 0)


def info(iface, message: str, level: Qgis.MessageLevel = Qgis.Info, duration: int = 6) -> None:
    """A short message bar line (and the same line in the log)."""
    log(message, level)
    bar = iface.messageBar() if iface is not None else None
    if bar is not None:
        bar.pushMessage("eoembed", message, level, duration)
