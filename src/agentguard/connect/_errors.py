"""The refusals and failures of connected accounts."""

from __future__ import annotations

from typing import ClassVar

from agentguard._reasons import Reason
from agentguard.errors import AgentGuardError, RequestRefused

__all__ = ["CONNECTION_HEADER", "ConnectionRequired", "VendorRefused", "VendorUnavailable"]

CONNECTION_HEADER = "agentguard-connection"
"""The response header that marks the gateway's own ``connection_required`` refusal (it names
the service), so an agent runtime reads only that ``403`` body; the relay drops a vendor's."""


class ConnectionRequired(RequestRefused):
    """403 ``connection_required``: the service acts with the user's own connected account and
    there is none that works. Nothing was forwarded.

    Deliberately not a 401: the agent's key is fine, and a 401 would send its runtime into a
    refresh that cannot help. A human must connect (or reconnect) the account.

    Attributes:
        service: the service to connect.
        connect_uri: the gateway's connect page for the service (the human still has to be
            identified there: it carries no ticket), or ``None`` when no public origin is
            configured.
        reason: ``connection_required`` (never connected, or disconnected) or
            ``connection_broken`` (the vendor refused to renew it).
    """

    status = 403
    error: ClassVar[str | None] = "connection_required"
    default_reason = Reason.CONNECTION_REQUIRED

    def __init__(
        self,
        service: str,
        description: str | None = None,
        *,
        connect_uri: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.service = service
        self.connect_uri = connect_uri
        super().__init__(description, reason=reason)

    def response_headers(self) -> list[tuple[str, str]]:
        return [(CONNECTION_HEADER, self.service)]

    def body(self) -> dict[str, str]:
        body = super().body()
        body["service"] = self.service
        if self.connect_uri is not None:
            body["connect_uri"] = self.connect_uri
        return body


class VendorRefused(AgentGuardError):
    """The vendor's token or revocation endpoint answered with an RFC 6749 error.

    Attributes:
        service: the service whose vendor answered.
        error: the RFC 6749 ``error`` code (``invalid_grant``, ``invalid_client``, ...), or
            ``"invalid_response"`` when the answer was not a usable token response.
        permanent: the grant itself is dead (``invalid_grant``): retrying cannot help; the
            connection is marked broken.
    """

    def __init__(self, service: str, error: str, description: str | None = None) -> None:
        self.service = service
        self.error = error
        super().__init__(
            description or f"{service}: the vendor's authorization server answered {error!r}"
        )

    @property
    def permanent(self) -> bool:
        return self.error == "invalid_grant"


class VendorUnavailable(AgentGuardError):
    """The vendor's authorization server could not be reached, timed out, or answered 5xx.

    The message names the service and the failure's type, never a URL's query or a token.

    Attributes:
        service: the service whose vendor failed.
        retry_after: the seconds the vendor's ``Retry-After`` asked for (``None``: it sent
            none); the refresh backs off at least this long.
    """

    def __init__(self, service: str, description: str, *, retry_after: float | None = None) -> None:
        self.service = service
        self.retry_after = retry_after
        super().__init__(description)
