"""FakeOAuthVendor: a strict OAuth 2.1 authorization server and API, for tests and demos.

It behaves like a careful vendor: PKCE ``S256`` only; single-use codes bound to the client, the
redirect URI and the challenge, living 60 seconds; refresh tokens rotated on every use, and a
rotated one presented again kills its whole grant; RFC 7009 revocation; RFC 8414 metadata. The
API under ``/api/`` answers each call with the vendor user the Bearer token belongs to and
counts calls per user, so a test can prove each user's calls carried that user's token.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio

from agentguard._clock import Clock, SystemClock
from agentguard._secret import Secret
from agentguard.connect._settings import OAuthClientConfig
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

__all__ = ["FakeOAuthVendor"]

Endpoint = Literal["metadata", "authorize", "token", "refresh", "revoke", "api"]
_ENDPOINTS = frozenset({"metadata", "authorize", "token", "refresh", "revoke", "api"})
_WELL_KNOWN = "/.well-known/oauth-authorization-server"


@dataclass(frozen=True)
class _Failure:
    status: int
    error: str | None


class FakeOAuthVendor:
    """An ASGI OAuth vendor: serve it, :meth:`bind` its URL, point a client at it.

    Endpoints (under the bound URL's path): ``/authorize`` (GET: a consent page with
    ``<select name="login">`` and buttons ``#allow``/``#deny``; POST: the decision, 302 to the
    redirect URI), ``/token``, ``/revoke``, ``/api/...``, and the metadata at
    ``/.well-known/oauth-authorization-server`` (+ the path, RFC 8414 §3.1).

    Example::

        vendor = FakeOAuthVendor(users=("alice", "bob"), auto_approve="alice")
        with LoopbackServer(vendor) as server:  # uvicorn on a loopback port, in a thread
            vendor.bind(server.url)
            client = VendorClient("crm", vendor.oauth_config(), client_secret=vendor.client_secret)
            ...
            assert vendor.api_calls["alice"] == 3
            assert vendor.refresh_calls == 1

    Args:
        users: the vendor accounts a browser can sign in as.
        client_id: the one registered client; ``client_secret`` is generated unless given.
        public_client: the client authenticates with ``client_id`` alone (``client_auth="none"``).
        scopes: scopes the vendor knows (an unknown requested scope is ``invalid_scope``).
        redirect_uris: exact redirect URIs allowed; empty allows any http(s) URL.
        auto_approve: a user to approve for at once on GET ``/authorize`` (no browser needed).
        token_ttl, code_ttl: lifetimes in seconds.
        refresh_tokens, rotate_refresh_tokens: issue refresh tokens; rotate them on refresh.
        clock: the vendor's time (share a ``FakeClock`` with the gateway to expire tokens).

    Controls: :meth:`fail_next`, :meth:`slow_down`, :meth:`expire_access_tokens`,
    :meth:`invalidate_grants`, ``metadata_overrides`` (merged into the metadata; ``None``
    removes a member). Observations: :attr:`token_calls`, :attr:`refresh_calls`,
    :attr:`api_calls`, :attr:`revoked`, :attr:`authorizations`, :meth:`is_active`.
    """

    def __init__(
        self,
        *,
        name: str = "Fake Vendor",
        users: Iterable[str] = ("alice", "bob"),
        client_id: str = "agentguard-test",
        client_secret: str | None = None,
        public_client: bool = False,
        scopes: Iterable[str] = ("contacts.read", "contacts.write"),
        redirect_uris: Iterable[str] = (),
        auto_approve: str | None = None,
        token_ttl: int = 3600,
        code_ttl: int = 60,
        refresh_tokens: bool = True,
        rotate_refresh_tokens: bool = True,
        clock: Clock | None = None,
        base_url: str | None = None,
    ) -> None:
        self.name = name
        self.users = tuple(users)
        self.client_id = client_id
        self.public_client = public_client
        self._client_secret = Secret(client_secret or "vcs_" + secrets.token_urlsafe(24))
        self.scopes = tuple(scopes)
        self.redirect_uris = frozenset(redirect_uris)
        self.auto_approve = auto_approve
        self.token_ttl = token_ttl
        self.code_ttl = code_ttl
        self.clock: Clock = clock or SystemClock()
        self.metadata_overrides: dict[str, Any] = {}
        self._ledger = Ledger(refresh_tokens=refresh_tokens, rotate=rotate_refresh_tokens)
        self._lock = threading.Lock()
        self._failures: dict[str, deque[_Failure]] = {}
        self._delays: dict[str, float] = {}
        self._token_calls = 0
        self._refresh_calls = 0
        self._revoked = 0
        self._api_calls: Counter[str] = Counter()
        self._authorizations: list[dict[str, str]] = []
        self._base_url = ""
        if base_url is not None:
            self.bind(base_url)

    def __repr__(self) -> str:
        return f"FakeOAuthVendor({self._base_url or '<unbound>'!r}, users={list(self.users)})"

    # -- configuration -------------------------------------------------------------------

    def bind(self, base_url: str) -> None:
        """Tell the vendor where it is served (its issuer); call once the server is up."""
        self._base_url = base_url.rstrip("/")

    @property
    def issuer(self) -> str:
        """The issuer identifier: the bound base URL."""
        if not self._base_url:
            raise RuntimeError("FakeOAuthVendor: call bind(base_url) once the server is up")
        return self._base_url

    @property
    def api_url(self) -> str:
        """The vendor API's base URL (a service's ``base_url``)."""
        return self.issuer + "/api"

    @property
    def client_secret(self) -> Secret:
        """The registered client's secret."""
        return self._client_secret

    def oauth_config(self, *, discovery: bool = False, **overrides: Any) -> OAuthClientConfig:
        """An :class:`OAuthClientConfig` for this vendor (``allow_insecure_http`` on).

        ``discovery=True`` gives the issuer alone, so the client reads the RFC 8414 metadata.
        """
        fields: dict[str, Any] = {
            "client_id": self.client_id,
            "scopes": self.scopes,
            "client_auth": "none" if self.public_client else "client_secret_basic",
            "allow_insecure_http": True,
        }
        if discovery:
            fields["issuer"] = self.issuer
        else:
            fields["authorization_endpoint"] = self.issuer + "/authorize"
            fields["token_endpoint"] = self.issuer + "/token"
            fields["revocation_endpoint"] = self.issuer + "/revoke"
        fields.update(overrides)
        return OAuthClientConfig(**fields)

    # -- controls --------------------------------------------------------------------------

    def fail_next(
        self, endpoint: Endpoint, status: int, error: str | None = None, *, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` with ``status``.

        The body is ``{"error": error}`` when ``error`` is given, else plain text. ``"refresh"``
        is the token endpoint's refresh grant only; ``"token"`` any token request. At
        ``"authorize"`` a 302 redirects to the client with ``error``.
        """
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"endpoint is one of {sorted(_ENDPOINTS)}")
        with self._lock:
            queue = self._failures.setdefault(endpoint, deque())
            queue.extend([_Failure(status, error)] * times)

    def slow_down(self, endpoint: Endpoint, seconds: float) -> None:
        """Wait ``seconds`` before answering each request to ``endpoint`` (0 stops it)."""
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"endpoint is one of {sorted(_ENDPOINTS)}")
        with self._lock:
            self._delays[endpoint] = seconds

    def expire_access_tokens(self) -> int:
        """Expire every access token issued so far (the API answers 401); how many."""
        return self._ledger.expire_access_tokens(self.clock.now())

    def invalidate_grants(self, vendor_user: str) -> int:
        """The user removed the app at the vendor: the user's grants die (refresh answers
        ``invalid_grant``, their access tokens 401); how many grants."""
        return self._ledger.invalidate_grants(vendor_user)

    # -- observations ----------------------------------------------------------------------

    @property
    def token_calls(self) -> int:
        """Requests to the token endpoint (every grant type, refused ones included)."""
        with self._lock:
            return self._token_calls

    @property
    def refresh_calls(self) -> int:
        """Token requests with ``grant_type=refresh_token``."""
        with self._lock:
            return self._refresh_calls

    @property
    def revoked(self) -> int:
        """Revocation requests that revoked a live token."""
        with self._lock:
            return self._revoked

    @property
    def api_calls(self) -> Counter[str]:
        """Authenticated API calls per vendor user (a copy)."""
        with self._lock:
            return Counter(self._api_calls)

    @property
    def authorizations(self) -> list[dict[str, str]]:
        """The parameters of each authorization request received (copies)."""
        with self._lock:
            return [dict(params) for params in self._authorizations]

    def is_active(self, token: str | Secret) -> bool:
        """Whether ``token`` is a live access token or a grant's current refresh token."""
        value = token.reveal() if isinstance(token, Secret) else token
        return self._ledger.is_active(value, self.clock.now())

    # -- ASGI ------------------------------------------------------------------------------

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

    def _injected(self, controls: list[str]) -> tuple[float, _Failure | None]:
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
            "authorization_response_iss_parameter_supported": True,
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
        failure: _Failure | None,
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
        redirect_uri = check_authorization(
            params,
            client_id=self.client_id,
            redirect_uris=self.redirect_uris,
            scopes=self.scopes,
            issuer=self.issuer,
        )
        if isinstance(redirect_uri, Answer):
            return redirect_uri
        back = back_params(params, self.issuer)
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
