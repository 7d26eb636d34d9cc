"""Renewing a connected account's vendor token ahead of expiry, once, across every instance.

One flight per (service, user), never per service alone (Pomerium PR #6165 mixed users' tokens
that way): in this process an :class:`anyio.Lock` per (service, user); across instances a lease
in the store (``connect-refresh:<service>:<user>``). Whoever holds both re-reads the connection
(another instance may have renewed it meanwhile), calls the vendor, and writes the renewed
tokens by compare-and-set on the row's ``version``, so a rotated refresh token is never lost
to a concurrent writer. The others poll the row until its version moves, then use it; if the
lease's holder vanished, the lease runs out and one of them takes it over.

The vendor call and its write are shielded from cancellation: an agent that hangs up mid-call
must not leave the vendor's rotated refresh token unsaved (the next refresh would present the
old one, which a rotating vendor treats as theft).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Protocol

import anyio

from agentguard._clock import Clock
from agentguard._model import ConnectedAccount, ConnectionStatus
from agentguard._secret import Secret
from agentguard.audit._events import Action, AuditEvent, Decision, Scalar
from agentguard.audit._writer import AuditWriter
from agentguard.connect._errors import ConnectionRequired, VendorRefused, VendorUnavailable
from agentguard.connect._sealing import ConnectionSealer, SealBroken, Slot
from agentguard.connect._settings import OAuthClientConfig
from agentguard.connect._tokens import VendorTokens
from agentguard.errors import BadGateway, CorruptRecord, Reason, StoreUnavailable
from agentguard.storage._connection_protocols import ConnectFlowStore, ConnectionStore
from agentguard.storage._outage import store_outage

__all__ = [
    "ACCESS_HINT",
    "REFRESH_HINT",
    "AccountStore",
    "RefreshFlight",
    "TokenVendor",
    "connection_event",
    "expired",
    "lease_name",
    "refresh_due",
]

logger = logging.getLogger("agentguard.connect")

_FIRST_POLL = 0.02
_LAST_POLL = 0.25
_ROLE = "connection store"
REFRESH_HINT = "refresh_token"  # RFC 7009 token_type_hint values
ACCESS_HINT = "access_token"


class TokenVendor(Protocol):
    """What the accounts need of a vendor: :class:`~agentguard.connect.VendorClient` fits."""

    @property
    def config(self) -> OAuthClientConfig: ...

    async def refresh(self, refresh_token: Secret) -> VendorTokens: ...

    async def revoke(self, token: Secret, *, token_type_hint: str = ...) -> bool: ...


class AccountStore(ConnectionStore, ConnectFlowStore, Protocol):
    """A store of connections that also holds the refresh leases."""


def lease_name(service: str, user_id: str) -> str:
    """The store lease of one (service, user)'s refresh (service names hold no ``:``)."""
    return f"connect-refresh:{service}:{user_id}"


def expired(record: ConnectedAccount, now: datetime) -> bool:
    """Whether the vendor's access token can no longer be used."""
    return record.expires_at is not None and now >= record.expires_at


def refresh_due(record: ConnectedAccount, now: datetime, ahead: float) -> bool:
    """Whether to renew now: within ``ahead`` seconds of expiry, but never earlier than half
    the token's life (a vendor issuing tokens shorter than ``ahead`` must not be asked on
    every call). Without a refresh token, only once expired (nothing can renew it)."""
    if record.expires_at is None:
        return False
    if record.refresh_token is None:
        return now >= record.expires_at
    lifetime = max(record.expires_at - record.updated_at, timedelta(0))
    window = min(timedelta(seconds=ahead), lifetime / 2)
    return now >= record.expires_at - window


def connection_event(
    action: Action,
    record: ConnectedAccount,
    now: datetime,
    *,
    decision: Decision = Decision.ALLOW,
    reason: Reason | None = None,
    detail: Mapping[str, Scalar] | None = None,
) -> AuditEvent:
    """The audit event of ``action`` on ``record``: ids and outcomes, never a token."""
    return AuditEvent(
        action=action,
        ts=now,
        decision=decision,
        reason=None if reason is None else reason.value,
        user_id=record.user_id,
        service=record.service,
        detail={"connection_id": record.id, **(detail or {})},
    )


class _KeyedLocks:
    """One lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[anyio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._entries.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._entries[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._entries[key]
            if users == 1:
                del self._entries[key]
            else:
                self._entries[key] = (lock, users - 1)


class RefreshFlight:
    """Reads a connection, opens its tokens and renews them under the shared single flight.

    Args:
        store: the connections and the leases.
        sealer: opens and seals the tokens.
        clock: every time decision (expiry, leases, records) comes from it; only the wait for
            another instance's refresh is measured on the event loop's clock (it is time
            actually slept).
        refusal: builds the ``connection_required`` refusal for a service and reason.
        audit: records renewals and broken connections.
        lease_seconds: how long a refresh holds the store lease (and at most runs).
        wait_seconds: how long a caller waits for another instance's refresh.
        instance: names this process in lease holders.
    """

    def __init__(
        self,
        store: AccountStore,
        sealer: ConnectionSealer,
        clock: Clock,
        refusal: Callable[[str, Reason], ConnectionRequired],
        *,
        audit: AuditWriter | None,
        lease_seconds: float,
        wait_seconds: float,
        instance: str,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.clock = clock
        self.refusal = refusal
        self.audit = audit
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.instance = instance
        self._locks = _KeyedLocks()

    async def read(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The stored connection of (service, user); a misfiled or unreadable row is 502."""
        try:
            with store_outage(_ROLE, "get_connection"):
                record = await self.store.get_connection(service, user_id)
        except CorruptRecord:
            logger.error("%s: the connection of user %s does not parse", service, user_id)
            raise BadGateway(service, reason=Reason.CREDENTIAL_UNAVAILABLE) from None
        if record is not None and (record.service, record.user_id) != (service, user_id):
            logger.error("%s: connection %s was returned for another user", service, record.id)
            raise BadGateway(service, reason=Reason.CREDENTIAL_UNAVAILABLE)
        return record

    def open(self, record: ConnectedAccount, slot: Slot) -> Secret | None:
        """The token in ``slot``; a row that does not open is 502, logged by id only."""
        try:
            return self.sealer.open(record, slot)
        except SealBroken as broken:
            logger.error("%s: %s", record.service, broken)
            raise BadGateway(record.service, reason=Reason.CREDENTIAL_UNAVAILABLE) from None

    def access(self, record: ConnectedAccount) -> Secret:
        token = self.open(record, "access")
        if token is None or not token.reveal():
            raise BadGateway(record.service, reason=Reason.CREDENTIAL_UNAVAILABLE)
        return token

    def working(self, record: ConnectedAccount | None, service: str) -> ConnectedAccount:
        """``record`` if it is a working connection; else the ``connection_required``
        refusal (none, or broken)."""
        if record is None:
            raise self.refusal(service, Reason.CONNECTION_REQUIRED)
        if record.status is ConnectionStatus.BROKEN:
            raise self.refusal(service, Reason.CONNECTION_BROKEN)
        return record

    def fresh(self, record: ConnectedAccount, vendor: TokenVendor) -> Secret | None:
        """The access token if ``record`` needs no renewal now; ``None`` if it is due."""
        if refresh_due(record, self.clock.now(), vendor.config.refresh_ahead):
            return None
        return self.access(record)

    async def token(self, record: ConnectedAccount, vendor: TokenVendor) -> Secret:
        """A working access token for ``record``'s (service, user), renewed if due."""
        service, user_id = record.service, record.user_id
        async with self._locks.hold((service, user_id)):
            current = self.working(await self.read(service, user_id), service)
            fresh = self.fresh(current, vendor)
            if fresh is not None:
                return fresh
            return await self._across_instances(current, vendor)

    async def _across_instances(self, seen: ConnectedAccount, vendor: TokenVendor) -> Secret:
        service, user_id = seen.service, seen.user_id
        name = lease_name(service, user_id)
        holder = f"{self.instance}/{secrets.token_hex(6)}"
        deadline = anyio.current_time() + self.wait_seconds
        delay = _FIRST_POLL
        while True:
            now = self.clock.now()
            until = now + timedelta(seconds=self.lease_seconds)
            with store_outage(_ROLE, "acquire_lease"):
                held = await self.store.acquire_lease(name, holder=holder, now=now, until=until)
            if held:
                try:
                    return await self._as_holder(service, user_id, vendor)
                finally:
                    await self._release(name, holder)
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                logger.warning(
                    "%s: waited %gs for another instance to renew connection %s",
                    service,
                    self.wait_seconds,
                    seen.id,
                )
                return self._fallback(seen)
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, _LAST_POLL)
            found = await self.read(service, user_id)
            if _same(found, seen):
                continue
            latest = self.working(found, service)
            fresh = self.fresh(latest, vendor)
            if fresh is not None:
                return fresh
            if not expired(latest, self.clock.now()):
                return self.access(latest)
            seen = latest

    async def _as_holder(self, service: str, user_id: str, vendor: TokenVendor) -> Secret:
        current = self.working(await self.read(service, user_id), service)
        fresh = self.fresh(current, vendor)
        if fresh is not None:
            return fresh
        refresh = self.open(current, "refresh")
        outcome: Secret | None = None
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + self.lease_seconds
            if refresh is None:  # due only once expired: nothing can renew it
                outcome = await self._break(current, vendor, "no_refresh_token")
            else:
                outcome = await self._renew(current, refresh, vendor)
        if outcome is None:  # the lease ran out before the vendor answered
            logger.warning("%s: renewing connection %s took too long", service, current.id)
            return self._fallback(current)
        return outcome

    async def _renew(
        self, current: ConnectedAccount, refresh: Secret, vendor: TokenVendor
    ) -> Secret:
        service = current.service
        try:
            tokens = await vendor.refresh(refresh)
        except VendorRefused as refused:
            if refused.permanent:
                return await self._break(current, vendor, refused.error)
            logger.warning(
                "%s: the vendor refused to renew connection %s (%s)",
                service,
                current.id,
                refused.error,
            )
            return self._fallback(current)
        except VendorUnavailable as down:
            logger.warning("%s: renewing connection %s failed: %s", service, current.id, down)
            return self._fallback(current)
        now = self.clock.now()
        renewed = current.model_copy(
            update={
                "version": current.version + 1,
                "expires_at": tokens.expires_at,
                "scopes": tokens.scopes or current.scopes,
                "updated_at": now,
            }
        )
        # RFC 6749 §6: a response without a refresh token leaves the previous one in force.
        renewed = self.sealer.seal(renewed, tokens.access_token, tokens.refresh_token or refresh)
        with store_outage(_ROLE, "update_connection"):
            stored = await self.store.update_connection(renewed, version=current.version)
        if not stored:
            return await self._lost(current, vendor, tokens)
        if self.audit is not None:
            lifetime = None
            if tokens.expires_at is not None:
                lifetime = int((tokens.expires_at - now).total_seconds())
            await self.audit.record(
                connection_event(
                    Action.CONNECTION_REFRESH,
                    renewed,
                    now,
                    detail={
                        "version": renewed.version,
                        "rotated": tokens.refresh_token is not None,
                        "expires_in": lifetime,
                    },
                )
            )
        return tokens.access_token

    async def _break(self, current: ConnectedAccount, vendor: TokenVendor, why: str) -> Secret:
        now = self.clock.now()
        broken = current.model_copy(
            update={
                "status": ConnectionStatus.BROKEN,
                "access_token": b"",
                "refresh_token": None,
                "version": current.version + 1,
                "updated_at": now,
            }
        )
        with store_outage(_ROLE, "update_connection"):
            stored = await self.store.update_connection(broken, version=current.version)
        if not stored:  # someone renewed, reconnected or disconnected it meanwhile
            return await self._lost(current, vendor, None)
        logger.warning("%s: connection %s is broken (%s)", current.service, current.id, why)
        if self.audit is not None:
            await self.audit.record(
                connection_event(
                    Action.CONNECTION_BROKEN,
                    broken,
                    now,
                    decision=Decision.DENY,
                    reason=Reason.CONNECTION_BROKEN,
                    detail={"error": _code(why)},
                )
            )
        raise self.refusal(current.service, Reason.CONNECTION_BROKEN)

    async def _lost(
        self, current: ConnectedAccount, vendor: TokenVendor, tokens: VendorTokens | None
    ) -> Secret:
        """Our write lost the compare-and-set: answer from the row as it is now."""
        found = await self.read(current.service, current.user_id)
        if found is None and tokens is not None and tokens.refresh_token is not None:
            await self._forget(current, vendor, tokens.refresh_token)  # disconnected meanwhile
        latest = self.working(found, current.service)
        fresh = self.fresh(latest, vendor)
        if fresh is not None:
            return fresh
        return self._fallback(latest)

    async def _forget(self, current: ConnectedAccount, vendor: TokenVendor, token: Secret) -> None:
        try:
            await vendor.revoke(token, token_type_hint=REFRESH_HINT)
        except (VendorRefused, VendorUnavailable) as error:
            logger.warning(
                "%s: revoking the tokens renewed for disconnected connection %s failed: %s",
                current.service,
                current.id,
                type(error).__name__,
            )

    def _fallback(self, record: ConnectedAccount) -> Secret:
        """The renewal failed for now: the current token while it lasts, else 502."""
        if record.status is ConnectionStatus.ACTIVE and not expired(record, self.clock.now()):
            return self.access(record)
        raise BadGateway(record.service, reason=Reason.VENDOR_UNAVAILABLE)

    async def _release(self, name: str, holder: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                with store_outage(_ROLE, "release_lease"):
                    await self.store.release_lease(name, holder=holder)
            except StoreUnavailable:  # logged by store_outage; the lease runs out by itself
                logger.warning("lease %s was not released; it runs out by itself", name)


def _same(latest: ConnectedAccount | None, seen: ConnectedAccount) -> bool:
    return latest is not None and (latest.id, latest.version) == (seen.id, seen.version)


def _code(error: str) -> str:
    """An RFC 6749 error code fit for the audit log (a vendor could send anything)."""
    if 0 < len(error) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-.") for c in error):
        return error
    return "invalid_response"
