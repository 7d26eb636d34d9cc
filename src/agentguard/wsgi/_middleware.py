"""AgentGuardWSGIMiddleware: the guard in front of a WSGI app (Flask, Django, ...).

It gives a WSGI app the same decisions as :class:`~agentguard.asgi.AgentGuardMiddleware`: the
request is described as a :class:`~agentguard.GuardRequest`, decided by
:meth:`Guard.authenticate` on the process's one background event loop, and refused with the
error's own rendering (:meth:`~agentguard.errors.RequestRefused.to_http`). No ASGI code runs.
"""

from __future__ import annotations

import functools
import http
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from agentguard._context import principal_var
from agentguard._guard import DEFAULT
from agentguard._model import Principal
from agentguard._permissions import Requirement
from agentguard._request import GuardRequest, public_prefixes
from agentguard.errors import Challenge, Reason, RequestRefused, ServiceUnavailable
from agentguard.review._chain import ReviewChain, ReviewerLike
from agentguard.wsgi._portal import EventLoopPortal, default_portal
from agentguard.wsgi._reviewed import call_reviewed

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from agentguard._guard import Guard

__all__ = [
    "PRINCIPAL_ENVIRON_KEY",
    "AgentGuardWSGIMiddleware",
    "principal_from_environ",
    "request_from_environ",
]

PRINCIPAL_ENVIRON_KEY = "agentguard.principal"
_SOURCE_FAILED = "the app could not say what this route requires; the request was not run"
logger = logging.getLogger("agentguard.wsgi")


def _text(environ: WSGIEnvironment, name: str) -> str:
    """A PEP 3333 "bytes as latin-1" value, decoded as UTF-8 the way Werkzeug does."""
    value = environ.get(name, "")
    try:
        return str(value).encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that already decoded it
        return str(value)


def _raw_path(environ: WSGIEnvironment) -> bytes | None:
    """The request target's path as sent, when the server kept it and it matches PATH_INFO.

    ``RAW_URI`` (gunicorn, Werkzeug) or ``REQUEST_URI`` (uWSGI, mod_wsgi, Werkzeug). It is only
    used when it decodes to ``SCRIPT_NAME + PATH_INFO``: a WSGI layer that rewrote the path would
    otherwise make the DPoP ``htu`` check and the audit record describe a different request.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(raw, str) or not raw.startswith("/"):
        return None
    try:
        path = raw.split("?", 1)[0].encode("latin-1")
        routed = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    except UnicodeEncodeError:
        return None
    return path if unquote_to_bytes(path) == routed else None


def request_from_environ(environ: WSGIEnvironment) -> GuardRequest:
    """A GuardRequest for a WSGI ``environ``.

    ``path`` is ``PATH_INFO`` (what the app routes on), ``root_path`` is ``SCRIPT_NAME``.
    Header names become lower-case with dashes; values stay latin-1 bytes as the server read
    them. WSGI servers fold repeated headers into one value, so the guard cannot see a second
    ``Authorization`` header here as it can under ASGI.
    """
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if not value:
                continue
            name = key.lower().replace("_", "-")
        else:
            continue
        headers.append((name.encode("ascii", "replace"), str(value).encode("latin-1", "replace")))
    query = environ.get("QUERY_STRING", "")
    return GuardRequest(
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        path=_text(environ, "PATH_INFO") or "/",
        headers=tuple(headers),
        raw_path=_raw_path(environ),
        query_string=str(query).encode("latin-1", "replace"),
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        root_path=_text(environ, "SCRIPT_NAME"),
        client=str(environ.get("REMOTE_ADDR") or "") or None,
    )


def principal_from_environ(environ: WSGIEnvironment) -> Principal:
    """The Principal the middleware stored for this request; ``LookupError`` if none."""
    principal = environ.get(PRINCIPAL_ENVIRON_KEY)
    if not isinstance(principal, Principal):
        raise LookupError(
            "no agentguard principal in this environ: is AgentGuardWSGIMiddleware installed?"
        )
    return principal


def _status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


class _WithPrincipal:
    """The app's response iterable, with the principal in context while each chunk is made.

    Streamed bodies (generators) run after the app returned, possibly with a different
    context; setting the contextvar around every ``next()`` keeps
    :func:`agentguard.current_principal` working inside them.
    """

    def __init__(self, body: Iterable[bytes], principal: Principal) -> None:
        self._body = body
        self._principal = principal

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._body)
        while True:
            token = principal_var.set(self._principal)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                principal_var.reset(token)
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            token = principal_var.set(self._principal)
            try:
                close()
            finally:
                principal_var.reset(token)


class AgentGuardWSGIMiddleware:
    """Guards every request of a WSGI app.

    Allowed requests reach the app with the :class:`~agentguard.Principal` in
    ``environ["agentguard.principal"]`` and in :func:`agentguard.current_principal`. Refused
    requests get the JSON error with its ``WWW-Authenticate`` challenge and never reach the app.

    Every decision runs on one background event loop for the whole process
    (:func:`~agentguard.wsgi.default_portal`), never a loop per request, so it is safe
    under threaded servers (gunicorn ``--threads``, Werkzeug, waitress, mod_wsgi).

    Args:
        app: the WSGI app to protect (for Flask: ``flask_app.wsgi_app``).
        guard: the :class:`~agentguard.Guard` that decides.
        public_paths: path prefixes (whole segments, relative to ``SCRIPT_NAME``) that skip the
            guard, such as a health check.
        portal: the event loop to decide on; the process-wide one by default.
        request_reviewers / response_reviewers: reviewers for request and response bodies
            instead of the guard's own (:meth:`Guard.reviews <agentguard.Guard.reviews>`); a
            request block is a 403 before the app runs, a response block a 403 when nothing was
            sent yet, else the response is cut.
        requirements: ``environ -> Requirement | None``: the requirement the app's own route
            declares (Flask: :meth:`agentguard.integrations.flask.AgentGuard.route_requirements`),
            used instead of the guard's route rules when it answers one. If it fails, the
            request is refused (503, audited), never run.
    """

    def __init__(
        self,
        app: WSGIApplication,
        guard: Guard,
        *,
        public_paths: Sequence[str] = (),
        portal: EventLoopPortal | None = None,
        request_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        response_reviewers: ReviewChain | Iterable[ReviewerLike] | None = None,
        requirements: Callable[[WSGIEnvironment], Requirement | None] | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.requirements = requirements
        self.reviews = guard.reviews(request_reviewers, response_reviewers)
        self.portal = portal if portal is not None else default_portal()
        self.public_paths = public_prefixes(public_paths)

    def __repr__(self) -> str:
        return f"AgentGuardWSGIMiddleware(app={self.app!r}, guard={self.guard!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = request_from_environ(environ)
        if request.in_public_paths(self.public_paths):
            return self.app(environ, start_response)
        try:
            declared = self._declared(environ, request)
            passage = self.portal.call(
                functools.partial(
                    self.guard.admit,
                    request,
                    requirement=DEFAULT if declared is None else declared,
                    reviews=self.reviews,
                )
            )
        except RequestRefused as error:
            return self._refuse(error, start_response, self.guard.challenge)
        principal = passage.principal
        environ[PRINCIPAL_ENVIRON_KEY] = principal
        token = principal_var.set(principal)
        try:
            if self.reviews or passage.gate is not None:
                body_iter = call_reviewed(
                    self.app, environ, start_response, passage,
                    portal=self.portal, refuse=self._refuse,
                )  # fmt: skip
            else:
                body_iter = self.app(environ, start_response)
        finally:
            principal_var.reset(token)
        return _WithPrincipal(body_iter, principal)

    def _declared(self, environ: WSGIEnvironment, request: GuardRequest) -> Requirement | None:
        source = self.requirements
        if source is None:
            return None
        try:
            declared = source(environ)
            if declared is None or isinstance(declared, Requirement):
                return declared
            problem = f"returned a {type(declared).__name__}"
        except Exception as error:
            problem = f"failed: {type(error).__name__}"
        logger.error("the app's requirement source %s", problem)
        refusal = ServiceUnavailable(_SOURCE_FAILED, reason=Reason.INTERNAL_ERROR)
        self.portal.call(functools.partial(self.guard.record_refusal, request, refusal))
        raise refusal

    @staticmethod
    def _refuse(
        error: RequestRefused, start_response: StartResponse, challenge: Challenge | None = None
    ) -> list[bytes]:
        status, headers, body = error.to_http(challenge)
        headers.append(("content-length", str(len(body))))
        start_response(_status_line(status), headers)
        return [body]
