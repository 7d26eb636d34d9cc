"""Fake vendor APIs for tests and demos: plain ASGI apps that record what they receive.

Serve them in-process (``httpx.ASGITransport``, or as a ``ProxyApp``'s ``transport``) or on a
real socket with uvicorn. :class:`FakeUpstream` behaves like a vendor API keyed by one real
credential; like some real vendors, it echoes a wrong key back in its 401 body, which is exactly
what the proxy must never let through. :class:`FakeTokenExchange` is an RFC 8693 token endpoint
that mints user-scoped tokens for an admin credential.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["FakeTokenExchange", "FakeUpstream", "RecordedRequest"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake vendor saw it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (case-insensitive), or ``None``."""
        found = [value for key, value in self.headers if key == name.lower()]
        return found[-1] if found else None

    @property
    def raw(self) -> str:
        """Everything received, as one string: handy for "never appears" assertions."""
        lines = [f"{self.method} {self.path}?{self.query}"]
        lines += [f"{key}: {value}" for key, value in self.headers]
        return "\n".join(lines) + "\n" + self.body.decode("utf-8", "replace")


@dataclass
class FakeUpstream:
    """A vendor API that accepts ``accepted`` keys in one place and answers JSON.

    Args:
        name: shown in every answer.
        accepted: keys that authenticate; empty accepts anything.
        header: where the vendor reads its key: ``"authorization"`` (Bearer) or a header name;
            ``query`` overrides it with a query parameter name.
        respond: optional ``async (request) -> (status, headers, body)`` to script an answer.
    """

    name: str = "crm"
    accepted: set[str] = field(default_factory=set)
    header: str = "authorization"
    query: str | None = None
    respond: (
        Callable[[RecordedRequest], Awaitable[tuple[int, list[tuple[str, str]], bytes]]] | None
    ) = None
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def presented_key(self, request: RecordedRequest) -> str | None:
        """The key the vendor would read from ``request``."""
        if self.query is not None:
            values = [
                v for k, v in parse_qsl(request.query, keep_blank_values=True) if k == self.query
            ]
            return values[-1] if values else None
        value = request.header(self.header)
        if value is not None and self.header == "authorization":
            return value.removeprefix("Bearer ").strip()
        return value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = RecordedRequest(
            method=scope["method"],
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=tuple(
                (key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]
            ),
            body=body,
        )
        with self._lock:
            self.requests.append(request)
        if self.respond is not None:
            status, headers, content = await self.respond(request)
        else:
            status, headers, content = self._default(request)
        raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers]
        raw_headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})

    def _default(self, request: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        key = self.presented_key(request)
        if self.accepted and key not in self.accepted:
            # What some real vendors do, and what must never reach the agent:
            text = f"Incorrect API key provided: {key}"
            return 401, [("content-type", "application/json")], json.dumps({"error": text}).encode()
        document = {
            "service": self.name,
            "method": request.method,
            "path": request.path,
            "ok": True,
        }
        return 200, [("content-type", "application/json")], json.dumps(document).encode()


@dataclass
class FakeTokenExchange:
    """An RFC 8693 token endpoint: ``POST /token`` with the admin key as Bearer.

    Mints ``minted-<subject>-<n>`` tokens living ``lifetime`` seconds and records each call.
    """

    admin_key: str
    lifetime: int = 300
    calls: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.calls.append(form)
        document: dict[str, str | int]
        if headers.get("authorization") != f"Bearer {self.admin_key}":
            status, document = 401, {"error": "invalid_client"}
        elif form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            status, document = 400, {"error": "unsupported_grant_type"}
        else:
            status, document = (
                200,
                {
                    "access_token": f"minted-{form.get('subject_token')}-{len(self.calls)}",
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": self.lifetime,
                },
            )
        content = json.dumps(document).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
