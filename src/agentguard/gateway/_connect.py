"""Connected accounts in the standalone gateway: the parts its settings describe.

When a service says ``credentials = "connected"``, the gateway builds one
:class:`~agentguard.connect.VendorClient` per such service, the connect flow
(:class:`~agentguard.connect.ConnectFlows`), the users' connections
(:class:`~agentguard.connect.ConnectedAccounts`, which the credential swapper asks for each
call's token), the browser pages (:class:`~agentguard.asgi._connect.ConnectApp`, mounted at
``/connect`` on the agents' listener: the human's browser must reach it; it authenticates by
ticket, never by an agent's key) and the operator endpoints (``/connections`` on the operator
listener). The CLI builds the same parts from the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentguard._config_connect import CONNECT_MOUNT, VENDOR_TIMEOUT, connect_problems
from agentguard.asgi._connect import ConnectApp
from agentguard.asgi._operator_connections import ConnectionEndpoints, LinkIssuer
from agentguard.connect._accounts import ConnectedAccounts
from agentguard.connect._flows import ConnectFlows
from agentguard.connect._vendor import VendorClient
from agentguard.errors import ConfigurationError
from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore

if TYPE_CHECKING:
    import httpx

    from agentguard._clock import Clock
    from agentguard._config_connect import VENDOR_TIMEOUT
    from agentguard._guard import Guard
    from agentguard.audit._writer import AuditWriter
from agentguard.config import Settings

__all__ = [
    "ConnectParts",
    "connect_flows",
    "connect_parts",
    "connect_uri",
    "connected_accounts",
    "vendor_clients",
]


def _checked(settings: Settings, store: Any) -> str:
    """The public origin; :class:`ConfigurationError` when the settings or the store cannot
    serve connected accounts (settings built without :func:`load_settings` were not checked)."""
    files = settings.secrets.oauth_client_secret_files
    problems = connect_problems(settings.services, settings.public_origin, files)
    if problems:
        location, message = problems[0]
        where = ".".join(str(part) for part in location)
        raise ConfigurationError(f"{where}: {message}")
    if not isinstance(store, ConnectionStore) or not isinstance(store, ConnectFlowStore):
        raise ConfigurationError(
            f'services with credentials = "connected" need a store that keeps connected '
            f"accounts; {type(store).__name__} does not"
        )
    if settings.public_origin is None:  # connect_problems refuses it; for the type checker
        raise ConfigurationError("connected accounts need public_origin")
    return settings.public_origin


def connect_uri(settings: Settings) -> Callable[[str], str | None]:
    """The connect page of a service, as :class:`ConnectionRequired` refusals name it."""
    origin = settings.public_origin

    def uri(service: str) -> str | None:
        return None if origin is None else f"{origin}{CONNECT_MOUNT}/{service}"

    return uri


def vendor_clients(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    only: str | None = None,
) -> dict[str, VendorClient]:
    """One OAuth client per connected service (or only the service ``only``);
    :class:`SettingsError` naming the variable for a client secret that is missing."""
    transports = transports or {}
    vendors: dict[str, VendorClient] = {}
    for service in settings.connected_services():
        if only is not None and service.name != only:
            continue
        if service.oauth is None:  # ServiceConfig requires it; for the type checker
            raise ConfigurationError(f"service {service.name}: no [services.oauth]")
        vendors[service.name] = VendorClient(
            service.name,
            service.oauth,
            client_secret=settings.oauth_client_secret(service.name),
            transport=transports.get(service.name),
            timeout=VENDOR_TIMEOUT,  # the [connect] lease check assumes this one
            clock=clock,
        )
    return vendors


def connect_flows(
    settings: Settings, store: Any, *, clock: Clock | None, audit: AuditWriter | None
) -> ConnectFlows:
    """The tickets and authorizations, with ``[connect]``'s lifetimes."""
    _checked(settings, store)
    return ConnectFlows(
        store,
        settings.keyring(),
        clock=clock,
        audit=audit,
        ticket_ttl=settings.connect.ticket_lifetime(),
        state_ttl=settings.connect.state_lifetime(),
    )


def connected_accounts(
    settings: Settings,
    store: Any,
    vendors: Mapping[str, VendorClient],
    *,
    clock: Clock | None,
    audit: AuditWriter | None,
) -> ConnectedAccounts:
    """The users' connections, refreshed under ``[connect]``'s lease."""
    _checked(settings, store)
    return ConnectedAccounts(
        store,
        settings.keyring(),
        vendors,
        clock=clock,
        audit=audit,
        connect_uri=connect_uri(settings),
        lease_seconds=settings.connect.lease_seconds,
        wait_seconds=settings.connect.wait_seconds,
    )


@dataclass
class ConnectParts:
    """Everything connected accounts add to the gateway.

    Attributes:
        vendors: the OAuth client per connected service (closed by :meth:`aclose`).
        flows: tickets and authorizations.
        accounts: the users' connections (the credential swapper's ``connections``).
        app: the browser pages, mounted at ``/connect`` on the agents' listener.
        endpoints: ``/connections`` on the operator listener.
    """

    vendors: dict[str, VendorClient]
    flows: ConnectFlows
    accounts: ConnectedAccounts
    app: ConnectApp
    endpoints: ConnectionEndpoints = field(repr=False)

    async def aclose(self) -> None:
        """Close the vendor clients' connection pools."""
        for vendor in self.vendors.values():
            await vendor.aclose()


def connect_parts(
    settings: Settings,
    store: Any,
    guard: Guard,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> ConnectParts | None:
    """The parts for ``settings``' connected services, or ``None`` when there are none."""
    if not settings.connected_services():
        return None
    origin = _checked(settings, store)
    vendors = vendor_clients(settings, clock=guard.clock, transports=transports)
    flows = connect_flows(settings, store, clock=guard.clock, audit=guard.audit)
    accounts = connected_accounts(settings, store, vendors, clock=guard.clock, audit=guard.audit)
    app = ConnectApp(
        guard,
        flows=flows,
        accounts=accounts,
        vendors=vendors,
        public_origin=origin,
        mount=CONNECT_MOUNT,
    )
    links = LinkIssuer(flows, store, settings.services, origin)
    return ConnectParts(vendors, flows, accounts, app, ConnectionEndpoints(links, accounts))
