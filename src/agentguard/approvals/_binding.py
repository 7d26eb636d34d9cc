"""What an approval is bound to: one exact call, hashed.

An approval lets exactly one call run: the one an operator saw. :func:`binding` hashes every
field that makes a call that call: the key family that asked, the user, the service, the
method, the canonical target (the mount point, the path, and the query; only the field of a
vendor-native query placement is left out, since the proxy swaps the placeholder there), the
SHA-256 of the exact body and its ``Content-Type``, the request headers that say what the call
does (every header but the per-attempt, transport and credential ones: :func:`bound_headers`),
and the version of the rule that held it back. The agent's retry is
hashed the same way; the approval is consumed only when the two hashes are equal.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple
from urllib.parse import unquote_plus

from agentguard._request import GuardRequest
from agentguard.credentials._keyscan import KEY_SHAPE

__all__ = [
    "PREVIEW_BYTES",
    "Placement",
    "binding",
    "body_digest",
    "bound_headers",
    "bound_target",
    "display_headers",
    "display_query",
    "preview",
]

PREVIEW_BYTES = 64 * 1024
"""The most of a body an operator is shown: the default ``ApprovalPolicy.max_body``, so by
default an operator sees every byte of a call they approve."""


def body_digest(body: bytes) -> str:
    """``sha-256:<hex>`` of ``body``."""
    return "sha-256:" + hashlib.sha256(body).hexdigest()


class Placement(NamedTuple):
    """Where a vendor-native placement put the placeholder key (the proxy's ``X-Api-Key``
    header or ``api_key`` query field): that one field is the credential, swapped by the
    proxy, so it is neither bound nor shown. Behind the middleware the key is in
    ``Authorization``, which is never bound."""

    kind: str  # "query" or "header"
    name: str


def bound_target(request: GuardRequest, placement: Placement | None = None) -> bytes:
    """The canonical target the approval binds: the mount point (``root_path``) and the one
    encoding of the path below it the guard authorises (and a proxy forwards), then the query
    as sent, less only the field of a vendor-native query placement. Every other field is
    bound, whatever it holds (the agent's own key included)."""
    target = request.root_path.encode("utf-8", "surrogateescape") + (request.target().raw or b"/")
    query = request.query_string
    if placement is not None and placement.kind == "query":
        fields = [
            field
            for field in query.split(b"&")
            if unquote_plus(field.partition(b"=")[0].decode("latin-1")) != placement.name
        ]
        query = b"&".join(fields)
    return target + b"?" + query if query else target


def binding(
    *,
    family_id: str,
    user_id: str,
    service: str | None,
    method: str,
    target: bytes,
    digest: str,
    rule_version: str,
    content_type: bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> str:
    """Hex SHA-256 over the bound fields, unambiguously encoded (a JSON array).

    ``content_type`` (every ``Content-Type`` field joined with commas) is bound with the body:
    the same bytes read as a form or as JSON are a different call.
    """
    fields = [
        "agentguard-approval/1",
        family_id,
        user_id,
        service,
        method.upper(),
        target.decode("latin-1"),
        digest,
        rule_version,
        None if content_type is None else content_type.decode("latin-1"),
        [list(pair) for pair in headers],
    ]
    encoded = json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(encoded).hexdigest()


# Headers a client sets per attempt, or that carry the credential and routing: not part of
# what a call *does*, so neither bound nor shown. Every other header is both.
_VOLATILE = frozenset(
    {
        "authorization", "dpop", "agentguard-approval", "content-length",
        "transfer-encoding", "connection", "keep-alive", "te", "trailer",
        "proxy-connection", "proxy-authorization", "expect", "user-agent", "accept",
        "accept-encoding", "accept-language", "accept-charset", "cache-control", "pragma",
        "cookie", "traceparent", "tracestate", "baggage", "x-request-id", "x-correlation-id",
        "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip",
        "via", "date", "idempotency-key", "x-idempotency-key", "origin", "referer",
    }
)  # fmt: skip
_VOLATILE_PREFIXES = ("sec-", "x-stainless-", "x-amzn-trace")


def bound_headers(
    request: GuardRequest, placement: Placement | None = None
) -> tuple[tuple[str, str], ...]:
    """The request headers an approval binds and shows, in the order sent: all but the
    per-attempt, transport and credential ones (:data:`_VOLATILE`) and the header of a
    vendor-native header placement. ``Host`` is bound (an app may route on it), and so is the
    kind of exchange: a websocket handshake is never the approved HTTP call."""
    dropped = None
    if placement is not None and placement.kind == "header":
        dropped = placement.name.lower()
    kept = [("(exchange)", "websocket" if request.scheme in ("ws", "wss") else "http")]
    for raw_name, value in request.headers:
        name = raw_name.decode("latin-1").lower()
        if name in _VOLATILE or name.startswith(_VOLATILE_PREFIXES) or name == dropped:
            continue
        kept.append((name, value.decode("latin-1")))
    return tuple(kept)


def display_headers(headers: tuple[tuple[str, str], ...]) -> str:
    """``headers`` for the operator's eyes, one ``name: value`` per line, keys replaced by
    ``[key]``; ``""`` when there are none."""
    lines = [f"{name}: {value}" for name, value in headers if name != "(exchange)"]
    if ("(exchange)", "websocket") in headers:
        lines.insert(0, "(a websocket handshake)")
    text = KEY_SHAPE.sub(b"[key]", "\n".join(lines).encode("latin-1")).decode("latin-1")
    return text.replace("\x00", "\ufffd")


def display_query(request: GuardRequest) -> str:
    """The query for the operator's eyes: keys replaced by ``[key]``, at most 1 KiB."""
    text = KEY_SHAPE.sub(b"[key]", request.query_string).decode("latin-1")
    return text.replace("\x00", "\ufffd")[:1024]


def preview(body: bytes) -> str:
    """At most :data:`PREVIEW_BYTES` of ``body`` as text for the operator deciding (invalid
    UTF-8 replaced; agentguard keys replaced by ``[key]``)."""
    head = KEY_SHAPE.sub(b"[key]", body[: PREVIEW_BYTES + 64])[:PREVIEW_BYTES]
    # NUL is replaced too: a text column in PostgreSQL cannot hold it
    text = head.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return text[:PREVIEW_BYTES]
