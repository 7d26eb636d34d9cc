"""FakeOAuthVendor: a strict OAuth 2.1 authorization server and API, for tests and demos.

It behaves like a careful vendor: PKCE ``S256`` only; single-use codes bound to the client, the
redirect URI and the challenge, living 60 seconds; refresh tokens rotated on every use, and a
rotated one presented again kills its whole grant; RFC 7009 revocation; RFC 8414 metadata; the
RFC 9207 ``iss`` on every redirect back (or none, or a wrong one, for mix-up tests). The
API under ``/api/`` answers each call with the vendor user the Bearer token belongs to and
counts calls per user, so a test can prove each user's calls carried that user's token.

Here are the vendor's configuration, its controls (injected failures and delays) and its
counters; its HTTP side, the routing and the endpoint handlers, is
:mod:`agentguard.testing._oauth_endpoints`.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from agentguard._clock import Clock, SystemClock
from agentguard._secret import Secret
from agentguard.connect._settings import OAuthClientConfig
from agentguard.testing._oauth_endpoints import (
    ENDPOINTS,
    Endpoint,
    InjectedFailure,
    VendorEndpoints,
)
from agentguard.testing._oauth_ledger import Ledger, Revocation

__all__ = ["FakeOAuthVendor"]


class FakeOAuthVendor(VendorEndpoints):
    """An ASGI OAuth vendor: serve it, :meth:`bind` its URL, point a client at it.

    Endpoints (under the bound URL's path): ``/authorize`` (GET: a consent page with
    ``<select name="login">`` and buttons ``#allow``/``#deny``; POST: the decision, 302 to the
    redirect URI), ``/token``, ``/revoke``, ``/api/...``, and the metadata at
    ``/.well-known/oauth-authorization-server`` (+ the path, RFC 8414 §3.1).

    Example::

        vendor = FakeOAuthVendor(users=("alice", "bob"), auto_approve="alice")
        # serve it on loopback, e.g. uvicorn in a thread (our tests use such a helper), or
        # in-process with httpx.ASGITransport(app=vendor) and base_url="https://vendor.test"
        with serve_on_loopback(vendor) as url:
            vendor.bind(url)
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
        revocation: what revoking a token ends: ``"grant"``, its grant (a refresh token) or
            itself (an access token); ``"client"``, as at Google, every grant the same vendor
            user gave this client (a reconnect's older grant dies with the one revoked).
        issuer_in_redirect: send ``iss`` on the redirect back (RFC 9207), and say so in the
            metadata (``authorization_response_iss_parameter_supported``).
        redirect_iss: the ``iss`` to send instead of the real issuer (a mix-up test).
        clock: the vendor's time (share a ``FakeClock`` with the gateway to expire tokens).

    Controls: :meth:`fail_next`, :meth:`slow_down`, :meth:`expire_access_tokens`,
    :meth:`invalidate_grants`, ``metadata_overrides`` (merged into the metadata; ``None``
    removes a member); ``issuer_in_redirect`` and ``redirect_iss`` may be set at any time.
    Observations: :attr:`token_calls`, :attr:`refresh_calls`, :attr:`api_calls`,
    :attr:`revoked`, :attr:`authorizations`, :meth:`is_active`, :meth:`live_grants`.
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
        revocation: Revocation = "grant",
        issuer_in_redirect: bool = True,
        redirect_iss: str | None = None,
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
        self.issuer_in_redirect = issuer_in_redirect
        self.redirect_iss = redirect_iss
        self._ledger = Ledger(
            refresh_tokens=refresh_tokens, rotate=rotate_refresh_tokens, revocation=revocation
        )
        self._lock = threading.Lock()
        self._failures: dict[str, deque[InjectedFailure]] = {}
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
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint is one of {sorted(ENDPOINTS)}")
        with self._lock:
            queue = self._failures.setdefault(endpoint, deque())
            queue.extend([InjectedFailure(status, error)] * times)

    def slow_down(self, endpoint: Endpoint, seconds: float) -> None:
        """Wait ``seconds`` before answering each request to ``endpoint`` (0 stops it)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint is one of {sorted(ENDPOINTS)}")
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

    def live_grants(self, vendor_user: str) -> int:
        """How many live grants ``vendor_user`` has given the client (one per connection)."""
        return self._ledger.grants(vendor_user)

    def is_active(self, token: str | Secret) -> bool:
        """Whether ``token`` is a live access token or a grant's current refresh token."""
        value = token.reveal() if isinstance(token, Secret) else token
        return self._ledger.is_active(value, self.clock.now())
