"""FastAPI dependencies: the request's Principal, permission checks, and the OpenAPI scheme.

::

    app = FastAPI()
    install(app, guard)                      # guard known to the dependencies + error rendering

    @app.get("/crm/contacts")
    async def contacts(principal: Annotated[Principal, require("crm", "read")]) -> ...: ...

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> ...: ...

The dependencies read the Principal that :class:`~agentguard.asgi.AgentGuardMiddleware` stored
and check the declared permission against its live grants; without the middleware (or on one of
its public paths) they run :meth:`Guard.authenticate` themselves. Either way every refusal is
audited and rendered as the middleware renders it (with :func:`install`; without it FastAPI's
default handler wraps the same body in ``{"detail": ...}``). Each dependency declares the
``agentguard`` HTTP bearer security scheme, with the needed ``service:level`` as its scopes, so
``/docs`` shows which key each operation needs.
"""

from __future__ import annotations

from typing import Annotated, Any

from starlette.responses import Response

from agentguard._extras import missing_extra

try:
    from fastapi import FastAPI, Request, Security
    from fastapi.exceptions import HTTPException
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.security import SecurityScopes
    from fastapi.security.base import SecurityBase
except ImportError as error:
    raise missing_extra(error) from None

from agentguard.asgi.scope import PRINCIPAL_STATE_KEY, request_from_scope
from agentguard.audit.events import Action, AuditEvent, Decision
from agentguard.errors import AgentGuardError, Challenge, ConfigurationError, InsufficientScope
from agentguard.guard import Guard
from agentguard.model import Level, Principal
from agentguard.permissions import Requirement

__all__ = [
    "AgentGuardHTTPException",
    "AgentGuardSecurity",
    "CurrentPrincipal",
    "install",
    "require",
]

APP_STATE_KEY = "agentguard"


class AgentGuardHTTPException(HTTPException):
    """An :class:`~agentguard.errors.AgentGuardError` on its way out of a dependency.

    FastAPI's default handler renders ``{"detail": <agentguard body>}`` with the challenge
    headers (several challenges joined into one ``WWW-Authenticate`` value); the handler that
    :func:`install` registers renders exactly what the middleware would.
    """

    def __init__(self, error: AgentGuardError, challenge: Challenge | None) -> None:
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

    Stores the guard in ``app.state.agentguard`` and registers an exception handler. It does
    not add the middleware: add :class:`~agentguard.asgi.AgentGuardMiddleware` too when every
    route must be guarded by path rules.
    """
    setattr(app.state, APP_STATE_KEY, guard)
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

    def _guard(self, request: Request) -> Guard:
        guard = self.guard or getattr(request.app.state, APP_STATE_KEY, None)
        if not isinstance(guard, Guard):
            raise ConfigurationError(
                "agentguard dependencies need the guard: call "
                "agentguard.integrations.fastapi.install(app, guard)"
            )
        return guard

    async def __call__(self, request: Request, security_scopes: SecurityScopes) -> Principal:
        guard = self._guard(request)
        requirements = [_requirement(scope) for scope in security_scopes.scopes]
        state = request.scope.setdefault("state", {})
        principal = state.get(PRINCIPAL_STATE_KEY)
        if not isinstance(principal, Principal):
            first = requirements[0] if requirements else Requirement(None, Level.READ)
            try:
                principal = await guard.authenticate(
                    request_from_scope(request.scope), requirement=first
                )
            except AgentGuardError as error:
                raise AgentGuardHTTPException(error, guard.challenge) from None
            state[PRINCIPAL_STATE_KEY] = principal
            requirements = requirements[1:]
        for requirement in requirements:
            if requirement.service is not None and not principal.allows(
                requirement.service, requirement.level
            ):
                await self._refuse(guard, request, principal, requirement)
        return principal

    async def _refuse(
        self, guard: Guard, request: Request, principal: Principal, requirement: Requirement
    ) -> None:
        error = InsufficientScope(required=requirement.scope)
        guard_request = request_from_scope(request.scope)
        await guard.audit.record(
            AuditEvent(
                action=Action.DECISION,
                ts=guard.clock.now(),
                decision=Decision.DENY,
                reason=error.reason.value,
                service=requirement.service,
                method=guard_request.method,
                path=guard_request.audit_path,
                status=error.status,
                request_id=guard_request.request_id,
                user_id=principal.user_id,
                workspace_id=principal.workspace_id,
                account_id=principal.account_id,
                key_id=principal.key_id,
                family_id=principal.family_id,
            )
        )
        raise AgentGuardHTTPException(error, guard.challenge)


# Older FastAPI releases read a callable instance's annotations without evaluating the strings
# that ``from __future__ import annotations`` leaves; give them the real types.
AgentGuardSecurity.__call__.__annotations__.update(
    {"request": Request, "security_scopes": SecurityScopes, "return": Principal}
)

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
