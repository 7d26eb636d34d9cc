"""FastAPI dependencies: the request's Principal, permission checks, and the OpenAPI scheme.

::

    app = FastAPI()
    install(app, guard)                      # guard known to the dependencies + error rendering
    app.add_middleware(AgentGuardMiddleware, guard=guard)   # optional: guards every route

    @app.get("/crm/contacts")
    async def contacts(principal: Annotated[Principal, require("crm", "read")]) -> ...: ...

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> ...: ...

The dependencies read the Principal that :class:`~agentguard.asgi.AgentGuardMiddleware` stored
and check the declared permission against its live grants; without the middleware (or on one of
its public paths) they run :meth:`Guard.authenticate` themselves. :func:`install` also tells the
middleware what each route declares (:class:`RouteRequirements`), so a route that no
:class:`~agentguard.RouteRule` covers is decided by its dependencies instead of being refused.
Either way every refusal is audited and rendered as the middleware renders it (with
:func:`install`; without it FastAPI's default handler wraps the same body in
``{"detail": ...}``). Each dependency declares the ``agentguard`` HTTP bearer security scheme,
with the needed ``service:level`` as its scopes, so ``/docs`` shows which key each operation
needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import Match

from agentguard._extras import missing_extra

try:
    from fastapi import FastAPI, Request, Security, WebSocketException, routing
    from fastapi.dependencies.models import Dependant
    from fastapi.exceptions import HTTPException
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.security import SecurityScopes
    from fastapi.security.base import SecurityBase
except ImportError as error:
    raise missing_extra(error) from None

from agentguard._guard import Guard
from agentguard._model import Level, Principal
from agentguard._permissions import Requirement
from agentguard.asgi._middleware import REQUIREMENTS_STATE_KEY
from agentguard.asgi._scope import PRINCIPAL_STATE_KEY, AgentUser, request_from_scope
from agentguard.asgi._types import Scope
from agentguard.errors import (
    Challenge,
    ConfigurationError,
    InsufficientScope,
    Reason,
    RequestRefused,
    ServiceUnavailable,
)

__all__ = [
    "AgentGuardHTTPException",
    "AgentGuardSecurity",
    "CurrentPrincipal",
    "RouteRequirements",
    "install",
    "require",
]

APP_STATE_KEY = "agentguard"
_UNREVIEWABLE = (
    "the guard has reviewers but this route is not behind AgentGuardMiddleware, where they run: "
    "add the middleware (app.add_middleware(AgentGuardMiddleware, guard=guard))"
)
logger = logging.getLogger("agentguard.fastapi")


class AgentGuardHTTPException(HTTPException):
    """A :class:`~agentguard.errors.RequestRefused` on its way out of a dependency.

    FastAPI's default handler renders ``{"detail": <agentguard body>}`` with the challenge
    headers (several challenges joined into one ``WWW-Authenticate`` value); the handler that
    :func:`install` registers renders exactly what the middleware would.
    """

    def __init__(self, error: RequestRefused, challenge: Challenge | None) -> None:
        self.error = error
        self.challenge = challenge
        status, headers, _ = error.to_http(challenge)
        merged: dict[str, str] = {}
        for name, value in headers:
            if name != "content-type":
                merged[name] = f"{merged[name]}, {value}" if name in merged else value
        super().__init__(status_code=status, detail=error.body(), headers=merged)


def _render(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, AgentGuardHTTPException):  # pragma: no cover - registered for it only
        raise exc
    status, headers, body = exc.error.to_http(exc.challenge)
    response = Response(content=body, status_code=status)
    response.raw_headers = [
        *(item for item in response.raw_headers if item[0] != b"content-type"),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    return response


def install(app: FastAPI, guard: Guard) -> None:
    """Make ``guard`` the one the dependencies use and render their refusals like the middleware.

    Stores the guard in ``app.state.agentguard``, a :class:`RouteRequirements` in
    ``app.state.agentguard_requirements`` and registers an exception handler. It does not add
    the middleware: add :class:`~agentguard.asgi.AgentGuardMiddleware` too when every route
    must be guarded.
    """
    setattr(app.state, APP_STATE_KEY, guard)
    setattr(app.state, REQUIREMENTS_STATE_KEY, RouteRequirements(app, guard))
    app.add_exception_handler(AgentGuardHTTPException, _render)


def _requirement(scope: str) -> Requirement:
    service, sep, level = scope.partition(":")
    if not sep:
        raise ConfigurationError(f"agentguard scopes are 'service:level', not {scope!r}")
    return Requirement(service, Level.parse(level))


class AgentGuardSecurity(SecurityBase):
    """The ``agentguard`` security scheme as a FastAPI dependency returning the Principal.

    Use it through :func:`require` and :data:`CurrentPrincipal`; create your own instance to
    pass a guard explicitly, name the scheme differently or describe it.

    Args:
        guard: the guard; by default the one :func:`install` stored on the app.
        scheme_name: the name in ``components.securitySchemes``.
        description: shown in ``/docs``.
    """

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        scheme_name: str = "agentguard",
        description: str | None = None,
    ) -> None:
        self.guard = guard
        self.scheme_name = scheme_name
        self.model = HTTPBearerModel(
            bearerFormat="agentguard access key",
            description=description
            or (
                "An agentguard access key (ag_at_...) or an accepted OAuth access token, sent as "
                "'Authorization: Bearer <key>' (or 'DPoP <key>' with a DPoP proof for bound "
                "keys). Scopes name the service:level the operation needs."
            ),
        )

    def __repr__(self) -> str:
        return f"AgentGuardSecurity(scheme_name={self.scheme_name!r})"

    def require(self, service: str, level: Level | str = Level.READ) -> Any:
        """A dependency returning the Principal, refused unless it has ``level`` on ``service``."""
        return Security(self, scopes=[f"{service}:{Level.parse(level).label}"])

    def _guard(self, request: HTTPConnection) -> Guard:
        guard = self.guard or getattr(request.app.state, APP_STATE_KEY, None)
        if not isinstance(guard, Guard):
            raise ConfigurationError(
                "agentguard dependencies need the guard: call "
                "agentguard.integrations.fastapi.install(app, guard)"
            )
        return guard

    async def __call__(self, request: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        guard = self._guard(request)
        requirements = [_requirement(scope) for scope in security_scopes.scopes]
        state = request.scope.setdefault("state", {})
        principal = state.get(PRINCIPAL_STATE_KEY)
        if not isinstance(principal, Principal):
            # A dependency cannot review a body: refuse rather than skip the reviewers, unless
            # the middleware is there and passed this request on (it carries no agentguard
            # credential: the guard refuses it below, 401, with nothing to review).
            behind_middleware = isinstance(request.scope.get("user"), AgentUser)
            if guard.reviews() and not behind_middleware:
                await self._unreviewable(guard, request)
            first = requirements[0] if requirements else Requirement(None, Level.READ)
            try:
                principal = await guard.authenticate(
                    request_from_scope(request.scope), requirement=first
                )
            except RequestRefused as error:
                raise _refusal(request, error, guard.challenge) from None
            state[PRINCIPAL_STATE_KEY] = principal
            requirements = requirements[1:]
        for requirement in requirements:
            if requirement.service is not None and not principal.allows(
                requirement.service, requirement.level
            ):
                await self._refuse(guard, request, principal, requirement)
        return principal

    async def _unreviewable(self, guard: Guard, request: HTTPConnection) -> None:
        error = ServiceUnavailable(_UNREVIEWABLE, reason=Reason.INTERNAL_ERROR)
        logger.error("agentguard: %s (%s)", _UNREVIEWABLE, request.url.path)
        sent = await guard.refuse(request_from_scope(request.scope), error)
        raise _refusal(request, sent, None)

    async def _refuse(
        self, guard: Guard, request: HTTPConnection, principal: Principal, requirement: Requirement
    ) -> None:
        error = InsufficientScope(required=requirement.scope)
        sent = await guard.refuse(
            request_from_scope(request.scope), error, principal=principal, requirement=requirement
        )
        raise _refusal(request, sent, guard.challenge)


# Older FastAPI releases read a callable instance's annotations without evaluating the strings
# that ``from __future__ import annotations`` leaves; give them the real types.
AgentGuardSecurity.__call__.__annotations__.update(
    {"request": HTTPConnection, "security_scopes": SecurityScopes, "return": Principal}
)


def _refusal(
    connection: HTTPConnection, error: RequestRefused, challenge: Challenge | None
) -> Exception:
    """The exception that refuses ``connection``: the rendered error over HTTP, a policy
    violation close (1008) naming the reason on a WebSocket."""
    if connection.scope["type"] == "websocket":
        return WebSocketException(
            code=1008, reason=f"{error.reason.value}: {error.description}"[:120]
        )
    return AgentGuardHTTPException(error, challenge)


_default_security = AgentGuardSecurity()


def require(service: str, level: Level | str = Level.READ) -> Any:
    """A dependency that returns the Principal and refuses (403) unless it has the permission.

    ``principal: Annotated[Principal, require("crm", "write")]`` in an endpoint's signature, or
    ``dependencies=[require("crm")]`` on a route or router. OpenAPI shows the ``agentguard``
    scheme with scope ``crm:write``.
    """
    return _default_security.require(service, level)


#: The authenticated Principal, whatever its grants: ``principal: CurrentPrincipal``.
CurrentPrincipal = Annotated[Principal, Security(_default_security)]


class RouteRequirements:
    """What the route that will serve a request declares, for the middleware to decide with.

    :func:`install` registers one as ``app.state.agentguard_requirements``;
    :class:`~agentguard.asgi.AgentGuardMiddleware` calls it with the request's scope before
    deciding. It finds the route the way Starlette's router will (first full match, into
    included routers and mounted apps and routers) and returns the strictest
    ``service:level`` among its agentguard dependencies (:func:`require`,
    :data:`CurrentPrincipal`, :class:`AgentGuardSecurity`), or "any valid key" when they
    name no service. The dependencies still check every one of them.

    It returns ``None`` (the guard's own rules decide, and a path none covers is refused) when
    a :class:`~agentguard.RouteRule` covers the path, so rules stay authoritative where they
    exist, and when the route declares no agentguard dependency or no route matches.
    Requirements are computed once per route.

    Args:
        app: the FastAPI app whose routes to search.
        guard: the guard whose rules take precedence (the middleware's).
    """

    def __init__(self, app: FastAPI, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        self._declared: dict[int, tuple[Dependant, Requirement | None]] = {}

    def __repr__(self) -> str:
        return f"RouteRequirements(guard={self.guard!r})"

    def __call__(self, scope: Scope) -> Requirement | None:
        if self.guard.permissions.rules_for(scope["path"]):
            return None
        dependant = _serving(self.app.router.routes, dict(scope))
        if dependant is None:
            return None
        cached = self._declared.get(id(dependant))
        if cached is None or cached[0] is not dependant:
            cached = (dependant, _strictest(dependant))
            self._declared[id(dependant)] = cached
        return cached[1]


def _route_contexts(routes: Iterable[Any]) -> Iterator[Any]:
    """``routes`` in the order the router tries them, included routers flattened.

    Newer FastAPI keeps an included router as one route and matches its routes through
    ``iter_route_contexts``; older releases copy them into the parent's list.
    """
    flatten = getattr(routing, "iter_route_contexts", None)
    return iter(routes) if flatten is None else iter(flatten(list(routes)))


def _serving(routes: Iterable[Any], scope: Scope) -> Dependant | None:
    """The dependant of the FastAPI route Starlette will pick for ``scope``, if any."""
    for route in _route_contexts(routes):
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant):
            return dependant
        inner = getattr(route, "routes", None)  # a Mount or Host: the router below decides
        return None if inner is None else _serving(inner, {**scope, **child})
    return None


def _oauth_scopes(dependant: Dependant) -> list[str]:
    """The scopes FastAPI passes in ``SecurityScopes`` to this dependency."""
    if hasattr(dependant, "parent_oauth_scopes"):
        scopes = list(dependant.parent_oauth_scopes or [])
        scopes += [scope for scope in dependant.own_oauth_scopes or [] if scope not in scopes]
        return scopes
    return list(getattr(dependant, "security_scopes", None) or [])  # older FastAPI: inherited


def _strictest(dependant: Dependant) -> Requirement | None:
    """The highest level any agentguard dependency in the tree needs (the first such on ties).

    ``None`` when the tree holds no agentguard dependency at all.
    """
    needed: list[Requirement] = []
    guarded = False
    pending = [dependant]
    while pending:
        node = pending.pop()
        if isinstance(node.call, AgentGuardSecurity):
            guarded = True
            needed += [_requirement(scope) for scope in _oauth_scopes(node)]
        pending += reversed(node.dependencies)
    if not guarded:
        return None
    named = [need for need in needed if need.service is not None]
    return max(named, key=lambda need: need.level, default=Requirement(None, Level.READ))
