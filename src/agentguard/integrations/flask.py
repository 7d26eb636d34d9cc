"""Flask: a permission per view, with or without :class:`~agentguard.wsgi.AgentGuardWSGIMiddleware`.

::

    app = Flask(__name__)
    agentguard = AgentGuard(app, guard)   # or AgentGuard(), then agentguard.init_app(app, guard)

    @app.post("/crm/contacts")
    @agentguard.require("crm", "write")
    def add_contact():
        return {"by": current_principal().user_id}

Behind the WSGI middleware the decorator reads the Principal it stored and checks the extra
permission against its live grants (a refusal is audited like the middleware's own); without it
(or on one of its public paths) the decorator decides the request itself with
:meth:`Guard.authenticate`, on the process's one background event loop. Refusals render exactly
as the middleware renders them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._extras import missing_extra

try:
    from flask import Flask, Response, current_app
    from flask import request as flask_request
    from werkzeug.exceptions import HTTPException
except ImportError as error:
    raise missing_extra(error) from None

from agentguard._context import principal_var
from agentguard._guard import Guard
from agentguard._model import Level, Principal
from agentguard._permissions import Requirement
from agentguard.errors import (
    Challenge,
    ConfigurationError,
    InsufficientScope,
    Reason,
    RequestRefused,
    ServiceUnavailable,
)
from agentguard.wsgi._middleware import PRINCIPAL_ENVIRON_KEY, request_from_environ
from agentguard.wsgi._portal import EventLoopPortal, default_portal

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["EXTENSION_KEY", "AgentGuard"]

#: Where :meth:`AgentGuard.init_app` keeps the guard: ``app.extensions["agentguard"]``.
EXTENSION_KEY = "agentguard"
_REQUIREMENTS_ATTRIBUTE = "__agentguard_requirements__"
_UNREVIEWABLE = (
    "the guard has reviewers but this view is not behind AgentGuardWSGIMiddleware, where they "
    "run: wrap the app (app.wsgi_app = AgentGuardWSGIMiddleware(app.wsgi_app, guard))"
)
logger = logging.getLogger("agentguard.flask")

_View = TypeVar("_View", bound=Callable[..., Any])


def _refusal_response(error: RequestRefused, challenge: Challenge | None) -> Response:
    """``error`` as the response :class:`~agentguard.wsgi.AgentGuardWSGIMiddleware` sends."""
    status, headers, body = error.to_http(challenge)
    return Response(body, status=status, headers=headers)


class AgentGuard:
    """The Flask extension: holds the guard per app and makes the :meth:`require` decorators.

    Args:
        app: the app to set up now (else call :meth:`init_app` later, as app factories do).
        guard: the guard that decides; :meth:`init_app` may give each app its own.
        portal: the event loop decisions run on; the process-wide
            :func:`~agentguard.wsgi.default_portal` (the WSGI middleware's) by default.
    """

    def __init__(
        self,
        app: Flask | None = None,
        guard: Guard | None = None,
        *,
        portal: EventLoopPortal | None = None,
    ) -> None:
        self.guard = guard
        self.portal = portal if portal is not None else default_portal()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"AgentGuard(guard={self.guard!r})"

    def init_app(self, app: Flask, guard: Guard | None = None) -> None:
        """Register ``guard`` (or the one given to the constructor) for ``app``'s views."""
        chosen = guard if guard is not None else self.guard
        if not isinstance(chosen, Guard):
            raise ConfigurationError("AgentGuard needs a guard: AgentGuard(app, guard)")
        app.extensions[EXTENSION_KEY] = chosen

    def require(
        self, service: str | None = None, level: Level | str = Level.READ
    ) -> Callable[[_View], _View]:
        """A view decorator: refuse (403) unless the key's live grants reach ``level`` on
        ``service``; with no ``service``, any valid key passes.

        Put it below ``@app.route``. Stacked decorators all apply. Inside the view the Principal
        is :func:`agentguard.current_principal` and ``request.environ["agentguard.principal"]``.
        """
        requirement = Requirement(service, Level.parse(level))

        def decorate(view: _View) -> _View:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                decided = self._decide(requirement)
                if isinstance(decided, Response):
                    return decided
                token = principal_var.set(decided)
                try:
                    return current_app.ensure_sync(view)(*args, **kwargs)
                finally:
                    principal_var.reset(token)

            inner = getattr(view, _REQUIREMENTS_ATTRIBUTE, ())
            setattr(guarded, _REQUIREMENTS_ATTRIBUTE, (*inner, requirement))
            return guarded  # type: ignore[return-value]

        return decorate

    def route_requirements(self, app: Flask) -> Callable[[WSGIEnvironment], Requirement | None]:
        """The ``requirements=`` source for :class:`~agentguard.wsgi.AgentGuardWSGIMiddleware`
        in front of ``app``: the strictest requirement of the ``@require`` decorators on the
        view Flask will dispatch to, so such a view needs no :class:`~agentguard.RouteRule`.

        ``None`` (the guard's rules decide, and a path none covers is refused) where a rule
        covers the path, where no view matches, and for views without ``@require``.
        """
        guard = app.extensions.get(EXTENSION_KEY, self.guard)

        def source(environ: WSGIEnvironment) -> Requirement | None:
            path = str(environ.get("PATH_INFO") or "/")
            if isinstance(guard, Guard) and guard.permissions.rules_for(path):
                return None
            try:
                endpoint, _ = app.url_map.bind_to_environ(environ).match()
            except HTTPException:  # no view (404, 405) or a redirect: the rules decide
                return None
            view = app.view_functions.get(str(endpoint))
            declared: tuple[Requirement, ...] = getattr(view, _REQUIREMENTS_ATTRIBUTE, ())
            if not declared:
                return None
            named = [need for need in declared if need.service is not None]
            return max(named, key=lambda need: need.level, default=declared[0])

        return source

    def _guard(self) -> Guard:
        guard = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(guard, Guard):
            raise ConfigurationError(
                "this Flask app has no agentguard guard: call AgentGuard(app, guard) or "
                "init_app(app, guard)"
            )
        return guard

    def _decide(self, requirement: Requirement) -> Principal | Response:
        """The request's Principal if it meets ``requirement``, else the refusal response."""
        guard = self._guard()
        environ = flask_request.environ
        request = request_from_environ(environ)
        stored = environ.get(PRINCIPAL_ENVIRON_KEY)
        try:
            if isinstance(stored, Principal):  # the middleware decided and audited it
                if requirement.service is None or stored.allows(
                    requirement.service, requirement.level
                ):
                    return stored
                error = InsufficientScope(required=requirement.scope)

                async def record() -> None:
                    await guard.record_refusal(
                        request, error, principal=stored, requirement=requirement
                    )

                self.portal.call(record)
                raise error

            if guard.reviews():  # a decorator cannot review bodies: refuse, never skip them
                unreviewable = ServiceUnavailable(_UNREVIEWABLE, reason=Reason.INTERNAL_ERROR)

                async def record_unreviewable() -> None:
                    await guard.record_refusal(request, unreviewable)

                logger.error("agentguard: %s (%s)", _UNREVIEWABLE, request.audit_path)
                self.portal.call(record_unreviewable)
                raise unreviewable

            async def decide() -> Principal:
                return await guard.authenticate(request, requirement=requirement)

            principal = self.portal.call(decide)
        except RequestRefused as refused:
            return _refusal_response(refused, guard.challenge)
        environ[PRINCIPAL_ENVIRON_KEY] = principal
        return principal
