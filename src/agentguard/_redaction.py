"""Keeping real credentials out of third-party logs.

Two places in the HTTP stack the proxy uses would log a credential the gateway attaches or an
upstream echoes: httpx's INFO line ``HTTP Request: GET https://host/path?api_key=... "200 OK"``
carries the full URL (a query-placed key), and httpcore's DEBUG trace prints raw response
headers (a vendor echoing the key in a header). :func:`install_log_redaction` adds filters to
those loggers: the query string is replaced by ``?<redacted>`` and header traces are dropped.
It is idempotent and is called whenever a proxy or a minter is created.

It also quiets one expected event: a stream agentguard cuts (its lease cut by a revocation, a
credential echoed mid-stream) ends by raising to the ASGI server, which drops the connection
without a clean end of body, so the client can tell. uvicorn logs that as "Exception in ASGI
application" with a traceback; the filter turns such a record into one WARNING line naming
the reason (the cut itself is in the audit log).
"""

from __future__ import annotations

import logging
import threading

__all__ = ["install_log_redaction"]

_HTTPCORE_LOGGERS = ("httpcore.http11", "httpcore.http2", "httpcore.connection", "httpcore.proxy")
_lock = threading.Lock()
_installed = False


class _RedactURLQuery(logging.Filter):
    """Rewrites httpx's request log line so the query string is not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 2:
            url = str(record.args[1])
            if "?" in url:
                args = list(record.args)
                args[1] = url.split("?", 1)[0] + "?<redacted>"
                record.args = tuple(args)
        return True


def _cuts(error: BaseException | None) -> list[BaseException] | None:
    """The stream cuts ``error`` is made of, or ``None`` if anything else is in it."""
    if error is None:
        return None
    group = getattr(error, "exceptions", None)  # an exception group (anyio's task groups)
    if isinstance(group, tuple):
        found: list[BaseException] = []
        for inner in group:
            cuts = _cuts(inner)
            if cuts is None:
                return None
            found += cuts
        return found
    return [error] if getattr(error, "agentguard_stream_cut", False) else None


class _QuietStreamCuts(logging.Filter):
    """Rewrites the ASGI server's traceback for a stream agentguard cut into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info:
            return True
        cuts = _cuts(record.exc_info[1])
        if not cuts:
            return True
        reasons = {getattr(getattr(cut, "error", None), "reason", None) for cut in cuts}
        names = sorted(str(getattr(reason, "value", reason)) for reason in reasons)
        record.msg = "agentguard cut a stream (%s); the connection was closed without a clean end"
        record.args = (", ".join(names),)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _DropHeaderTraces(logging.Filter):
    """Drops httpcore's DEBUG records that print request or response headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.DEBUG and "headers" in str(record.msg))


def install_log_redaction() -> None:
    """Install the filters once per process."""
    global _installed  # noqa: PLW0603 - a process-wide, install-once switch
    with _lock:
        if _installed:
            return
        logging.getLogger("httpx").addFilter(_RedactURLQuery())
        for name in _HTTPCORE_LOGGERS:
            logging.getLogger(name).addFilter(_DropHeaderTraces())
        logging.getLogger("uvicorn.error").addFilter(_QuietStreamCuts())
        _installed = True
