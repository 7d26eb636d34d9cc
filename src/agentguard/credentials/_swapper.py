"""CredentialSwapper: from (principal, service) to the credential that goes upstream.

0. A ``credentials = "connected"`` service: the calling user's own connected account
   (:meth:`ConnectedCredentials.token_for`), never the vault, never anyone else's; a user
   without one is refused ``connection_required``. Its other secrets (the user's refresh token,
   the gateway's OAuth client secret) are in play too: see :class:`ConnectedSecrets`.
1. The user's own credential for the service, if any; else the account's.
2. A user-scoped credential is sent as is.
3. An admin-scoped credential is never sent: the service's :class:`Minter` turns it into a
   short-lived token for this one user, cached per (service, user) by :class:`MintCache`.
4. Nothing usable: :class:`~agentguard.errors.BadGateway` (502) naming the service, never an
   unauthenticated forward.

Every secret in play is scanned for in the response, not only the one sent: a vendor that
answers a minted token's call with ``{"client_secret": "<admin key>"}`` must not hand the agent
the admin key; nor may a connected call's response show the agent the user's refresh token or
the gateway's OAuth client secret. :meth:`CredentialSwapper.outgoing` gives the credential to
send together with those secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple, Protocol, runtime_checkable

from agentguard._clock import Clock, SystemClock
from agentguard._model import CredentialOwner, CredentialScope, Principal
from agentguard._secret import Secret
from agentguard._services import ServiceConfig
from agentguard.audit._events import Action, AuditEvent, Decision
from agentguard.audit._writer import AuditWriter
from agentguard.credentials._minting import MintCache, Minter, MintingError
from agentguard.credentials._vault import CredentialVault, VaultError
from agentguard.errors import BadGateway, CorruptRecord, Reason

__all__ = [
    "ConnectedCredentials",
    "ConnectedSecrets",
    "CredentialSwapper",
    "Outgoing",
    "RenewedOnRejection",
]

logger = logging.getLogger("agentguard.credentials")


class Outgoing(NamedTuple):
    """The credential to attach, and every secret of the call a response must not reveal.

    ``involved`` starts with ``credential``; for a minted token it also holds the admin
    credential the token was minted from; for a connected account, the user's refresh token
    and the OAuth client's secret.
    """

    credential: Secret
    involved: tuple[Secret, ...]


class ConnectedCredentials(Protocol):
    """Users' connected vendor accounts (:class:`~agentguard.connect.ConnectedAccounts`)."""

    async def token_for(self, principal: Principal, service: str) -> Secret:
        """The user's fresh vendor token for ``service``; refuses ``connection_required``
        (403) when the user has no working connection."""
        ...


@runtime_checkable
class ConnectedSecrets(ConnectedCredentials, Protocol):
    """Connected accounts that also name every secret of a connection
    (:class:`~agentguard.connect.ConnectedAccounts` does); the swapper scans responses for all
    of them. Connections that only have :meth:`token_for` get the access token scanned."""

    async def outgoing(
        self, principal: Principal, service: str
    ) -> tuple[Secret, tuple[Secret, ...]]:
        """The token to send, and every secret a response must not show (the refresh token,
        the OAuth client secret); raises as :meth:`token_for`."""
        ...


@runtime_checkable
class RenewedOnRejection(ConnectedCredentials, Protocol):
    """Connected accounts told when the vendor rejects a user's token
    (:class:`~agentguard.connect.ConnectedAccounts` are): the connection is renewed on the
    next call."""

    async def rejected(self, principal: Principal, service: str, token: Secret) -> bool:
        """The vendor answered 401 to ``token``; whether the next call sends another one."""
        ...


class CredentialSwapper:
    """Chooses, decrypts or mints the real credential for each proxied call.

    Args:
        vault: the encrypted credentials.
        minters: a :class:`Minter` per service name, for services with admin-scoped keys.
        clock: time source for minted-token lifetimes.
        mint_fraction: reuse a minted token until this fraction of its life has passed.
        audit: records each mint (never the token).
        connections: the users' connected accounts, for ``credentials = "connected"``
            services (they never read the vault).
    """

    def __init__(
        self,
        vault: CredentialVault,
        *,
        minters: Mapping[str, Minter] | None = None,
        clock: Clock | None = None,
        mint_fraction: float = 0.8,
        cache_size: int = 4096,
        audit: AuditWriter | None = None,
        connections: ConnectedCredentials | None = None,
    ) -> None:
        self.vault = vault
        self.connections = connections
        self.minters = dict(minters or {})
        self.clock: Clock = clock or SystemClock()
        self.cache = MintCache(self.clock, fraction=mint_fraction, maxsize=cache_size)
        self.audit = audit

    def __repr__(self) -> str:
        return f"CredentialSwapper(minters={sorted(self.minters)}, cached={len(self.cache)})"

    async def credential_for(self, principal: Principal, service: ServiceConfig) -> Secret:
        """The credential to attach for ``principal`` calling ``service``.

        A proxy must also scan the response for the call's other secrets: use :meth:`outgoing`.
        """
        return (await self.outgoing(principal, service)).credential

    async def outgoing(self, principal: Principal, service: ServiceConfig) -> Outgoing:
        """The credential to attach for ``principal`` calling ``service``, and every secret of
        the call (the admin credential behind a minted token)."""
        if service.credentials == "connected":
            return await self._connected(principal, service)
        try:
            found = await self.vault.get(service.name, CredentialOwner.USER, principal.user_id)
            if found is None:
                found = await self.vault.get(
                    service.name, CredentialOwner.ACCOUNT, principal.account_id
                )
        except (VaultError, CorruptRecord) as error:  # tampered or unreadable: never an outage
            logger.error("credential for %s does not open: %s", service.name, error)
            raise BadGateway(service.name, reason=Reason.CREDENTIAL_UNAVAILABLE) from None
        if found is None:
            raise BadGateway(service.name, reason=Reason.CREDENTIAL_UNAVAILABLE)
        record, secret = found
        if record.scope is CredentialScope.USER:
            return Outgoing(secret, (secret,))
        token = await self._minted(secret, principal, service)
        return Outgoing(token, (token, secret))

    async def rejected(
        self, principal: Principal, service: ServiceConfig, credential: Secret
    ) -> bool:
        """The upstream answered 401 to ``credential``, sent for ``principal`` to ``service``.

        A connected account still holding that token is renewed on the next call
        (:meth:`~agentguard.connect.ConnectedAccounts.rejected`: a vendor that sent no
        ``expires_in``, or ended the session early). Credentials from the vault are left as
        they are: an operator replaces them. Whether the next call sends another credential.
        Never raises for the store.
        """
        if service.credentials != "connected":
            return False
        if not isinstance(self.connections, RenewedOnRejection):
            return False
        return await self.connections.rejected(principal, service.name, credential)

    async def _connected(self, principal: Principal, service: ServiceConfig) -> Outgoing:
        if self.connections is None:
            raise BadGateway(
                service.name,
                f"{service.name}: acts with connected accounts, but the gateway was given none "
                "(CredentialSwapper(connections=...))",
                reason=Reason.CREDENTIAL_UNAVAILABLE,
            )
        if isinstance(self.connections, ConnectedSecrets):
            token, others = await self.connections.outgoing(principal, service.name)
            return Outgoing(token, (token, *(other for other in others if other != token)))
        token = await self.connections.token_for(principal, service.name)
        return Outgoing(token, (token,))

    async def _minted(self, admin: Secret, principal: Principal, service: ServiceConfig) -> Secret:
        cached = self.cache.get(service.name, principal)
        if cached is not None:
            return cached.token
        minter = self.minters.get(service.name)
        if minter is None:
            raise BadGateway(
                service.name,
                f"{service.name}: only an admin-scoped credential is configured and no minter "
                "turns it into a user-scoped token",
                reason=Reason.CREDENTIAL_UNAVAILABLE,
            )
        try:
            minted = await minter.mint(admin, principal, service)
        except MintingError as error:
            logger.warning("%s", error)
            raise BadGateway(service.name, reason=Reason.MINTING_FAILED) from None
        if minted.expires_at <= self.clock.now():
            raise BadGateway(service.name, reason=Reason.MINTING_FAILED)
        if minted.token == admin:
            raise BadGateway(
                service.name,
                f"{service.name}: the minter returned the admin credential itself; refused",
                reason=Reason.MINTING_FAILED,
            )
        self.cache.put(service.name, principal, minted)
        if self.audit is not None:
            await self.audit.record(
                AuditEvent(
                    action=Action.CREDENTIAL_MINT,
                    ts=self.clock.now(),
                    decision=Decision.ALLOW,
                    service=service.name,
                    user_id=principal.user_id,
                    workspace_id=principal.workspace_id,
                    account_id=principal.account_id,
                    key_id=principal.key_id,
                    detail={
                        "expires_in": int((minted.expires_at - self.clock.now()).total_seconds())
                    },
                )
            )
        return minted.token
