"""The fake OAuth vendor's books: codes, grants, access and refresh tokens, kept as hashes.

A grant is one user's consent to one client: the code redeemed for it, the access tokens issued
under it and the one current refresh token (each refresh rotates it). Every token is known here
only by its SHA-256, so no repr, log or debugger view of the fake shows a live token. All methods
are atomic under one lock: the server thread mutates while the test thread reads.

Revocation (RFC 7009) works per grant by default: a refresh token takes its grant, an access
token only itself. In ``"client"`` mode, as at Google, revoking any token of a grant ends every
grant the same vendor user gave the same client, so a reconnect's older grant dies with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

__all__ = ["Ledger", "Revocation", "_OAuthFailure"]

Revocation = Literal["grant", "client"]
"""What revoking a token ends: its grant (``"grant"``) or all of the user's grants to the client."""


class _OAuthFailure(Exception):
    """An RFC 6749 error answer: ``status`` and ``error`` (the body is ``{"error": error}``)."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def digest(token: str) -> str:
    """How the ledger knows a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def s256(verifier: str) -> str:
    """RFC 7636 §4.2 ``S256``: BASE64URL(SHA-256(ASCII(verifier))), unpadded."""
    hashed = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(hashed).decode("ascii").rstrip("=")


@dataclass
class _Code:
    user: str
    client_id: str
    redirect_uri: str
    challenge: str
    scopes: tuple[str, ...]
    expires_at: datetime
    used: bool = False
    grant: int | None = None


@dataclass
class _Grant:
    user: str
    client_id: str
    scopes: tuple[str, ...]
    refresh: str | None = None  # digest of the one refresh token that may be used next
    alive: bool = True


@dataclass
class _Access:
    grant: int
    expires_at: datetime
    revoked: bool = False


class Ledger:
    """Codes and tokens of the fake vendor (see the module docstring)."""

    def __init__(
        self, *, refresh_tokens: bool = True, rotate: bool = True, revocation: Revocation = "grant"
    ) -> None:
        if revocation not in ("grant", "client"):
            raise ValueError("revocation is 'grant' or 'client'")
        self.revocation: Revocation = revocation
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._codes: dict[str, _Code] = {}
        self._grants: dict[int, _Grant] = {}
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, int] = {}  # digest -> grant, current and rotated alike
        self._refresh_tokens = refresh_tokens
        self._rotate = rotate

    def issue_code(
        self,
        *,
        user: str,
        client_id: str,
        redirect_uri: str,
        challenge: str,
        scopes: tuple[str, ...],
        expires_at: datetime,
    ) -> str:
        """A new single-use authorization code bound to these parameters."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[digest(code)] = _Code(
                user, client_id, redirect_uri, challenge, scopes, expires_at
            )
        return code

    def redeem_code(
        self,
        code: str,
        *,
        client_id: str,
        redirect_uri: str,
        verifier: str | None,
        now: datetime,
        ttl: int,
    ) -> dict[str, str | int]:
        """RFC 6749 §4.1.3 with RFC 7636: a used code is refused and kills what it issued."""
        with self._lock:
            record = self._codes.get(digest(code))
            if record is None:
                raise _OAuthFailure("invalid_grant")
            if record.used:
                if record.grant is not None:  # RFC 6749 §4.1.2: revoke what the code issued
                    self._kill(record.grant)
                raise _OAuthFailure("invalid_grant")
            record.used = True  # burnt by any attempt: a verifier cannot be guessed twice
            if now >= record.expires_at:
                raise _OAuthFailure("invalid_grant")
            if record.client_id != client_id or record.redirect_uri != redirect_uri:
                raise _OAuthFailure("invalid_grant")
            if verifier is None or not hmac.compare_digest(s256(verifier), record.challenge):
                raise _OAuthFailure("invalid_grant")
            grant_id = next(self._ids)
            self._grants[grant_id] = _Grant(record.user, client_id, record.scopes)
            record.grant = grant_id
            return self._issue(grant_id, now, ttl, refresh=self._refresh_tokens)

    def refresh(
        self, token: str, *, client_id: str, scopes: tuple[str, ...] | None, now: datetime, ttl: int
    ) -> dict[str, str | int]:
        """RFC 6749 §6 with rotation; a rotated token presented again kills its family."""
        hashed = digest(token)
        with self._lock:
            grant_id = self._refresh.get(hashed)
            grant = self._grants.get(grant_id) if grant_id is not None else None
            if grant is None or grant_id is None or not grant.alive:
                raise _OAuthFailure("invalid_grant")
            if grant.client_id != client_id:
                raise _OAuthFailure("invalid_grant")
            if hashed != grant.refresh:  # reuse of a rotated token: stolen, or a lost race
                self._kill(grant_id)
                raise _OAuthFailure("invalid_grant")
            if scopes is not None and not set(scopes) <= set(grant.scopes):
                raise _OAuthFailure("invalid_scope")
            return self._issue(grant_id, now, ttl, refresh=self._rotate, scopes=scopes)

    def revoke(self, token: str, *, client_id: str) -> bool:
        """RFC 7009: a refresh token takes its family, an access token only itself; in
        ``"client"`` mode either takes every grant of the user to the client.

        Returns whether a live token was revoked (an unknown token is not an error).
        """
        hashed = digest(token)
        with self._lock:
            grant_id = self._refresh.get(hashed)
            access = self._access.get(hashed) if grant_id is None else None
            if access is not None:
                grant_id = access.grant
            if grant_id is None:
                return False
            grant = self._grants[grant_id]
            if grant.client_id != client_id:
                raise _OAuthFailure("unauthorized_client")
            live = grant.alive if access is None else grant.alive and not access.revoked
            if self.revocation == "client":
                for other_id, other in self._grants.items():
                    if other.user == grant.user and other.client_id == client_id:
                        self._kill(other_id)
            elif access is None:
                self._kill(grant_id)
            else:
                access.revoked = True
            return live

    def grants(self, user: str, *, alive: bool = True) -> int:
        """How many grants ``user`` has (only live ones unless ``alive`` is ``False``)."""
        with self._lock:
            return sum(
                1 for g in self._grants.values() if g.user == user and (g.alive or not alive)
            )

    def user_of(self, access_token: str, now: datetime) -> tuple[str, tuple[str, ...]] | None:
        """The vendor user and scopes of a live access token, or ``None``."""
        with self._lock:
            access = self._access.get(digest(access_token))
            if access is None or access.revoked or now >= access.expires_at:
                return None
            grant = self._grants[access.grant]
            return (grant.user, grant.scopes) if grant.alive else None

    def is_active(self, token: str, now: datetime) -> bool:
        """Whether ``token`` is a live access token or the current refresh token of a grant."""
        hashed = digest(token)
        if self.user_of(token, now) is not None:
            return True
        with self._lock:
            grant_id = self._refresh.get(hashed)
            grant = self._grants.get(grant_id) if grant_id is not None else None
            return grant is not None and grant.alive and grant.refresh == hashed

    def expire_access_tokens(self, now: datetime) -> int:
        """Make every access token issued so far expired; how many were live."""
        with self._lock:
            live = [a for a in self._access.values() if a.expires_at > now]
            for access in live:
                access.expires_at = now
            return len(live)

    def invalidate_grants(self, user: str) -> int:
        """Kill every live grant of ``user`` (the user removed the app); how many."""
        with self._lock:
            grants = [i for i, g in self._grants.items() if g.user == user and g.alive]
            for grant_id in grants:
                self._kill(grant_id)
            return len(grants)

    def _kill(self, grant_id: int) -> None:
        grant = self._grants[grant_id]
        grant.alive = False
        grant.refresh = None
        for access in self._access.values():
            if access.grant == grant_id:
                access.revoked = True

    def _issue(
        self,
        grant_id: int,
        now: datetime,
        ttl: int,
        *,
        refresh: bool,
        scopes: tuple[str, ...] | None = None,
    ) -> dict[str, str | int]:
        grant = self._grants[grant_id]
        access = "vat_" + secrets.token_urlsafe(32)
        self._access[digest(access)] = _Access(grant_id, now + timedelta(seconds=ttl))
        answer: dict[str, str | int] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": " ".join(scopes if scopes is not None else grant.scopes),
        }
        if refresh:
            token = "vrt_" + secrets.token_urlsafe(32)
            grant.refresh = digest(token)
            self._refresh[grant.refresh] = grant_id
            answer["refresh_token"] = token
        return answer
