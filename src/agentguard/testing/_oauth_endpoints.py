"""The fake OAuth vendor's HTTP side: the ASGI app, its routing and its endpoint handlers.

:class:`~agentguard.testing.FakeOAuthVendor` is this app: it holds the configuration, the books
(:mod:`agentguard.testing._oauth_ledger`) and the controls and counters the handlers here read
and update. Each request first takes the delay and the failure a test injected for its endpoint
(:meth:`~agentguard.testing.FakeOAuthVendor.fail_next`, ``slow_down``), then is answered as a
strict vendor would: RFC 8414 metadata, ``/authorize`` (a consent page, or the decision and the
302 back with the RFC 9207 ``iss``), ``/token`` and ``/revoke`` with client authentication, and
the API under ``/api/`` answering with the vendor user its Bearer token belongs to.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import anyio

from agentguard._clock import Clock
from agentguard._secret import Secret
from agentguard.testing._oauth_ledger import Ledger, _OAuthFailure
from agentguard.testing._oauth_pages import (
    Answer,
    Receive,
    Scope,
    Send,
    consent_page,
    error_page,
    json_answer,
    parse_form,
    read_body,
    redirect,
    send_answer,
    with_query,
)
from agentguard.testing._oauth_requests import (
    authenticate_client,
    back_params,
    check_authorization,
    token_grant,
)

__all__ = ["ENDPOINTS", "Endpoint", "InjectedFailure", "VendorEndpoints"]

Endpoint = Literal["metadata", "authorize", "token", "refresh", "revoke", "api"]
ENDPOINTS = frozenset({"metadata", "authorize", "token", "refresh", "revoke", "api"})
_WELL_KNOWN = "/.well-known/oauth-authorization-server"


@dataclass(frozen=True)
class InjectedFailure:
    """One answer a test queued for an endpoint (:meth:`FakeOAuthVendor.fail_next`)."""

    status: int
    error: str | None


class VendorEndpoints:
    """The ASGI app and endpoint handlers of :class:`~agentguard.testing.FakeOAuthVendor`,
    which sets up the state declared here (read live: a test may change it at any time)."""

    name: str
    users: tuple[str, ...]
    client_id: str
    public_client: bool
    scopes: tuple[str, ...]
    redirect_uris: frozenset[str]
    auto_approve: str | None
    token_ttl: int
    code_ttl: int
    clock: Clock
    metadata_overrides: dict[str, Any]
    issuer_in_redirect: bool
    redirect_iss: str | None
    _client_secret: Secret
    _ledger: Ledger
    _lock: threading.Lock
    _failures: dict[str, deque[InjectedFailure]]
    _delays: dict[str, float]
    _token_calls: int
    _refresh_calls: int
    _revoked: int
    _api_calls: Counter[str]
    _authorizations: list[dict[str, str]]
    _base_url: str

    if TYPE_CHECKING:

        @property
        def issuer(self) -> str: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            raise RuntimeError(f"FakeOAuthVendor serves http, not {scope['type']!r}")
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        answer = await self._route(scope["method"], scope["path"], scope, headers, body)
        await send_answer(send, answer)

    async def _route(
        self, method: str, path: str, scope: Scope, headers: dict[str, str], body: bytes | None
    ) -> Answer:
        prefix = urlsplit(self._base_url).path.rstrip("/") if self._base_url else ""
        if path == _WELL_KNOWN + prefix:
            endpoint = "metadata"
        elif path.startswith(prefix + "/"):
            rest = path[len(prefix) :]
            endpoint = {"/authorize": "authorize", "/token": "token", "/revoke": "revoke"}.get(
                rest, "api" if rest == "/api" or rest.startswith("/api/") else ""
            )
        else:
            endpoint = ""
        if not endpoint:
            return json_answer(404, {"error": "not_found"})
        if body is None:
            return json_answer(413, {"error": "invalid_request"})
        form = parse_form(body) if method == "POST" else None
        controls = [endpoint]
        if endpoint == "token":
            refresh = form is not None and form.get("grant_type") == "refresh_token"
            with self._lock:
                self._token_calls += 1
                self._refresh_calls += refresh
            if refresh:
                controls.insert(0, "refresh")
        delay, failure = self._injected(controls)
        if delay:
            await anyio.sleep(delay)
        if failure is not None and endpoint != "authorize":
            if failure.error is None:
                return Answer(failure.status, (("content-type", "text/plain"),), b"injected")
            return json_answer(failure.status, {"error": failure.error})
        if endpoint == "metadata":
            return self._metadata()
        if endpoint == "authorize":
            query = scope.get("query_string", b"")
            return self._authorize(method, query, headers, body, failure)
        if endpoint == "api":
            return self._api(method, path, headers)
        if method != "POST":
            return json_answer(405, {"error": "invalid_request"}, (("allow", "POST"),))
        if form is None or not headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return json_answer(400, {"error": "invalid_request"})
        secret = None if self.public_client else self._client_secret.reveal()
        try:
            client_id = authenticate_client(headers, form, client_id=self.client_id, secret=secret)
            if endpoint == "revoke":
                return self._revoke(form, client_id)
            now = self.clock.now()
            answer = token_grant(
                self._ledger, form, client_id=client_id, now=now, ttl=self.token_ttl
            )
            return json_answer(200, answer)
        except _OAuthFailure as refusal:
            challenge = (("www-authenticate", 'Basic realm="fake-vendor"'),)
            extra = challenge if refusal.status == 401 else ()
            return json_answer(refusal.status, {"error": refusal.error}, extra)

    def _injected(self, controls: list[str]) -> tuple[float, InjectedFailure | None]:
        """The delay and the injected failure (the first queued, in ``controls`` order)."""
        with self._lock:
            delay = max(self._delays.get(name, 0.0) for name in controls)
            for name in controls:
                queue = self._failures.get(name)
                if queue:
                    return delay, queue.popleft()
            return delay, None

    def _metadata(self) -> Answer:
        base = self.issuer
        auth_methods = (
            ["none"] if self.public_client else ["client_secret_basic", "client_secret_post"]
        )
        document: dict[str, Any] = {
            "issuer": base,
            "authorization_endpoint": base + "/authorize",
            "token_endpoint": base + "/token",
            "revocation_endpoint": base + "/revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "scopes_supported": list(self.scopes),
            "authorization_response_iss_parameter_supported": self.issuer_in_redirect,
        }
        for member, value in self.metadata_overrides.items():
            if value is None:
                document.pop(member, None)
            else:
                document[member] = value
        return json_answer(200, document)

    # -- endpoints -------------------------------------------------------------------------

    def _authorize(
        self,
        method: str,
        query: bytes,
        headers: dict[str, str],
        body: bytes,
        failure: InjectedFailure | None,
    ) -> Answer:
        if method == "GET":
            params = parse_form(query)
        elif method == "POST" and headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            params = parse_form(body)
        else:
            return error_page(405 if method not in ("GET", "POST") else 415, "bad request")
        if params is None:
            return error_page(400, "a parameter is repeated or the query is malformed")
        decision = params.pop("decision", None) if method == "POST" else None
        login = params.pop("login", None) if method == "POST" else None
        iss = (self.redirect_iss or self.issuer) if self.issuer_in_redirect else None
        redirect_uri = check_authorization(
            params,
            client_id=self.client_id,
            redirect_uris=self.redirect_uris,
            scopes=self.scopes,
            issuer=iss,
        )
        if isinstance(redirect_uri, Answer):
            return redirect_uri
        back = back_params(params, iss)
        if failure is not None:
            if failure.status == 302:
                error = failure.error or "server_error"
                return redirect(with_query(redirect_uri, {"error": error, **back}))
            return error_page(failure.status, failure.error or "injected failure")
        if method == "GET":
            with self._lock:
                self._authorizations.append(dict(params))
            if self.auto_approve is None:
                return consent_page(
                    vendor=self.name,
                    action=urlsplit(self.issuer).path + "/authorize",
                    params=params,
                    users=self.users,
                )
            decision, login = "allow", self.auto_approve
        if decision == "deny":
            return redirect(with_query(redirect_uri, {"error": "access_denied", **back}))
        if decision != "allow" or login not in self.users:
            return error_page(400, "choose a known account, then allow or deny")
        code = self._ledger.issue_code(
            user=login,
            client_id=params["client_id"],
            redirect_uri=redirect_uri,
            challenge=params["code_challenge"],
            scopes=tuple(params.get("scope", "").split()),
            expires_at=self.clock.now() + timedelta(seconds=self.code_ttl),
        )
        return redirect(with_query(redirect_uri, {"code": code, **back}))

    def _revoke(self, form: dict[str, str], client_id: str) -> Answer:
        token = form.get("token")
        if not token:
            raise _OAuthFailure("invalid_request")
        if self._ledger.revoke(token, client_id=client_id):
            with self._lock:
                self._revoked += 1
        return Answer(200, (("cache-control", "no-store"),), b"")

    def _api(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        found = (
            self._ledger.user_of(token.strip(), self.clock.now())
            if scheme.lower() == "bearer"
            else None
        )
        if found is None:
            challenge = 'Bearer realm="fake-vendor", error="invalid_token"'
            return json_answer(401, {"error": "invalid_token"}, (("www-authenticate", challenge),))
        user, scopes = found
        with self._lock:
            self._api_calls[user] += 1
        document = {"vendor_user": user, "method": method, "path": path, "scopes": list(scopes)}
        return json_answer(200, document)
