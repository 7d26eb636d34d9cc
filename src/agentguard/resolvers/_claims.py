"""From verified token claims to a live Principal: the token says who, the user store says what.

Shared by :class:`~agentguard.resolvers.JWTAccessTokenResolver` and
:class:`~agentguard.resolvers.IntrospectionResolver`. The subject is mapped to an agentguard
user id; the user, its account and its membership are read from the
:class:`~agentguard.storage.DirectoryStore` on every call (nothing here is cached), so disabling
a user or removing a membership stops their external tokens on the next request exactly as it
stops their agentguard keys. A token's ``scope`` can only narrow the user's live grants.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agentguard._model import Grants, Principal
from agentguard.errors import InvalidToken, Reason
from agentguard.storage._outage import store_outage
from agentguard.storage._protocols import DirectoryStore

__all__ = [
    "ACCESS_TOKEN_KINDS",
    "MAX_NUMERIC_DATE",
    "SubjectMapping",
    "check_access_token_kind",
    "confirmation_jkt",
    "numeric_date",
    "scope_grants",
    "token_key_id",
]

_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}\Z")
_MAX_CLAIM = 255

MAX_NUMERIC_DATE = 253402300799
"""The largest NumericDate a resolver accepts (9999-12-31T23:59:59Z): later is malformed."""


def numeric_date(claims: Mapping[str, Any], name: str, *, source: str = "token") -> float | None:
    """Claim ``name`` as an RFC 7519 NumericDate in ``[0, MAX_NUMERIC_DATE]``, or ``None``.

    The bound is checked before any conversion, so ``1e300`` or ``10**400`` is a clear 401
    (malformed), never an ``OverflowError`` from ``float()`` or ``datetime.fromtimestamp``.
    """
    value = claims.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value <= MAX_NUMERIC_DATE  # False for NaN; exact for huge ints
    ):
        raise InvalidToken(
            f"the {source}'s {name} is not a NumericDate between 1970 and 9999",
            reason=Reason.MALFORMED_KEY,
        )
    return float(value)


def token_key_id(token: str, jti: object = None) -> str:
    """A stable, non-secret id for audit records: ``jwt:<16 hex of sha256(jti or token)>``."""
    source = jti if isinstance(jti, str) and jti else token
    return "jwt:" + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _claim_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if isinstance(value, str) and 0 < len(value) <= _MAX_CLAIM:
        return value
    return None


ACCESS_TOKEN_KINDS: frozenset[str] = frozenset(
    {
        "bearer",
        "dpop",
        "access",
        "access_token",
        "at+jwt",
        "application/at+jwt",
        "urn:ietf:params:oauth:token-type:access_token",
    }
)
"""Values of a token-kind member (``token_type``, ``typ``, ``token_use``) that name an access
token, after :func:`token_kind` normalises them. Anything else (``refresh_token``, Keycloak's
``Refresh`` and ``Offline``, ``id_token``, Cognito's ``id``, an RFC 8693 URI of another type)
is refused."""

#: The members that authorization servers use to say what kind of token this is.
KIND_MEMBERS = ("token_type", "typ", "token_use")


def token_kind(value: str) -> str:
    """``value`` as compared: surrounding whitespace dropped, lower case, ``-`` read as ``_``."""
    return value.strip().lower().replace("-", "_")


def check_access_token_kind(
    claims: Mapping[str, Any],
    *,
    members: tuple[str, ...] = KIND_MEMBERS,
    accepted: frozenset[str] = ACCESS_TOKEN_KINDS,
    required: str | None = None,
) -> None:
    """Refuse unless every kind member present names an access token.

    A member that is not a string is malformed; one naming any other kind (a refresh, offline,
    ID or unknown token) is ``wrong_key_kind``. ``required`` names a member that must be present
    (introspection's ``token_type``, since RFC 7662 lets a server omit it for refresh tokens).
    """
    for name in members:
        value = claims.get(name)
        if value is None:
            if name == required:
                raise InvalidToken(
                    f"the authorization server does not say this is an access token ({name})",
                    reason=Reason.WRONG_KEY_KIND,
                )
            continue
        if not isinstance(value, str):
            raise InvalidToken(f"the token's {name} is not a string", reason=Reason.MALFORMED_KEY)
        if token_kind(value) not in accepted:
            raise InvalidToken(
                f"only access tokens can be used here ({name} names another kind)",
                reason=Reason.WRONG_KEY_KIND,
            )


def scope_grants(scope: str) -> Grants:
    """The agentguard grants named by an OAuth ``scope``; other scope values are ignored.

    ``"openid crm:read notes:write notes/purge:none"`` gives ``crm:read notes:write
    notes/purge:none`` (tool tokens included: a scope that denies a tool must keep denying it);
    ``openid`` names no service, and a value such as ``crm:admin`` names no level, so both grant
    nothing.
    """
    return Grants.from_scope(scope, skip_foreign=True)


def confirmation_jkt(claims: Mapping[str, Any]) -> str | None:
    """The DPoP key thumbprint of ``cnf.jkt`` (RFC 9449 §6), or ``None`` when unbound."""
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, Mapping):
        raise InvalidToken("the token's cnf claim is malformed", reason=Reason.MALFORMED_KEY)
    jkt = cnf.get("jkt")
    if jkt is None:
        # A confirmation by another method (x5t#S256, mTLS) cannot be checked here: refuse.
        raise InvalidToken(
            "the token is bound to a key this server cannot check", reason=Reason.MALFORMED_KEY
        )
    if not isinstance(jkt, str) or not _THUMBPRINT.match(jkt):
        raise InvalidToken("the token's cnf.jkt is malformed", reason=Reason.MALFORMED_KEY)
    return jkt


@dataclass(frozen=True)
class SubjectMapping:
    """How a token's claims name an agentguard user and workspace.

    Args:
        directory: where users, accounts and memberships are read live.
        user_claim: the claim holding the subject (``sub`` by default; Entra users may prefer
            ``oid``).
        user_id: maps the claim's value to an agentguard user id (identity by default); return
            ``None`` for subjects that have no user here.
        workspace_id: the workspace every token of this issuer acts in, or ``None`` to read it
            from ``workspace_claim``.
        workspace_claim: the claim naming the workspace when ``workspace_id`` is ``None``.
        narrow_by_scope: when the token carries ``scope``, narrow the user's grants to the
            ``service:level`` values in it (a scope naming none grants nothing). Turn it off
            when your authorization server's scopes mean something else.
    """

    directory: DirectoryStore
    user_claim: str = "sub"
    user_id: Callable[[str], str | None] | None = None
    workspace_id: str | None = None
    workspace_claim: str = "workspace"
    narrow_by_scope: bool = True

    async def principal(
        self,
        claims: Mapping[str, Any],
        *,
        key_id: str,
        expires_at: datetime | None,
        jkt: str | None,
    ) -> Principal:
        """The live Principal for already verified ``claims``; :class:`InvalidToken` otherwise."""
        subject = _claim_text(claims, self.user_claim)
        if subject is None:
            raise InvalidToken("the token names no subject", reason=Reason.UNKNOWN_USER)
        user_id = self.user_id(subject) if self.user_id is not None else subject
        workspace_id = self.workspace_id or _claim_text(claims, self.workspace_claim)
        family_id = _family(claims, subject)
        ids = {"key_id": key_id, "family_id": family_id, "user_id": user_id}
        if user_id is None:
            raise InvalidToken(reason=Reason.UNKNOWN_USER).with_context(key_id=key_id)
        if workspace_id is None:
            raise InvalidToken(
                "the token names no workspace", reason=Reason.UNKNOWN_WORKSPACE
            ).with_context(**ids)
        with store_outage():
            user = await self.directory.get_user(user_id)
            account = await self.directory.get_account(user.account_id) if user else None
            workspace = await self.directory.get_workspace(workspace_id)
            member = user is not None and await self.directory.is_member(user_id, workspace_id)
        if user is None:
            raise InvalidToken(reason=Reason.UNKNOWN_USER).with_context(**ids)
        ids["account_id"] = user.account_id
        if account is None or not account.active:
            raise InvalidToken(reason=Reason.ACCOUNT_CLOSED).with_context(**ids)
        if not user.enabled:
            raise InvalidToken(reason=Reason.USER_DISABLED).with_context(**ids)
        if workspace is None or workspace.account_id != user.account_id or not member:
            raise InvalidToken(reason=Reason.NOT_A_MEMBER).with_context(
                workspace_id=workspace_id, **ids
            )
        grants = user.grants
        scope = claims.get("scope")
        if self.narrow_by_scope and scope is not None:
            if not isinstance(scope, str):
                raise InvalidToken("the token's scope is not a string", reason=Reason.MALFORMED_KEY)
            grants = grants.narrow(scope_grants(scope))
        return Principal(
            user_id=user_id,
            workspace_id=workspace_id,
            account_id=user.account_id,
            key_id=key_id,
            family_id=family_id,
            grants=grants,
            expires_at=expires_at or datetime.max.replace(tzinfo=timezone.utc),
            jkt=jkt,
        )


def _family(claims: Mapping[str, Any], subject: str) -> str:
    """A stable family for an external token, as a refreshed agentguard key keeps its family:
    the authorization server's session (``sid``) when it names one, else the client and the
    subject (``client_id`` or ``azp``, and ``sub``). A fresh token from the same session or
    client is then the same family, for per-family rate limits and approvals."""
    session = _claim_text(claims, "sid")
    if session is not None:
        basis = "sid\x00" + session
    else:
        client = _claim_text(claims, "client_id") or _claim_text(claims, "azp") or ""
        basis = "client\x00" + client + "\x00" + subject
    issuer = _claim_text(claims, "iss") or ""
    digest = hashlib.sha256((issuer + "\x00" + basis).encode("utf-8", "surrogatepass"))
    return "extfam:" + digest.hexdigest()[:40]
