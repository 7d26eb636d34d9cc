"""AgentGuardMiddleware: the guard in front of any ASGI app (Starlette, FastAPI, ...).

Pure ASGI (no ``BaseHTTPMiddleware``, which breaks streaming, background tasks and
contextvars): without reviewers it never reads the request body and passes the response
through untouched. With ``request_reviewers`` it reads the body (up to the chain's cap) before
the route runs and replays it; with ``response_reviewers`` it reviews what the route sends,
window by window or buffered up to the cap (see :mod:`agentguard.review`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from agentguard._context import principal_var
from agentguard._guard import DEFAULT, Guard, _Default
from agentguard._model import Principal
from agentguard._passage import Reviews
from agentguard._permissions import Requirement, websocket_requirement
from agentguard._request import GuardRequest, parse_authorization, public_prefixes
from agentguard.asgi._live_call import run_live
from agentguard.asgi._responses import send_error
from agentguard.asgi._reviewed import run_admitted
from agentguard.asgi._scope import (
    PRINCIPAL_STATE_KEY,
    AgentAuthCredentials,
    AgentUser,
    request_from_scope,
)
from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.credentials._keyscan import KeyScanner
from agentguard.errors import MissingCredentials, Reason, RequestRefused, ServiceUnavailable
from agentguard.review._chain import ReviewChain, ReviewerLike

__all__ = ["REQUIREMENTS_STATE_KEY", "AgentGuardMiddleware"]

#: Where a framework integration (``agentguard.integrations.fastapi.install``) leaves a
#: ``source(scope) -> Requirement | None`` on ``scope["app"].state``: the requirement the route
#: serving this request declares itself, used instead of the guard's route rules.
REQUIREMENTS_STATE_KEY = "agentguard_requirements"

RequirementSource = Callable[[Scope], "Requirement | None"]


def _declared(scope: Scope) -> Requirement | None:
    """The requirement the app's own route declares for ``scope``, if the app says.

    A source that fails, or answers anything but a Requirement or ``None``, refuses the
    request (503, audited): a route whose requirement is unknown is never run.
    """
    state = getattr(scope.get("app"), "state", None)
    if state is None:
        return None
    stored = getattr(state, "_state", None)  # Starlette's State: a dict, no exception to raise
    source: RequirementSource | None = (
        stored.get(REQUIREMENTS_STATE_KEY)
        if isinstance(stored, dict)
        else getattr(state, REQUIREMENTS_STATE_KEY, None)
    )
    if not callable(source):
        return None
    try:
        declared = source(scope)
    except Exception as error:
        logger.error("the app's requirement source failed: %s", type(error).__name__)
        raise ServiceUnavailable(_SOURCE_FAILED, reason=Reason.INTERNAL_ERROR) from None
    if declared is not None and not isinstance(declared, Requirement):
        logger.error("the app's requirement source returned a %s", type(declared).__name__)
        raise ServiceUnavailable(_SOURCE_FAILED, reason=Reason.INTERNAL_ERROR)
    return declared


def _presented_key(request: GuardRequest, schemes: Sequence[str]) -> str | None:
    """The credential an admitted request presented (for its streams' re-checks), if any."""
    try:
        return parse_authorization(request, tuple(schemes)).key
    except RequestRefused:  # admitted through a declared requirement without a key
        return None


def _carries_no_key(request: GuardRequest, schemes: Sequence[str]) -> bool:
    """Whether ``request`` holds no agentguard credential in its target or headers (pass-on
    mode); the body is the app's, as its own authentication decides the request."""
    values = request.header_values(b"authorization")
    if len(values) > 1:
        return False
    if values:
        # Passed on only when it plainly names another scheme: an RFC 9110 token then a space
        # (or nothing). "Bearer\tx", "Bearer\xa0x" (which str.split() reads as Bearer) and
        # anything else unusual is for the guard to decide.
        named = _OTHER_SCHEME.match(values[0])
        if named is None or named.group(1).decode("ascii").lower() in schemes:
            return False
    if request.header_values(b"dpop"):
        return False
    # A key in any encoding anywhere (base64 in a Basic header, percent-encoded in the query,
    # a header's name) is ours to decide, never passed on.
    scanner = KeyScanner()
    places = [request.raw_path or request.path.encode("utf-8", "surrogateescape")]
    places += [request.query_string, *(part for header in request.headers for part in header)]
    return not any(scanner.found_in(place) for place in places)


def _set_auth(scope: Scope, principal: Principal | None) -> None:
    """``scope["user"]``/``scope["auth"]`` as Starlette's ``AuthenticationMiddleware`` sets
    them (without importing starlette), so ``request.user`` and ``@requires("crm:write")``
    work on guarded routes."""
    scope["user"] = AgentUser(principal)
    scope["auth"] = AgentAuthCredentials(principal)


logger = logging.getLogger("agentguard.middleware")

_OTHER_SCHEME = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?: [^\x00-\x1f\x7f-\xff]*)?\Z")
_SOURCE_FAILED = "the app could not say what this route requires; the request was not run"
_PREFLIGHT = (
    "a CORS preflight reached the guard: add CORSMiddleware outside AgentGuardMiddleware "
    "(the last add_middleware call)"
)


def _is_preflight(request: GuardRequest) -> bool:
    return (
        request.method == "OPTIONS"
        and request.header(b"origin") is not None
        and request.header(b"access-control-request-method") is not None
    )


class AgentGuardMiddleware:
    """Guards every ``http`` and ``websocket`` request of ``app``.

    Allowed requests reach the app with the :class:`~agentguard.Principal` in
    ``request.state.agentguard_principal`` (``scope["state"]``), in
    :func:`agentguard.current_principal`, and as Starlette's ``request.user`` /
    ``request.auth`` (scopes ``authenticated`` and ``service:level`` for each live grant, so
    ``@requires`` works). Refused requests get the error response and never reach the app.
    ``lifespan`` passes through; any other scope type is an error.

    Args:
        app: the ASGI app to protect.
        guard: the :class:`~agentguard.Guard` that decides.
        public_paths: path prefixes (whole segments) that skip the guard, such as the mount
            point of the token endpoint (:class:`~agentguard.asgi.OAuthApp`) or a health check.
        request_reviewers: a :class:`~agentguard.review.ReviewChain` (or list of reviewers)
            for request bodies of guarded ``http`` requests, instead of the guard's own; a block
            is a 403 before the route.
        response_reviewers: the same for the route's response bodies.
        unauthenticated: ``"refuse"`` (default) answers a request without agentguard
            credentials with 401; ``"pass"`` lets a request that carries none at all (no
            ``Authorization``, or another scheme such as ``Basic``, and no agentguard key in the
            target or a header, in any encoding) reach the app unauthenticated
            (``request.user.is_authenticated`` false, no Principal), for apps that accept other
            schemes too. Such a request is the app's to decide and is not audited by the guard.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        *,
        public_paths: Sequence[str] = (),
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        unauthenticated: Literal["refuse", "pass"] = "refuse",
    ) -> None:
        if unauthenticated not in ("refuse", "pass"):
            raise ValueError("unauthenticated is 'refuse' or 'pass'")
        self.app = app
        self.guard = guard
        self.reviews: Reviews = guard.reviews(request_reviewers, response_reviewers)
        self.public_paths = public_prefixes(public_paths)
        self.unauthenticated = unauthenticated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope_type not in ("http", "websocket"):
            raise RuntimeError(f"AgentGuardMiddleware cannot guard ASGI scope type {scope_type!r}")
        request = request_from_scope(scope)
        if request.in_public_paths(self.public_paths):
            await self.app(scope, receive, send)
            return
        if self.unauthenticated == "pass" and _carries_no_key(request, self.guard.schemes):
            _set_auth(scope, None)
            await self.app(scope, receive, send)
            return
        try:
            declared = _declared(scope)
        except RequestRefused as error:
            await send_error(
                scope, send, await self.guard.refuse(request, error), self.guard.challenge
            )
            return
        requirement: Requirement | _Default | None = DEFAULT if declared is None else declared
        if declared is None and scope_type == "websocket":
            # A socket's messages can act: as the proxy does, it needs the stricter of a GET
            # and the route's WEBSOCKET level (write unless the rule says otherwise); no rule
            # (None) is refused by the guard like any unruled path.
            requirement = websocket_requirement(self.guard.permissions, request.path)
        try:
            passage = await self.guard.admit(request, requirement=requirement, reviews=self.reviews)
        except RequestRefused as error:
            if isinstance(error, MissingCredentials) and _is_preflight(request):
                error = MissingCredentials(_PREFLIGHT)
            await send_error(scope, send, error, self.guard.challenge)
            return
        principal = passage.principal
        scope.setdefault("state", {})[PRINCIPAL_STATE_KEY] = principal
        _set_auth(scope, principal)
        trace = passage.trace
        if trace is not None:  # telemetry: the decision's span ends with the response
            send = trace.watch(send)
        token = principal_var.set(principal)
        try:
            await run_live(
                functools.partial(run_admitted, self.app, passage=passage),
                scope,
                receive,
                send,
                guard=self.guard,
                passage=passage,
                key=_presented_key(request, self.guard.schemes),
            )
        finally:
            principal_var.reset(token)
            if trace is not None:
                trace.end()
