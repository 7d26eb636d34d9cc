"""From an ASGI scope to a GuardRequest, and from a scope back to its Principal."""

from __future__ import annotations

from agentguard._model import Principal
from agentguard._request import GuardRequest
from agentguard.asgi._types import Scope

__all__ = [
    "AgentAuthCredentials",
    "AgentUser",
    "principal_from_scope",
    "request_from_scope",
    "route_path",
]

PRINCIPAL_STATE_KEY = "agentguard_principal"
_LEVELS = (("read", 1), ("write", 2))


class AgentAuthCredentials:
    """``request.auth`` on a guarded route, as Starlette's ``AuthCredentials``: ``scopes`` are
    ``authenticated`` and ``service:level`` for each live grant (read implied by write), which
    Starlette's ``@requires`` checks. Empty for a request passed on unauthenticated."""

    __slots__ = ("_principal", "_scopes")

    def __init__(self, principal: Principal | None = None) -> None:
        self._principal = principal
        self._scopes: list[str] | None = None

    @property
    def scopes(self) -> list[str]:
        """Computed on first use, from the Principal's live grants of this request."""
        if self._scopes is None:
            principal = self._principal
            scopes = [] if principal is None else ["authenticated"]
            if principal is not None:
                for service in principal.grants:
                    level = principal.grants[service]
                    scopes += [f"{service}:{name}" for name, value in _LEVELS if 0 < value <= level]
            self._scopes = scopes
        return self._scopes

    def __repr__(self) -> str:
        return f"AgentAuthCredentials({self.scopes!r})"


class AgentUser:
    """``request.user`` on a guarded route: Starlette's ``BaseUser`` interface over a Principal.

    ``is_authenticated`` is false only for a request passed on without agentguard credentials
    (the middleware's ``unauthenticated="pass"``); ``identity`` and ``display_name`` are the
    user id.
    """

    __slots__ = ("principal",)

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal

    def __repr__(self) -> str:
        who = self.principal.user_id if self.principal is not None else None
        return f"AgentUser({who!r})"

    @property
    def is_authenticated(self) -> bool:
        """Whether the guard admitted this request with a key."""
        return self.principal is not None

    @property
    def display_name(self) -> str:
        """The user id, or ``""`` when unauthenticated."""
        return self.principal.user_id if self.principal is not None else ""

    @property
    def identity(self) -> str:
        """The user id, or ``""`` when unauthenticated."""
        return self.display_name


def route_path(scope: Scope) -> str:
    """The decoded path relative to the mount point, as Starlette's router sees it.

    Not for decisions: authorise :meth:`GuardRequest.target` (canonical, refused if ambiguous).
    """
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        return path[len(root_path) :] or "/"
    return path


def request_from_scope(scope: Scope, *, allow_encoded_slash: bool = False) -> GuardRequest:
    """A GuardRequest for an ``http`` or ``websocket`` scope.

    ``allow_encoded_slash`` lets :meth:`GuardRequest.target` accept ``%2F`` in a segment (a
    proxied service that opted in).
    """
    method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
    return GuardRequest(
        method=method,
        path=scope["path"],
        headers=scope.get("headers", ()),
        raw_path=scope.get("raw_path"),
        query_string=scope.get("query_string", b""),
        scheme=scope.get("scheme", "http"),
        root_path=scope.get("root_path", ""),
        allow_encoded_slash=allow_encoded_slash,
        client=(scope.get("client") or (None,))[0],
    )


def principal_from_scope(scope: Scope) -> Principal:
    """The Principal the middleware stored for this request; ``LookupError`` if none."""
    principal = scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
    if not isinstance(principal, Principal):
        raise LookupError(
            "no agentguard principal in this scope: is AgentGuardMiddleware installed?"
        )
    return principal
