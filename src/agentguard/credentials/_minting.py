"""Minting: an admin-scoped credential never leaves; a short-lived, user-scoped token does.

A :class:`Minter` turns the account's admin credential into a token for one user. Two ship:
:class:`TokenExchangeMinter` (RFC 8693 over httpx) and :class:`CallableMinter` (any async
function, for vendors with their own flow). :class:`MintCache` keeps a minted token per
(service, user) until a fraction of its life has passed, and drops it the moment the user's
live state (workspace, account, grants) differs from the state it was minted for.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable
from urllib.parse import quote_plus

from cachetools import TLRUCache

from agentguard._clock import Clock, SystemClock
from agentguard._model import Principal
from agentguard._redaction import install_log_redaction
from agentguard._secret import Secret
from agentguard._services import ServiceConfig
from agentguard.credentials._echo import EchoScanner
from agentguard.errors import AgentGuardError, UsageError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CallableMinter",
    "MintCache",
    "MintedToken",
    "Minter",
    "MintingError",
    "TokenExchangeMinter",
]

# RFC 8693 identifiers (not secrets)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
USER_ID_TOKEN_TYPE = "urn:agentguard:params:oauth:token-type:user-id"  # noqa: S105
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")  # real OAuth codes: invalid_grant, ...


class MintedToken(NamedTuple):
    """A user-scoped token and the instant it stops working."""

    token: Secret
    expires_at: datetime


class MintingError(AgentGuardError):
    """The vendor refused or failed to mint; the message holds no secret and no response body."""


@runtime_checkable
class Minter(Protocol):
    """Turns an admin credential into a short-lived token scoped to ``principal``'s user."""

    async def mint(
        self, admin_credential: Secret, principal: Principal, service: ServiceConfig
    ) -> MintedToken: ...


class CallableMinter:
    """A :class:`Minter` around ``function(admin_credential, principal, service)``.

    The function returns a :class:`MintedToken` or ``(token, expires_at)``; it must never
    return or log the admin credential.
    """

    def __init__(
        self,
        function: Callable[
            [Secret, Principal, ServiceConfig], Awaitable[MintedToken | tuple[str, datetime]]
        ],
    ) -> None:
        self.function = function

    async def mint(
        self, admin_credential: Secret, principal: Principal, service: ServiceConfig
    ) -> MintedToken:
        result = await self.function(admin_credential, principal, service)
        if isinstance(result, MintedToken):
            return result
        token, expires_at = result
        return MintedToken(Secret(token), expires_at)


class TokenExchangeMinter:
    """RFC 8693 token exchange: the admin credential authenticates, the user is the subject.

    Sends ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange`` with the user as
    ``subject_token`` (by default the agentguard user id, typed
    ``urn:agentguard:params:oauth:token-type:user-id``; map it with ``subject``), asks for an
    access token, and authenticates with the admin credential as ``Authorization: Bearer`` (or
    as the client secret with HTTP Basic when ``client_id`` is given).

    Args:
        token_url: the vendor's token endpoint (HTTPS unless ``allow_insecure_http``).
        subject: the vendor's identifier for the principal's user.
        subject_token_type: how the vendor should read ``subject_token``.
        audience / scope: optional RFC 8693 parameters (``scope`` may be a function).
        client_id: authenticate with HTTP Basic ``client_id:<admin credential>`` instead.
        client: an ``httpx.AsyncClient`` to reuse (one is created otherwise).
    """

    def __init__(
        self,
        token_url: str,
        *,
        subject: Callable[[Principal], str] = lambda principal: principal.user_id,
        subject_token_type: str = USER_ID_TOKEN_TYPE,
        audience: str | None = None,
        scope: str | Callable[[Principal], str | None] | None = None,
        client_id: str | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
        allow_insecure_http: bool = False,
    ) -> None:
        import httpx  # lazily: `import agentguard.credentials` needs no HTTP client

        url = httpx.URL(token_url)
        if url.scheme != "https" and not (allow_insecure_http and url.scheme == "http"):
            raise UsageError("the token endpoint must be https (or set allow_insecure_http)")
        install_log_redaction()
        self.token_url = token_url
        self.subject = subject
        self.subject_token_type = subject_token_type
        self.audience = audience
        self.scope = scope
        self.client_id = client_id
        self.clock: Clock = clock or SystemClock()
        self._client = client or httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False
        )

    def __repr__(self) -> str:
        return f"TokenExchangeMinter({self.token_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client this minter created."""
        await self._client.aclose()

    async def mint(
        self, admin_credential: Secret, principal: Principal, service: ServiceConfig
    ) -> MintedToken:
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": self.subject(principal),
            "subject_token_type": self.subject_token_type,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        if self.audience is not None:
            form["audience"] = self.audience
        scope = self.scope(principal) if callable(self.scope) else self.scope
        if scope:
            form["scope"] = scope
        headers = {"Accept": "application/json"}
        if self.client_id is not None:  # RFC 6749 §2.3.1: form-encode, then Basic
            pair = f"{quote_plus(self.client_id)}:{quote_plus(admin_credential.reveal())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            headers["Authorization"] = f"Bearer {admin_credential.reveal()}"
        import httpx

        try:
            response = await self._client.post(self.token_url, data=form, headers=headers)
        except httpx.HTTPError as error:
            raise MintingError(
                f"token exchange for {service.name} failed: {type(error).__name__}"
            ) from None
        return self._parse(response, service, admin_credential)

    def _parse(
        self, response: httpx.Response, service: ServiceConfig, admin: Secret
    ) -> MintedToken:
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200 or not isinstance(document, dict):
            code = document.get("error") if isinstance(document, dict) else None
            plain = isinstance(code, str) and _ERROR_CODE.match(code) is not None
            if plain and EchoScanner([admin.reveal()]).found_in(str(code).encode()):
                plain = False  # a vendor that echoes the key in its error code
            shown = str(code) if plain else "no error code"
            raise MintingError(
                f"token exchange for {service.name} answered {response.status_code} ({shown})"
            )
        token = document.get("access_token")
        lifetime = document.get("expires_in")
        if not isinstance(token, str) or not token:
            raise MintingError(f"token exchange for {service.name} returned no access_token")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise MintingError(f"token exchange for {service.name} returned no usable expires_in")
        return MintedToken(Secret(token), self.clock.now() + timedelta(seconds=lifetime))


def _state(principal: Principal) -> bytes:
    """What a minted token was minted for; any change means mint again."""
    text = "\x00".join((principal.account_id, principal.workspace_id, principal.grants.to_scope()))
    return hashlib.sha256(text.encode()).digest()


class MintCache:
    """Minted tokens per (service, user), reused until ``fraction`` of their life has passed.

    An entry minted for other live state of the user (workspace, account, grants) is dropped on
    the next lookup; :meth:`invalidate_user` drops a user's tokens at once (call it when you
    disable a user in-process). Backed by a cachetools ``TLRUCache`` on the injected clock.
    """

    def __init__(self, clock: Clock, *, fraction: float = 0.8, maxsize: int = 4096) -> None:
        if not 0 < fraction <= 1:
            raise UsageError("fraction is in (0, 1]")
        self.clock = clock
        self.fraction = fraction
        self._lock = threading.Lock()
        self._cache: TLRUCache[tuple[str, str], tuple[bytes, MintedToken, float]] = TLRUCache(
            maxsize=maxsize,
            ttu=lambda _key, value, _now: value[2],
            timer=lambda: self.clock.now().timestamp(),
        )

    def get(self, service: str, principal: Principal) -> MintedToken | None:
        """A still-fresh token minted for this user in its current state, or ``None``."""
        key = (service, principal.user_id)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[0] != _state(principal):
                del self._cache[key]
                return None
            return entry[1]

    def put(self, service: str, principal: Principal, minted: MintedToken) -> None:
        """Remember ``minted`` until ``fraction`` of its remaining life has passed."""
        now = self.clock.now().timestamp()
        life = minted.expires_at.timestamp() - now
        if life <= 0:
            return
        with self._lock:
            self._cache[(service, principal.user_id)] = (
                _state(principal),
                minted,
                now + life * self.fraction,
            )

    def invalidate_user(self, user_id: str) -> int:
        """Drop every token minted for ``user_id``; return how many."""
        with self._lock:
            keys = [key for key in self._cache if key[1] == user_id]
            for key in keys:
                del self._cache[key]
        return len(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
