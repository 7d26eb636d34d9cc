"""Where the key travels: taking our placeholder out, putting the real credential in.

The agent calls the proxy exactly as it would call the vendor, with our placeholder where the
vendor's key goes. These functions find it there, strip it (and the agent's
``Authorization``/``DPoP``) from what goes upstream, and attach the real credential in the same
place. A key anywhere else is refused by :mod:`agentguard.credentials._keyscan`.

Two more things never pass through as the agent sent them:

- ``Accept-Encoding``: the proxy asks upstream for :data:`UPSTREAM_ACCEPT_ENCODING` only, the
  codings it decodes and scans, whatever the agent asked for.
- Method overrides (``X-HTTP-Method-Override``, ``X-Method-Override``, ``X-HTTP-Method``, and
  ``_method`` or those names in the query or body): :func:`override_methods` lists them so the
  permission check can require the strictest of the request's method and every override, and
  :func:`upstream_headers`/:func:`upstream_query` strip them from headers and query, so the
  vendor only ever acts on the request's own, authorised method. Names are read the way the
  most lenient frameworks read them (:mod:`agentguard.credentials._overrides`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote_plus

from agentguard._request import OWS, TOKEN68, Credentials, GuardRequest, parse_authorization
from agentguard._secret import Secret
from agentguard._services import Placement, ServiceConfig
from agentguard.credentials._overrides import (
    METHOD_OVERRIDE_NAMES,
    body_overrides,
    is_method_override,
    override_values,
    split_parameters,
)
from agentguard.errors import BadGateway, InvalidRequest, MissingCredentials, Reason

__all__ = [
    "HOP_BY_HOP",
    "METHOD_OVERRIDE_NAMES",
    "UPSTREAM_ACCEPT_ENCODING",
    "attach_credential",
    "extract_placeholder",
    "is_method_override",
    "override_methods",
    "upstream_headers",
    "upstream_query",
]

UPSTREAM_ACCEPT_ENCODING = b"gzip, deflate"
"""The only ``Accept-Encoding`` the proxy sends upstream: the codings it decodes and scans."""

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}\Z")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded, whatever the placement: the agent's own credentials and routing headers.
_ALWAYS_DROPPED = frozenset(
    {
        b"authorization",
        b"dpop",
        b"agentguard-approval",  # names an approval to us; the vendor has no use for it
        b"host",
        b"cookie",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"forwarded",
        b"x-real-ip",
    }
)


def override_methods(request: GuardRequest, body: bytes | None = None) -> list[str]:
    """Every method an override header, query parameter or (given the ``body``) body field of
    ``request`` asks for; see :mod:`agentguard.credentials._overrides` for the names and bodies
    read.

    A value that is not an HTTP method token becomes ``"OVERRIDE"``, an unknown method, which
    the default route rules treat as a write.
    """
    found = [value.decode("latin-1") for name, value in request.headers if is_method_override(name)]
    found += override_values(request.query_string)
    if body is not None:
        found += body_overrides(body, request.header(b"content-type"))
    methods = []
    for value in found:
        for item in value.split(","):
            method = item.strip().upper()
            methods.append(method if _TOKEN.match(method) else "OVERRIDE")
    return list(dict.fromkeys(methods))  # each authorised once


def _query_values(query_string: bytes, name: str) -> list[str]:
    values = []
    for piece in query_string.decode("latin-1").split("&"):
        key, _, value = piece.partition("=")
        if unquote_plus(key) == name:
            values.append(unquote_plus(value))
    return values


def _single(values: Sequence[str], where: str, *, trim: str = "") -> str:
    """The one value in ``values``, less the characters of ``trim`` at either end (a header's
    :data:`OWS`, never the other characters ``str.strip()`` drops, such as NEL or NO-BREAK
    SPACE), which must be a well-formed token."""
    if not values:
        raise MissingCredentials(f"no key: send it in {where}, where the vendor expects its key")
    if len(values) > 1:
        raise InvalidRequest(f"send exactly one key in {where}")
    value = values[0].strip(trim)  # "" strips nothing
    if not TOKEN68.match(value):
        raise InvalidRequest(f"the key in {where} is not a well-formed token")
    return value


def extract_placeholder(request: GuardRequest, service: ServiceConfig) -> Credentials:
    """The placeholder key from where ``service`` expects its key.

    For header and query placements the scheme is ``dpop`` when the request carries a ``DPoP``
    proof, ``bearer`` otherwise, so bound keys work through vendor-native placements too.
    """
    if service.placement is Placement.BEARER:
        return parse_authorization(request, ("bearer", "dpop"))
    assert service.parameter is not None  # noqa: S101 - ServiceConfig validated it
    if service.placement is Placement.HEADER:
        raw = request.header_values(service.parameter.lower().encode("latin-1"))
        values = [value.decode("latin-1") for value in raw]
        key = _single(values, f"the {service.parameter} header", trim=OWS)
    else:
        key = _single(
            _query_values(request.query_string, service.parameter),
            f"the {service.parameter} query parameter",
        )
    scheme = "dpop" if request.header(b"dpop") is not None else "bearer"
    return Credentials(scheme, key)


def upstream_headers(
    request: GuardRequest,
    service: ServiceConfig,
    *,
    client_address: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The request headers to forward: no hop-by-hop, no agent credentials, no placeholder.

    Method-override headers are dropped, and the agent's ``Accept-Encoding`` is replaced by
    :data:`UPSTREAM_ACCEPT_ENCODING`. ``Content-Length`` is dropped when the request also
    carried a ``Transfer-Encoding``: the server framed the body by the latter, so the length is
    not the body's.
    """
    connection_listed = {
        token.strip().lower().encode("latin-1")
        for value in request.header_values(b"connection")
        for token in value.decode("latin-1").split(",")
    }
    dropped = HOP_BY_HOP | _ALWAYS_DROPPED | connection_listed | {b"accept-encoding"}
    if service.placement is Placement.HEADER and service.parameter is not None:
        dropped = dropped | {service.parameter.lower().encode("latin-1")}
    if request.header(b"transfer-encoding") is not None:
        dropped = dropped | {b"content-length"}
    headers = [
        (name, value)
        for name, value in request.headers
        if name.lower() not in dropped and not is_method_override(name)
    ]
    headers.append((b"accept-encoding", UPSTREAM_ACCEPT_ENCODING))
    if service.forward_headers:
        host = request.header(b"host")
        if client_address:
            headers.append((b"x-forwarded-for", client_address.encode("latin-1")))
        headers.append((b"x-forwarded-proto", request.scheme.encode("latin-1")))
        if host is not None:
            headers.append((b"x-forwarded-host", host))
    return headers


def upstream_query(query_string: bytes, service: ServiceConfig) -> bytes:
    """The query string to forward: without the placeholder parameter nor method-override
    parameters (every piece split on ``&`` and ``;``, the others kept raw)."""
    if not query_string:
        return query_string
    parts = split_parameters(query_string)
    kept: list[bytes] = []
    for index in range(0, len(parts), 2):
        piece = parts[index]
        name = piece.decode("latin-1").partition("=")[0]
        if service.placement is Placement.QUERY and unquote_plus(name) == service.parameter:
            continue
        if is_method_override(name):
            continue
        if kept:
            kept.append(parts[index - 1])  # the separator before this piece
        kept.append(piece)
    return b"".join(kept)


def attach_credential(
    headers: list[tuple[bytes, bytes]], query: bytes, service: ServiceConfig, credential: Secret
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Put the real ``credential`` where ``service`` expects it."""
    from urllib.parse import quote

    value = credential.reveal()
    if not (value and value.isascii() and value.isprintable()):
        # A minted token (or a credential stored before the vault checked) that cannot be
        # sent as it is: refused as unavailable (502, audited), never a 500 or a split header.
        raise BadGateway(service.name, reason=Reason.CREDENTIAL_UNAVAILABLE)
    if service.placement is Placement.BEARER:
        return [*headers, (b"authorization", f"Bearer {value}".encode("latin-1"))], query
    assert service.parameter is not None  # noqa: S101 - ServiceConfig validated it
    if service.placement is Placement.HEADER:
        return [
            *headers,
            (service.parameter.lower().encode("latin-1"), value.encode("latin-1")),
        ], query
    pair = f"{quote(service.parameter, safe='')}={quote(value, safe='')}".encode("ascii")
    return headers, (query + b"&" + pair) if query else pair
