"""Reading the connect flow's browser requests: the query, the binding cookie, the origin, the
form's body.

Strict where a wrong reading would matter (a parameter or the binding cookie given twice is
refused, not resolved one way or the other), bounded in time where a client could make the
server wait (the form's body), and without echoing anything the browser sent.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import anyio

from agentguard.asgi._types import Message, Receive, Scope
from agentguard.errors import ConfigurationError, InvalidRequest, RequestTimeout

__all__ = [
    "NamedCookie",
    "header_values",
    "is_same_origin",
    "named_cookie",
    "public_origin_of",
    "read_query",
    "receive_within",
]

MAX_QUERY_FIELDS = 32
_COOKIE_SPACE = b" \t"
_INVISIBLE = bytes(b for b in range(256) if not 0x21 <= b <= 0x7E)
"""Bytes that no cookie name of ours holds: a name equal to ours once they are removed is a
look-alike (a browser sees another name; Python's ``str.strip()`` would see ours)."""


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of the header ``name`` (lower case), in order."""
    return [value for key, value in scope.get("headers", ()) if key == name]


def read_query(scope: Scope) -> dict[str, str]:
    """The query parameters, each at most once (any name given twice is refused: 400).

    Percent-decoded as UTF-8; a query that is not ASCII, not ``name=value`` pairs, not UTF-8
    once decoded, or has more than 32 fields is refused. Names are kept as they are: callers
    read the ones they know and ignore the rest (a mail tracker's ``utm_*``, an RFC 9207 ``iss``).
    """
    raw: bytes = scope.get("query_string", b"")
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError included
        raise InvalidRequest("the address's query is not valid") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in found:
            raise InvalidRequest("a parameter of the address is given more than once")
        found[name] = value
    return found


class NamedCookie(NamedTuple):
    """What the browser sent under one cookie name (:func:`named_cookie`).

    Attributes:
        values: the value of every cookie of exactly that name, in order.
        lookalikes: how many cookies have a name that is that name only once bytes a browser
            does not trim (controls, other whitespace, bytes past ASCII) are ignored.
    """

    values: list[str]
    lookalikes: int


def named_cookie(scope: Scope, name: str) -> NamedCookie:
    """The cookies of the Cookie header(s) whose name is exactly ``name``, and its look-alikes.

    Each ``;``-separated pair is trimmed of SP and HTAB only, as browsers do (RFC 6265 §5.2),
    then its name compared byte for byte. Python's ``str.strip()`` would also trim NBSP (0xA0),
    NEL (0x85) and other bytes a browser keeps: to a browser ``\\xa0__Host-x`` is not a
    ``__Host-`` cookie (a sibling host may set it), so reading it as ``__Host-x`` would undo
    the prefix. Such a name is not this cookie; it is counted in ``lookalikes`` so the caller
    can refuse rather than guess. More than one value means cookies of the same name from
    different paths or domains: the caller cannot tell which is its own either.
    """
    wanted = name.encode("ascii")
    values: list[str] = []
    lookalikes = 0
    for header in header_values(scope, b"cookie"):
        for item in header.split(b";"):
            key, sep, value = item.strip(_COOKIE_SPACE).partition(b"=")
            key = key.strip(_COOKIE_SPACE)
            if not sep:
                continue
            if key == wanted:
                values.append(value.strip(_COOKIE_SPACE).decode("latin-1").strip('"'))
            elif key.translate(None, _INVISIBLE) == wanted:
                lookalikes += 1
    return NamedCookie(values, lookalikes)


def receive_within(receive: Receive, *, idle: float, total: float) -> Receive:
    """``receive`` under deadlines: each message within ``idle`` seconds, all of them within
    ``total`` seconds of the first call; past either, :class:`RequestTimeout` (408).

    A browser sends the connect form (a few hundred bytes) at once; a client that sends the
    headers and then trickles or stalls would otherwise hold a connection and a task for as
    long as it liked.
    """
    deadline: float | None = None

    async def bounded() -> Message:
        nonlocal deadline
        now = anyio.current_time()
        if deadline is None:
            deadline = now + total
        remaining = deadline - now
        with anyio.move_on_after(max(0.0, min(idle, remaining))):
            message: Message = await receive()
            return message
        if remaining <= idle:
            raise RequestTimeout(f"the form did not arrive within {total:g} s")
        raise RequestTimeout(f"no part of the form arrived for {idle:g} s")

    return bounded


def is_same_origin(scope: Scope, public_origin: str) -> bool:
    """Whether the browser says this request comes from a page of ``public_origin``.

    ``Sec-Fetch-Site`` and ``Origin`` are set by the browser (a page cannot forge them). Each
    one present must agree (``same-origin``; the public origin, or ``null``, which browsers
    send for a form posted from a page whose referrer policy is ``no-referrer``), and at
    least one must say so positively. Neither present (a very old browser, or a script that
    is not a browser) is refused: the form cannot be told from a cross-site one.
    """
    sites = header_values(scope, b"sec-fetch-site")
    origins = header_values(scope, b"origin")
    if len(sites) > 1 or len(origins) > 1:
        return False
    site = sites[0].decode("latin-1").strip().lower() if sites else None
    origin = origins[0].decode("latin-1").strip() if origins else None
    if site is not None and site != "same-origin":
        return False
    if origin is not None and origin not in ("null", public_origin):
        return False
    return site == "same-origin" or origin == public_origin


def public_origin_of(public_origin: str) -> str:
    """``public_origin`` as browsers serialise an origin (lower case, no default port);
    :class:`ConfigurationError` if it is not ``scheme://host[:port]``."""
    parts = urlsplit(public_origin.rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "public_origin is an absolute http(s) origin, such as https://gateway.example"
        )
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError("public_origin is scheme://host[:port] only, no path")
    default = {"http": 80, "https": 443}[parts.scheme]
    port = "" if parts.port in (None, default) else f":{parts.port}"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}{port}"
