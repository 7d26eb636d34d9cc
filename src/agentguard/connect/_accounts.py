"""ConnectedAccounts: each user's own vendor accounts, stored sealed, handed out fresh per call.

The credential swapper asks :meth:`ConnectedAccounts.token_for` for every call to a
``credentials = "connected"`` service. Nothing is cached in memory beyond the call: each call
reads the connection (a disconnect is effective on the next call), opens the vendor's access
token, and renews it ahead of expiry under the single flight of
:mod:`agentguard.connect._refresh`. A user without a working connection is refused
``connection_required``; there is no fallback to anyone else's credential. A row that does not
open (its key-encryption key was dropped, or it was tampered with) is refused
``connection_broken``, like a grant the vendor killed: only a reconnect mends it.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pydantic import ValidationError

from agentguard._clock import Clock, SystemClock
from agentguard._keys._format import new_id
from agentguard._model import ConnectedAccount, ConnectionStatus, Principal
from agentguard._secret import Secret
from agentguard.audit._events import Action, AuditEvent, Decision, Scalar
from agentguard.audit._writer import AuditWriter
from agentguard.connect._errors import ConnectionRequired, VendorRefused, VendorUnavailable
from agentguard.connect._refresh import (
    ACCESS_HINT,
    REFRESH_HINT,
    AccountStore,
    RefreshFlight,
    TokenVendor,
    connection_event,
    minimum_lease,
)
from agentguard.connect._rejection import ConnectionRejections
from agentguard.connect._rekey import ConnectionsResealed, reseal_connections
from agentguard.connect._sealing import ConnectionSealer, SealBroken
from agentguard.connect._tokens import VendorTokens
from agentguard.errors import BadGateway, CorruptRecord, Reason, UsageError
from agentguard.storage._outage import store_outage

if TYPE_CHECKING:  # agentguard.credentials imports the services, which import this package
    from agentguard.credentials._keyring import KeyRing

__all__ = ["ConnectedAccounts"]

logger = logging.getLogger("agentguard.connect")

_ROLE = "connection store"
_MAX_SCOPES_TEXT = 1024


class ConnectedAccounts:
    """Users' connected vendor accounts: connect, a fresh token per call, disconnect.

    Args:
        store: the connections and the refresh leases (every shipped store is both a
            :class:`~agentguard.storage.ConnectionStore` and a
            :class:`~agentguard.storage.ConnectFlowStore`).
        keyring: seals the vendor's tokens (the vault's key ring).
        vendors: each connected service's OAuth client
            (:class:`~agentguard.connect.VendorClient`), by service name.
        clock: every time decision comes from it.
        audit: records connect, refresh, broken and disconnect (never a token).
        connect_uri: the gateway's connect page for a service, named in
            ``connection_required`` refusals (``None``: not named).
        lease_seconds: how long one refresh may hold the store lease shared by instances;
            at least the slowest vendor client's ``timeout`` plus
            :data:`~agentguard.connect._refresh.LEASE_MARGIN` (5 s) to save its answer
            (:class:`~agentguard.errors.UsageError` otherwise).
        wait_seconds: how long a caller waits for a refresh another instance is making
            before it uses the current token (if still valid) or answers 502.
        instance: names this process in lease holders (random by default).
        revoke_replaced: on a reconnect, revoke the replaced connection's tokens at the
            vendor. Off by default: many vendors (Google among them) revoke the whole grant of
            a user and client when one of its tokens is revoked, which would kill the tokens
            the reconnect has just stored. Turn it on only for a vendor whose revocation is
            per token. (:meth:`disconnect` always revokes: ending the grant is its purpose.)
    """

    def __init__(
        self,
        store: AccountStore,
        keyring: KeyRing,
        vendors: Mapping[str, TokenVendor],
        *,
        clock: Clock | None = None,
        audit: AuditWriter | None = None,
        connect_uri: Callable[[str], str | None] | None = None,
        lease_seconds: float = 30.0,
        wait_seconds: float = 10.0,
        instance: str | None = None,
        revoke_replaced: bool = False,
    ) -> None:
        if lease_seconds <= 0 or wait_seconds < 0:
            raise UsageError("lease_seconds must be positive and wait_seconds not negative")
        needed = minimum_lease(vendors.values())
        if lease_seconds < needed:
            raise UsageError(
                f"lease_seconds must be at least {needed:g}: the vendor clients' timeout plus "
                "a margin to save a rotated refresh token before another instance may take "
                "the refresh over"
            )
        self.store = store
        self.revoke_replaced = revoke_replaced
        self.vendors = dict(vendors)
        self.clock: Clock = clock or SystemClock()
        self.audit = audit
        self.sealer = ConnectionSealer(keyring)
        self._connect_uri = connect_uri
        self._flight = RefreshFlight(
            store,
            self.sealer,
            self.clock,
            self._required,
            audit=audit,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            instance=instance or secrets.token_hex(4),
        )
        self._rejections = ConnectionRejections(store, self.sealer, self.clock)

    def __repr__(self) -> str:
        return f"ConnectedAccounts(services={sorted(self.vendors)})"

    def connect_uri(self, service: str) -> str | None:
        """The gateway's connect page for ``service``, if one is configured."""
        return None if self._connect_uri is None else self._connect_uri(service)

    def _required(self, service: str, reason: Reason) -> ConnectionRequired:
        return ConnectionRequired(service, connect_uri=self.connect_uri(service), reason=reason)

    def _vendor(self, service: str) -> TokenVendor:
        vendor = self.vendors.get(service)
        if vendor is None:
            raise BadGateway(
                service,
                f"{service}: acts with connected accounts, but no OAuth client is configured "
                "for it",
                reason=Reason.CREDENTIAL_UNAVAILABLE,
            )
        return vendor

    async def connect(self, service: str, user_id: str, tokens: VendorTokens) -> ConnectedAccount:
        """Store ``tokens`` as ``user_id``'s connection to ``service``, sealed; audited.

        A previous connection is replaced (even one that no longer opens or parses: that is
        how a broken connection is mended). Its tokens are revoked at the vendor only with
        ``revoke_replaced`` (best effort: a failure there is logged and audited, and never
        fails the connect).
        """
        now = self.clock.now()
        try:
            unsealed = ConnectedAccount(
                id=new_id("conn"),
                service=service,
                user_id=user_id,
                access_token=b"",
                expires_at=tokens.expires_at,
                scopes=tokens.scopes,
                key_id=self.sealer.keyring.primary,
                created_at=now,
                updated_at=now,
            )
        except ValidationError:
            raise UsageError(
                "a connection needs a service name and a user id (identifiers), and scopes "
                "that are RFC 6749 scope tokens"
            ) from None
        record = self.sealer.seal(unsealed, tokens.access_token, tokens.refresh_token)
        previous = await self._previous(service, user_id)
        with store_outage(_ROLE, "put_connection"):
            await self.store.put_connection(record)
        self._flight.backoff.forget((service, user_id))  # fresh tokens: renew when due
        self._rejections.forget((service, user_id))
        detail: dict[str, Scalar] = {"scopes": _scopes_text(record.scopes)}
        if previous is not None and previous.id != record.id:
            detail["replaced"] = previous.id
            if self.revoke_replaced:
                revoked = await self._revoke(previous, keep=tokens)
                detail.update({f"replaced_{name}": outcome for name, outcome in revoked.items()})
        if self.audit is not None:
            await self.audit.record(
                connection_event(Action.CONNECTION_CONNECT, record, now, detail=detail)
            )
        return record

    async def token_for(self, principal: Principal, service: str) -> Secret:
        """The vendor access token of ``principal``'s user for ``service``, fresh.

        Renewed first when it is within the vendor's ``refresh_ahead`` of expiry (one renewal
        per (service, user) across every instance). After a renewal the vendor could not make,
        the (service, user) is not renewed again until a back-off has passed (1 s doubling to
        60 s, at least the vendor's ``Retry-After``; kept in this process): meanwhile the
        current token is used while it lasts.

        Raises:
            ConnectionRequired: 403 ``connection_required``: the user has no connection
                (reason ``connection_required``) or it is broken (``connection_broken``: the
                vendor refused to renew it, or the row does not open, e.g. its key-encryption
                key was dropped; audited ``connection.broken``).
            BadGateway: 502: the token is expired and the vendor cannot renew it now
                (``vendor_unavailable``, with ``Retry-After`` while backing off), the row does
                not parse, or no OAuth client is configured (``credential_unavailable``).
        """
        return (await self.outgoing(principal, service))[0]

    async def outgoing(
        self, principal: Principal, service: str
    ) -> tuple[Secret, tuple[Secret, ...]]:
        """:meth:`token_for`'s access token, and every secret of the connection a vendor's
        response must not show the agent: the access token, the user's refresh token (the
        one renewed just now too) and the gateway's OAuth client secret (one for every user).

        Raises:
            ConnectionRequired, BadGateway: as :meth:`token_for`.
        """
        vendor = self._vendor(service)
        flight = self._flight
        user_id = principal.user_id
        try:
            record = flight.working(await flight.read(service, user_id), service)
            token = flight.fresh(record, vendor)
            seen = [record]
            if token is None:
                token = await flight.token(record, vendor)
                latest = await flight.read(service, user_id)  # a renewal rotates the refresh
                if latest is not None and latest.status is ConnectionStatus.ACTIVE:
                    seen.append(latest)
            involved: builtins.list[Secret | None] = [token]
            involved.extend(flight.open(each, "refresh") for each in seen)
        except SealBroken as broken:
            raise await self._unopenable(service, user_id, broken) from None
        client_secret = getattr(vendor, "client_secret", None)
        if isinstance(client_secret, Secret):
            involved.append(client_secret)
        return token, _distinct(involved)

    async def rejected(self, principal: Principal, service: str, token: Secret) -> bool:
        """The vendor answered 401 to ``token``, the access token of ``principal``'s user for
        ``service``: if the connection still holds it, it is renewed on the next call (also
        with no ``expires_in`` from the vendor); see :mod:`agentguard.connect._rejection`.
        Whether the next call sends another token. Never raises for the store."""
        return await self._rejections.rejected(service, principal.user_id, token)

    async def reseal(self, *, progress: Callable[[int], None] | None = None) -> ConnectionsResealed:
        """Re-encrypt every connection under the key ring's primary key (key rotation); run it
        with the old key still in the ring, before dropping it. Audited
        ``credential.rekey`` (with the count) when a row was written or did not open.

        One compare-and-set per row: a refresh or reconnect racing it wins, and the row is
        read again. A row that does not open is left as it is and named in the result.
        """
        report = await reseal_connections(self.store, self.sealer, progress=progress)
        if self.audit is not None and (report.rewritten or report.unopenable):
            detail: dict[str, Scalar] = {
                "connections": report.rewritten,
                "kek": self.sealer.keyring.primary,
            }
            if report.unopenable:
                detail["unopenable"] = len(report.unopenable)
            await self.audit.record(
                AuditEvent(
                    action=Action.CREDENTIAL_REKEY,
                    ts=self.clock.now(),
                    decision=Decision.ALLOW,
                    detail=detail,
                )
            )
        return report

    async def disconnect(self, service: str, user_id: str, *, by: str) -> bool:
        """Delete the connection and revoke its tokens at the vendor (best effort: the local
        delete stands whatever the vendor says); audited with ``by``. ``True`` if there was
        one."""
        with store_outage(_ROLE, "delete_connection"):
            removed = await self.store.delete_connection(service, user_id)
        if removed is None:
            return False
        revoked = await self._revoke(removed, keep=None)
        if self.audit is not None:
            await self.audit.record(
                connection_event(
                    Action.CONNECTION_DISCONNECT,
                    removed,
                    self.clock.now(),
                    detail={"by": by, **revoked},
                )
            )
        return True

    async def list(
        self, *, user_id: str | None = None, service: str | None = None
    ) -> builtins.list[ConnectedAccount]:
        """The stored connections (tokens sealed), ordered by (service, user)."""
        with store_outage(_ROLE, "list_connections"):
            return await self.store.list_connections(user_id=user_id, service=service)

    async def _previous(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The connection a connect replaces; ``None`` for one that does not parse (the new
        one overwrites it)."""
        try:
            with store_outage(_ROLE, "get_connection"):
                return await self.store.get_connection(service, user_id)
        except CorruptRecord:
            logger.error("%s: the connection of user %s does not parse; replaced", service, user_id)
            return None

    async def _unopenable(
        self, service: str, user_id: str, broken: SealBroken
    ) -> ConnectionRequired:
        """The refusal of a connection that does not open: logged and audited by id and
        cause, refused ``connection_broken`` with the connect link (a reconnect mends it)."""
        logger.error(
            "%s: connection %s of user %s does not open (%s); refused connection_broken "
            "until the user reconnects",
            service,
            broken.connection_id,
            user_id,
            broken.cause,
        )
        if self.audit is not None:
            await self.audit.record(
                AuditEvent(
                    action=Action.CONNECTION_BROKEN,
                    ts=self.clock.now(),
                    decision=Decision.DENY,
                    reason=Reason.CONNECTION_BROKEN.value,
                    user_id=user_id,
                    service=service,
                    detail={
                        "connection_id": broken.connection_id,
                        "error": "unopenable",
                        "cause": broken.cause,
                    },
                )
            )
        return ConnectionRequired(
            service,
            "the user's connected account for this service no longer works; a human must "
            "connect it again (see connect_uri)",
            connect_uri=self.connect_uri(service),
            reason=Reason.CONNECTION_BROKEN,
        )

    async def _revoke(
        self, record: ConnectedAccount, *, keep: VendorTokens | None
    ) -> dict[str, str]:
        """Revoke ``record``'s refresh token, then its access token, at the vendor; what
        happened to each, for the audit. A token also in ``keep`` (a vendor that handed the
        same token out again) is left alone."""
        if record.status is ConnectionStatus.BROKEN:
            return {}
        vendor = self.vendors.get(record.service)
        if vendor is None:
            return {"revoke": "no_oauth_client"}
        try:
            found = {
                REFRESH_HINT: self.sealer.open(record, "refresh"),
                ACCESS_HINT: self.sealer.open(record, "access"),
            }
        except SealBroken as broken:
            logger.error("%s: %s; not revoked at the vendor", record.service, broken)
            return {"revoke": "unopenable"}
        kept = () if keep is None else (keep.access_token, keep.refresh_token)
        outcomes: dict[str, str] = {}
        for hint, token in found.items():
            name = f"revoke_{hint.split('_')[0]}"
            if token is None or not token.reveal() or token in kept:
                continue
            outcomes[name] = await _revoke_one(vendor, record, token, hint)
            if outcomes[name] == "unsupported":
                break
        return outcomes


async def _revoke_one(
    vendor: TokenVendor, record: ConnectedAccount, token: Secret, hint: str
) -> str:
    try:
        revoked = await vendor.revoke(token, token_type_hint=hint)
    except VendorRefused as refused:
        logger.warning(
            "%s: the vendor refused to revoke connection %s's %s (%s)",
            record.service,
            record.id,
            hint,
            type(refused).__name__,
        )
        return "refused"
    except VendorUnavailable as down:
        logger.warning(
            "%s: revoking connection %s's %s failed: %s",
            record.service,
            record.id,
            hint,
            type(down).__name__,
        )
        return "unavailable"
    return "revoked" if revoked else "unsupported"


def _distinct(secrets: builtins.list[Secret | None]) -> tuple[Secret, ...]:
    """``secrets`` without ``None``, empty values or repeats, in order."""
    kept: builtins.list[Secret] = []
    for secret in secrets:
        if secret is not None and secret.reveal() and secret not in kept:
            kept.append(secret)
    return tuple(kept)


def _scopes_text(scopes: tuple[str, ...]) -> str:
    text = " ".join(scopes)
    return text if len(text) <= _MAX_SCOPES_TEXT else text[:_MAX_SCOPES_TEXT] + "..."
