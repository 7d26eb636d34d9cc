"""Reading a bounded ``application/x-www-form-urlencoded`` body, as OAuth endpoints need."""

from __future__ import annotations

from urllib.parse import parse_qsl

from agentguard.asgi._types import Receive, Scope
from agentguard.errors import InvalidRequest, PayloadTooLarge

__all__ = ["read_form"]

FORM_TYPE = b"application/x-www-form-urlencoded"


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body, refusing more than ``max_bytes`` before reading it all."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if not value.isdigit():
                raise InvalidRequest("Content-Length is not a number")
            if int(value) > max_bytes:
                raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("the client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_form(scope: Scope, receive: Receive, max_bytes: int) -> dict[str, str]:
    """The form parameters; each may appear once (RFC 6749 §3.1) and must be UTF-8."""
    content_type = next(
        (value for name, value in scope.get("headers", ()) if name == b"content-type"), b""
    )
    if content_type.split(b";")[0].strip().lower() != FORM_TYPE:
        raise InvalidRequest("send the parameters as application/x-www-form-urlencoded")
    body = await read_body(scope, receive, max_bytes)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            errors="strict",
            max_num_fields=32,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form body is not valid UTF-8 form encoding") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise InvalidRequest("a parameter was sent more than once")
        form[name] = value
    return form
