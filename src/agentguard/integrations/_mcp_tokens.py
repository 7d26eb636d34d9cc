"""The MCP SDK's token side, answered by agentguard: the verifier, the access token it returns,
and what :class:`~agentguard.integrations.mcp.AgentGuardMCP` established for the request.

Public through :mod:`agentguard.integrations.mcp`; kept apart because that module is long.
"""

from __future__ import annotations

import hmac
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from agentguard._extras import missing_extra

try:
    from mcp.server.auth.provider import AccessToken
except ImportError as error:
    raise missing_extra(error) from None

from agentguard._audience import canonical_resource
from agentguard._model import Level, Principal
from agentguard._permissions import Requirement
from agentguard._request import Credentials, GuardRequest
from agentguard.errors import ConfigurationError, RequestRefused

if TYPE_CHECKING:
    from agentguard._guard import Guard

__all__ = [
    "ANY_KEY",
    "AgentGuardAccessToken",
    "AgentGuardTokenVerifier",
    "Decided",
    "checked_resource",
    "decided_var",
]


#: Any live key may open the MCP endpoint; each tool then asks for its own permission.
ANY_KEY = Requirement(None, Level.READ)


@dataclass(frozen=True, slots=True)
class Decided:
    """What the wrapper established for this request, for the verifier and the tools."""

    guard: Guard
    token: str
    principal: Principal


decided_var: ContextVar[Decided | None] = ContextVar("agentguard_mcp_decided", default=None)


class AgentGuardAccessToken(AccessToken):
    """The SDK's ``AccessToken`` with the agentguard Principal behind it.

    ``client_id`` is the key id (never the key), ``subject`` the user id, ``scopes`` the live
    grants as ``service:level`` values at the time of the request.
    """

    _principal: Principal | None = PrivateAttr(default=None)
    _guard: Any = PrivateAttr(default=None)

    @property
    def principal(self) -> Principal:
        if self._principal is None:  # pragma: no cover - always set by the verifier
            raise LookupError("this access token was not made by AgentGuardTokenVerifier")
        return self._principal


def _access_token(
    guard: Guard, token: str, principal: Principal, resource: str | None
) -> AgentGuardAccessToken:
    access = AgentGuardAccessToken(
        token=token,
        # The SDK binds a session to (client_id, issuer, subject): the key family stays the same
        # across renewals, so a session outlives the access key it started with.
        client_id=principal.family_id,
        scopes=principal.grants.to_scope().split(),
        expires_at=int(principal.expires_at.timestamp()),
        resource=resource,
        subject=principal.user_id,
        claims={
            "workspace_id": principal.workspace_id,
            "account_id": principal.account_id,
            "key_id": principal.key_id,
        },
    )
    access._principal = principal
    access._guard = guard
    return access


class AgentGuardTokenVerifier:
    """The MCP SDK's ``TokenVerifier``, answered by an agentguard :class:`~agentguard.Guard`.

    Behind :class:`AgentGuardMCP` it returns the Principal the wrapper already decided (no
    second resolution, no second audit event). Alone, it authenticates the ``Bearer`` token
    with the guard (audited; DPoP-bound keys need the wrapper) and returns ``None`` on refusal,
    which the SDK turns into its own 401.

    Args:
        guard: decides the tokens.
        resource: this server's resource identifier, reported as ``AccessToken.resource`` so the
            SDK's ``validate_token_resource`` accepts the token; a key issued for another
            resource (RFC 8707 audience) is refused. External JWTs were checked against the
            audience by their resolver.
        require_audience: refuse keys issued for no resource too (see :class:`AgentGuardMCP`).
    """

    def __init__(
        self, guard: Guard, *, resource: str | None = None, require_audience: bool = False
    ) -> None:
        if any(rule.approval for rule in guard.permissions.rules):
            # The SDK hands a verifier the token alone: no path to match a rule, no body to bind.
            raise ConfigurationError(
                "the guard's rules hold calls for approval, which a token verifier cannot "
                "enforce (it sees no request path or body): wrap the MCP app in AgentGuardMCP"
            )
        self.guard = guard
        self.resource = checked_resource(resource)
        self.require_audience = require_audience

    def __repr__(self) -> str:
        return f"AgentGuardTokenVerifier(guard={self.guard!r}, resource={self.resource!r})"

    async def verify_token(self, token: str) -> AccessToken | None:
        decided = decided_var.get()
        if decided is not None and hmac.compare_digest(
            decided.token.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
        ):
            return _access_token(self.guard, token, decided.principal, self.resource)
        request = GuardRequest(
            method="POST",
            path="/",
            headers=((b"authorization", b"Bearer " + token.encode("latin-1", "replace")),),
        )
        try:  # RFC 8707: the audience is part of the one decision, audited once
            principal = await self.guard.authenticate(
                request,
                credentials=Credentials("bearer", token),
                requirement=ANY_KEY,
                resource=self.resource,
                require_audience=self.require_audience,
            )
        except RequestRefused:
            return None
        return _access_token(self.guard, token, principal, self.resource)


def checked_resource(resource: str | None) -> str | None:
    """``resource`` once it is known to be a valid RFC 8707 identifier (checked at start-up)."""
    if resource is not None:
        try:
            canonical_resource(resource)
        except ValueError as error:
            raise ConfigurationError(f"the MCP server's resource is not usable: {error}") from None
    return resource
