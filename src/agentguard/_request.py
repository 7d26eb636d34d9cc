"""GuardRequest: a framework-neutral, immutable view of the parts of a request the guard reads.

The ASGI and WSGI adapters build one from their scope or environ; the core never sees a
framework object. Header names are lower-case bytes as in ASGI; values are raw bytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote

from agentguard._target import Target, canonical_target
from agentguard.errors import InvalidRequest, MissingCredentials, Reason

__all__ = [
    "OWS",
    "TOKEN68",
    "Credentials",
    "GuardRequest",
    "is_public",
    "parse_authorization",
    "public_prefixes",
]

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}\Z")
TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
#: A header value's optional white space (RFC 9110 §5.6.3): space and tab, nothing else.
OWS = " \t"
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")
_KEY_SHAPE = re.compile(r"ag_(?:at|rt)_[0-9A-Za-z]{49}")  # a key in a path is never audited


@dataclass(frozen=True, slots=True)
class GuardRequest:
    """The request as the guard sees it.

    Attributes:
        method: upper-case HTTP method (``"GET"``); ``"WEBSOCKET"`` is never used, a
            websocket handshake is a ``GET``.
        path: the decoded path the application routes on.
        raw_path: the path as sent, percent-encoding intact, when the server provides it.
        query_string: the raw query string, without ``?``.
        headers: ``(name, value)`` pairs; names lower-case.
        scheme: ``http``/``https``/``ws``/``wss``.
        root_path: the ASGI root path (mount point) the path is relative to.
        request_id: the client's ``X-Request-Id`` when it is short and plain, else a fresh
            random id; fixed for the life of the request, so every event it causes agrees.
        allow_encoded_slash: accept ``%2F`` inside a segment (a proxied service that opted in);
            rules then see it decoded, as ``/``.
        client: the peer address, used only to count anonymous refusals per source (a
            malformed or unknown key names no one); never for a decision.
    """

    method: str
    path: str
    headers: Sequence[tuple[bytes, bytes]] = ()
    raw_path: bytes | None = None
    query_string: bytes = b""
    scheme: str = "http"
    root_path: str = ""
    request_id: str = ""
    allow_encoded_slash: bool = False
    client: str | None = None
    _target: Target | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.request_id:
            given = self.header(b"x-request-id")
            chosen = (
                given.decode("ascii")
                if given is not None and _REQUEST_ID.match(given)
                else os.urandom(8).hex()  # secrets.token_hex(8), without its two calls
            )
            object.__setattr__(self, "request_id", chosen)

    def header_values(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def audit_path(self) -> str:
        """The path for audit records: percent-encoded as sent, no query, at most 1 KiB, with any
        agentguard key in it replaced by ``[key]``."""
        if self.raw_path is not None:
            text = self.raw_path.decode("latin-1")
        else:
            text = quote(self.path, safe="/:@!$&'()*+,;=-._~")
        return _KEY_SHAPE.sub("[key]", text)[:1024]

    def has_dot_segments(self) -> bool:
        """Whether the decoded path contains ``.`` or ``..`` segments.

        Only one of the ambiguities :meth:`target` refuses; decide on :meth:`target`.
        """
        return _DOT_SEGMENT.search(self.path) is not None

    def target(self) -> Target:
        """The canonical form of :attr:`path`: what rules match and what a proxy forwards.

        Raises :class:`InvalidRequest` (400) when the target could mean different paths to
        different readers (see :mod:`agentguard._target`); callers refuse it before any key
        lookup. Computed once per request: the guard, the adapters and the proxy all ask.
        """
        if self._target is None:
            target = canonical_target(
                self.path,
                self.raw_path,
                self.root_path,
                allow_encoded_slash=self.allow_encoded_slash,
            )
            object.__setattr__(self, "_target", target)
            return target
        return self._target

    def in_public_paths(self, prefixes: Sequence[str]) -> bool:
        """Whether the canonical path is under one of ``prefixes`` (an ambiguous one never is)."""
        if not prefixes:
            return False
        try:
            path = self.target().path
        except InvalidRequest:
            return False
        return is_public(path, prefixes)


class Credentials(NamedTuple):
    """A credential taken from ``Authorization``: its scheme (``bearer``/``dpop``) and key."""

    scheme: str
    key: str


_DPOP_OFF = (
    "this server does not accept DPoP; send Bearer keys (issue them with "
    "`agentguard keys issue --bearer`) or enable DPoP on the server (Guard(dpop=DPoPPolicy()))"
)


def parse_authorization(request: GuardRequest, schemes: Sequence[str] = ("bearer",)) -> Credentials:
    """The single ``Authorization`` credential of ``request``, in one of ``schemes``.

    Raises :class:`MissingCredentials` when there is none, :class:`InvalidRequest` when there
    are several, the syntax is wrong, or the scheme is not accepted. The key itself is only
    checked for token68 syntax here; :func:`agentguard.parse_key` checks the rest.
    """
    values = request.header_values(b"authorization")
    if not values:
        raise MissingCredentials()
    if len(values) > 1:
        raise InvalidRequest("send exactly one Authorization header")
    try:
        text = values[0].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequest("the Authorization header must be ASCII") from None
    scheme, _, rest = text.strip(OWS).partition(" ")
    key = rest.strip(OWS)
    scheme = scheme.lower()
    if scheme not in schemes:
        if scheme == "dpop":  # a DPoP-bound key (the CLI's default) at a bearer-only server
            raise InvalidRequest(_DPOP_OFF, reason=Reason.UNSUPPORTED_SCHEME)
        names = " or ".join(s.capitalize() if s == "bearer" else s.upper() for s in schemes)
        raise InvalidRequest(
            f"unsupported authorization scheme; use {names}", reason=Reason.UNSUPPORTED_SCHEME
        )
    if not key or not TOKEN68.match(key):
        raise InvalidRequest("the Authorization header must be '<scheme> <key>'")
    return Credentials(scheme, key)


def public_prefixes(paths: Sequence[str]) -> tuple[str, ...]:
    """Validated public path prefixes for an adapter's ``public_paths`` (no trailing slash)."""
    prefixes = tuple(path.rstrip("/") for path in paths)
    for prefix in prefixes:
        if not prefix.startswith("/"):
            raise ValueError("public paths start with '/'")
    return prefixes


def is_public(path: str, prefixes: Sequence[str]) -> bool:
    """Whether ``path`` is under one of ``prefixes``, on a whole-segment boundary."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)
