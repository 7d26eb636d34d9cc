"""The fake OAuth vendor's HTTP plumbing: reading forms, answering JSON, the consent page.

Plain ASGI, no framework: the fake must run wherever the tests do. Every value placed in HTML is
escaped (the consent page echoes request parameters back as hidden fields).
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "Answer",
    "Receive",
    "Scope",
    "Send",
    "consent_page",
    "error_page",
    "json_answer",
    "parse_form",
    "read_body",
    "redirect",
    "send_answer",
    "with_query",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY = 64 * 1024
_PAGE_HEADERS = (
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
)


class Answer(NamedTuple):
    """A complete response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or ``None`` when it is longer than ``limit``."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def parse_form(raw: bytes | str) -> dict[str, str] | None:
    """A form (or query string) with each name once, or ``None`` (RFC 6749 §3.1)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError):
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


def json_answer(
    status: int, document: Mapping[str, Any], headers: Iterable[tuple[str, str]] = ()
) -> Answer:
    """A JSON answer that no cache keeps (RFC 6749 §5.1)."""
    return Answer(
        status,
        (
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            ("pragma", "no-cache"),
            *headers,
        ),
        json.dumps(document).encode(),
    )


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to its query."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def redirect(location: str) -> Answer:
    """A 302 to ``location``."""
    return Answer(302, (("location", location), ("cache-control", "no-store")), b"")


def error_page(status: int, message: str) -> Answer:
    """An HTML error page: what a vendor shows when it must not redirect (RFC 6749 §4.1.2.1)."""
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Error</title></head>"
        f"<body><h1>Error</h1><p id=error>{html.escape(message)}</p></body></html>"
    )
    return Answer(status, _PAGE_HEADERS, body.encode())


def consent_page(
    *, vendor: str, action: str, params: Mapping[str, str], users: Iterable[str]
) -> Answer:
    """The consent page: pick a vendor account, allow or deny. No script, one form."""
    esc = html.escape
    hidden = "".join(
        f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'
        for name, value in params.items()
    )
    options = "".join(f'<option value="{esc(user)}">{esc(user)}</option>' for user in users)
    scopes = params.get("scope", "") or "(no scopes)"
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Sign in to {esc(vendor)}</title></head><body>"
        f"<h1>{esc(vendor)}</h1>"
        f"<p><span id=client>{esc(params.get('client_id', ''))}</span> asks for "
        f"<span id=scopes>{esc(scopes)}</span>.</p>"
        f'<form method="post" action="{esc(action)}">{hidden}'
        f'<label for="login">Account</label> <select id="login" name="login">{options}</select> '
        '<button id="allow" type="submit" name="decision" value="allow">Allow</button> '
        '<button id="deny" type="submit" name="decision" value="deny">Deny</button>'
        "</form></body></html>"
    )
    return Answer(200, _PAGE_HEADERS, body.encode())


async def send_answer(send: Send, answer: Answer) -> None:
    """Send ``answer`` whole."""
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
