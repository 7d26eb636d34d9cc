"""Structured logs for the gateway: one JSON object per line, a request id on every record.

:class:`RequestIdMiddleware` gives each HTTP request an id (the client's ``X-Request-Id`` when it
is short and plain, else a fresh one), puts it in the request headers so the guard's audit
events carry the same id, returns it in the response, and writes one access record per request
with the method, the path without its query string (a query may carry a vendor key), the status
and the duration. :func:`configure_logging` installs :class:`JSONFormatter` on the root logger
and :func:`agentguard._redaction.install_log_redaction`, so third-party HTTP logs lose their
query strings and header traces.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from agentguard._redaction import install_log_redaction
from agentguard.asgi._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["JSONFormatter", "RequestIdMiddleware", "configure_logging", "current_request_id"]

_request_id: ContextVar[str | None] = ContextVar("agentguard_request_id", default=None)
_PLAIN_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}\Z")
_EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "client", "service")
access_logger = logging.getLogger("agentguard.access")


def current_request_id() -> str | None:
    """The id of the request being handled by this task, if any."""
    return _request_id.get()


_KEY_IN_PATH = re.compile(r"ag_(?:at|rt)_[0-9A-Za-z]*")


def _redacted_path(path: object) -> object:
    """The path with anything shaped like one of our keys cut to its prefix.

    The guard refuses a key outside the credential position (400), but the access log records
    every request, refused ones included: a key an agent put in the path must not reach it.
    """
    if not isinstance(path, str) or "ag_" not in path:
        return path
    return _KEY_IN_PATH.sub(lambda found: found.group(0)[:6] + "[redacted]", path)


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object: ``ts``, ``level``, ``logger``, ``msg``, ids."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,  # which worker, with serve --workers
        }
        request_id = getattr(record, "request_id", None) or _request_id.get()
        if request_id is not None:
            document["request_id"] = request_id
        for name in _EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            document["error"] = record.exc_info[0].__name__
            document["trace"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send every log record to stderr, as JSON (``fmt="json"``) or plain text."""
    install_log_redaction()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RequestIdMiddleware:
    """Pure ASGI middleware: request ids and one access record per HTTP request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        given = next((value for key, value in headers if key == b"x-request-id"), None)
        if given is not None and _PLAIN_ID.match(given):
            request_id = given.decode("ascii")
        else:
            request_id = secrets.token_hex(8)
            headers = [(k, v) for k, v in headers if k != b"x-request-id"]
            headers.append((b"x-request-id", request_id.encode("ascii")))
            scope = {**scope, "headers": headers}
        status: list[int] = []
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", ()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            await send(message)

        token = _request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log and scope["type"] == "http":
                client = scope.get("client")
                access_logger.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": _redacted_path(scope.get("path")),
                        "status": status[0] if status else None,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "client": client[0] if client else None,
                        "request_id": request_id,
                    },
                )
            _request_id.reset(token)
