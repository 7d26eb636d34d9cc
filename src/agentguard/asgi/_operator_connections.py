"""The operator listener's connected-account endpoints, and the link issuance the CLI shares.

- ``GET /connections``: every connection (query ``user_id``, ``service``), as
  :func:`connection_document` (status, scopes, times; never a token).
- ``POST /connections/{service}/{user_id}/link``: 201 ``{"url", "expires_at", ...}``: a one-time
  connect link for the user's human (audited ``connection.link`` with the operator's name). 404
  for an unknown service or user, 409 for a service that does not use connected accounts or a
  user who is disabled (or whose account is closed).
- ``DELETE /connections/{service}/{user_id}``: 200 ``{"disconnected": true}`` (revoked at the
  vendor when it can; audited ``connection.disconnect``), or 404.

The link's URL carries the ticket: it is shown once, in the 201 body, and never logged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from agentguard._config_connect import CONNECT_MOUNT
from agentguard._model import ConnectedAccount, ConnectFlow, OperatorRecord
from agentguard._reasons import Reason
from agentguard._secret import Secret
from agentguard.asgi._responses import send_json
from agentguard.asgi._types import Scope, Send
from agentguard.connect._standing import Standing, user_standing
from agentguard.errors import InvalidRequest, MethodNotAllowed

if TYPE_CHECKING:
    from agentguard._services import ServiceConfig
    from agentguard.connect._accounts import ConnectedAccounts
    from agentguard.connect._flows import ConnectFlows
    from agentguard.storage._protocols import DirectoryStore

__all__ = [
    "ConnectLink",
    "ConnectionEndpoints",
    "LinkIssuer",
    "_LinkRefused",
    "connection_document",
]

NO_STORE = [("cache-control", "no-store")]
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z")
_QUERY_NAMES = frozenset({"user_id", "service"})


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def connection_document(record: ConnectedAccount) -> dict[str, object]:
    """What an operator sees of a connection: never its tokens."""
    return {
        "id": record.id,
        "service": record.service,
        "user_id": record.user_id,
        "status": record.status.value,
        "scopes": list(record.scopes),
        "expires_at": _when(record.expires_at),
        "connected_at": _when(record.created_at),
        "updated_at": _when(record.updated_at),
    }


class _LinkRefused(Exception):
    """A connect link cannot be made: ``status`` 404 (no such service or user) or 409 (the
    service does not use connected accounts, the user is disabled)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class ConnectLink:
    """A one-time connect link: ``url`` carries the ticket (a secret for one human)."""

    url: Secret = field(repr=False)
    expires_at: datetime
    flow: ConnectFlow


class LinkIssuer:
    """Makes one-time connect links, for the operator listener and the CLI alike.

    Args:
        flows: issues the tickets (and audits each link).
        directory: where users and accounts live (a link needs an enabled user).
        services: the configured services (a link needs a connected one).
        public_origin: where the human's browser reaches the gateway.
    """

    def __init__(
        self,
        flows: ConnectFlows,
        directory: DirectoryStore,
        services: Sequence[ServiceConfig],
        public_origin: str,
    ) -> None:
        self.flows = flows
        self.directory = directory
        self.services = tuple(services)
        self.public_origin = public_origin

    def __repr__(self) -> str:
        return f"LinkIssuer(services={[s.name for s in self.services]})"

    async def issue(self, service: str, user_id: str, *, by: str) -> ConnectLink:
        """A link for ``user_id``'s human to connect ``service``; :class:`_LinkRefused` unless
        the service uses connected accounts and the user exists, is enabled and belongs to an
        active account. ``by`` (who asked) is audited with the link, never the ticket."""
        found = next((s for s in self.services if s.name == service), None)
        if found is None:
            connected = [s.name for s in self.services if s.credentials == "connected"]
            raise _LinkRefused(
                404,
                "not_found",
                f"no service named {service!r} (connected services: "
                f"{', '.join(connected) or 'none'})",
            )
        if found.credentials != "connected":
            raise _LinkRefused(
                409,
                "service_not_connected",
                f'service {service!r} uses operator-set credentials (credentials = "operator"), '
                "not the users' connected accounts",
            )
        standing = (
            await user_standing(self.directory, user_id)
            if _IDENTIFIER.match(user_id)
            else Standing(None, Reason.UNKNOWN_USER)
        )
        user = standing.user
        if standing.problem is Reason.USER_DISABLED:
            raise _LinkRefused(409, "user_disabled", f"user {user_id!r} is disabled")
        if standing.problem is Reason.ACCOUNT_CLOSED and user is not None:
            raise _LinkRefused(
                409,
                "account_closed",
                f"user {user_id!r}'s account {user.account_id!r} is closed",
            )
        if standing.problem is not None or user is None:
            raise _LinkRefused(404, "not_found", f"no user {user_id!r}")
        ticket, flow = await self.flows.issue_ticket(service, user_id, by=by)
        url = f"{self.public_origin}{CONNECT_MOUNT}/{service}?ticket={ticket.reveal()}"
        return ConnectLink(Secret(url), flow.expires_at, flow)


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    try:
        pairs = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, max_num_fields=len(_QUERY_NAMES)
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the query string is not valid (at most user_id, service)") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in _QUERY_NAMES:
            raise InvalidRequest("unknown query parameter; use user_id or service")
        if name in found:
            raise InvalidRequest(f"the query parameter {name} is given more than once")
        if value and not _IDENTIFIER.match(value):
            raise InvalidRequest(f"{name} is not a valid identifier")
        found[name] = value
    return found


class ConnectionEndpoints:
    """``/connections...`` on the operator listener (:class:`~agentguard.asgi._operator.
    OperatorApp` authenticates the operator first and hands the request here).

    Args:
        links: makes the connect links.
        accounts: lists and disconnects connections.
    """

    def __init__(self, links: LinkIssuer, accounts: ConnectedAccounts) -> None:
        self.links = links
        self.accounts = accounts

    def __repr__(self) -> str:
        return f"ConnectionEndpoints({self.links!r})"

    async def handle(
        self, scope: Scope, send: Send, parts: list[str], operator: OperatorRecord
    ) -> bool:
        """Serve ``parts`` (the path's segments) if it is a connections endpoint; ``False``
        if it is not one."""
        method: str = scope["method"]
        if parts == ["connections"]:
            _allow(method, ("GET",))
            query = _query(scope)
            found = await self.accounts.list(
                user_id=query.get("user_id") or None, service=query.get("service") or None
            )
            documents = [connection_document(record) for record in found]
            await send_json(send, 200, {"connections": documents}, NO_STORE)
            return True
        if len(parts) == 4 and parts[0] == "connections" and parts[3] == "link":
            _allow(method, ("POST",))
            await self._link(parts[1], parts[2], operator, send)
            return True
        if len(parts) == 3 and parts[0] == "connections":
            _allow(method, ("DELETE",))
            await self._disconnect(parts[1], parts[2], operator, send)
            return True
        return False

    async def _link(self, service: str, user_id: str, operator: OperatorRecord, send: Send) -> None:
        try:
            link = await self.links.issue(service, user_id, by=operator.name)
        except _LinkRefused as refused:
            document = {"error": refused.error, "error_description": refused.description}
            await send_json(send, refused.status, document, NO_STORE)
            return
        document = {
            "url": link.url.reveal(),
            "expires_at": link.expires_at.isoformat(),
            "service": service,
            "user_id": user_id,
        }
        await send_json(send, 201, document, NO_STORE)

    async def _disconnect(
        self, service: str, user_id: str, operator: OperatorRecord, send: Send
    ) -> None:
        removed = False
        if _IDENTIFIER.match(service) and _IDENTIFIER.match(user_id):
            removed = await self.accounts.disconnect(service, user_id, by=operator.name)
        if not removed:
            description = f"user {user_id!r} has no connection to {service!r}"
            document = {"error": "not_found", "error_description": description}
            await send_json(send, 404, document, NO_STORE)
            return
        await send_json(send, 200, {"disconnected": True}, NO_STORE)


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(allowed)
