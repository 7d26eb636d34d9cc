"""AgentGuardMiddleware: the guard in front of any ASGI app (Starlette, FastAPI, ...).

Pure ASGI (no ``BaseHTTPMiddleware``, which breaks streaming, background tasks and
contextvars): it never reads the request body and passes the response through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentguard.asgi.responses import send_error
from agentguard.asgi.scope import PRINCIPAL_STATE_KEY, request_from_scope
from agentguard.asgi.types import ASGIApp, Receive, Scope, Send
from agentguard.context import principal_var
from agentguard.errors import AgentGuardError
from agentguard.guard import Guard

__all__ = ["AgentGuardMiddleware"]


class AgentGuardMiddleware:
    """Guards every ``http`` and ``websocket`` request of ``app``.

    Allowed requests reach the app with the :class:`~agentguard.model.Principal` in
    ``request.state.agentguard_principal`` (``scope["state"]``) and in
    :func:`agentguard.current_principal`. Refused requests get the error response and never
    reach the app. ``lifespan`` passes through; any other scope type is an error.

    Args:
        app: the ASGI app to protect.
        guard: the :class:`~agentguard.Guard` that decides.
        public_paths: path prefixes (whole segments) that skip the guard, such as the mount
            point of :meth:`Guard.oauth_app` or a health check.
    """

    def __init__(self, app: ASGIApp, guard: Guard, *, public_paths: Sequence[str] = ()) -> None:
        self.app = app
        self.guard = guard
        self.public_paths = tuple(p.rstrip("/") for p in public_paths)
        for prefix in self.public_paths:
            if not prefix.startswith("/"):
                raise ValueError("public paths start with '/'")

    def _is_public(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope_type not in ("http", "websocket"):
            raise RuntimeError(f"AgentGuardMiddleware cannot guard ASGI scope type {scope_type!r}")
        request = request_from_scope(scope)
        if self._is_public(request.path) and not request.has_dot_segments():
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.guard.authenticate(request)
        except AgentGuardError as error:
            await send_error(scope, send, error, self.guard.challenge)
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        token = principal_var.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            principal_var.reset(token)
