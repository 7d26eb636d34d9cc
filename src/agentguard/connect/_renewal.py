"""Renewing one connected account's vendor token, and what becomes of a renewal that fails.

:class:`TokenRenewal` reads a (service, user)'s connection, opens its tokens, and renews them
at the vendor once the caller holds that (service, user)'s single flight
(:mod:`agentguard.connect._refresh`). The renewed tokens are written by compare-and-set on the
row's ``version``, so a rotated refresh token is never lost to a concurrent writer. A write that
loses to a writer that did not renew the row (a key rotation re-sealing it, a 401 marking it
due) is made again on top of the row as it is now; one that loses to another renewal, a
reconnect or a disconnect answers from the row as it is now.

An ``invalid_grant`` marks the connection broken: the agent is refused ``connection_broken``
until the user reconnects. A renewal the vendor could not make (unavailable, a refusal other
than ``invalid_grant``, no answer in time) is not tried again for that (service, user) until a
back-off has passed (:mod:`agentguard.connect._backoff`); meanwhile the current token is used
while it lasts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from agentguard._clock import Clock
from agentguard._model import ConnectedAccount, ConnectionStatus
from agentguard._secret import Secret
from agentguard.audit._events import Action, Decision
from agentguard.audit._writer import AuditWriter
from agentguard.connect._backoff import RefreshBackoff, VendorBackoff
from agentguard.connect._errors import ConnectionRequired, VendorRefused, VendorUnavailable
from agentguard.connect._refresh_policy import (
    REFRESH_HINT,
    STORE_ROLE,
    AccountStore,
    TokenVendor,
    connection_event,
    expired,
    refresh_due,
)
from agentguard.connect._sealing import ConnectionSealer, SealBroken, Slot
from agentguard.connect._tokens import VendorTokens
from agentguard.errors import BadGateway, CorruptRecord, Reason
from agentguard.storage._outage import store_outage

__all__ = ["TokenRenewal"]

logger = logging.getLogger("agentguard.connect")

_ATTEMPTS = 5


class TokenRenewal:
    """Reads a connection, opens its tokens and renews them at the vendor.

    The caller holds the (service, user)'s single flight while it renews:
    :class:`~agentguard.connect._refresh.RefreshFlight` adds that flight.

    Args:
        store: the connections (and the leases).
        sealer: opens and seals the tokens.
        clock: every time decision (expiry, back-off, records) comes from it.
        refusal: builds the ``connection_required`` refusal for a service and reason.
        audit: records renewals and broken connections.
    """

    def __init__(
        self,
        store: AccountStore,
        sealer: ConnectionSealer,
        clock: Clock,
        refusal: Callable[[str, Reason], ConnectionRequired],
        *,
        audit: AuditWriter | None,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.clock = clock
        self.refusal = refusal
        self.audit = audit
        self.backoff = RefreshBackoff(clock)

    async def read(self, service: str, user_id: str) -> ConnectedAccount | None:
        """The stored connection of (service, user); a misfiled or unreadable row is 502."""
        try:
            with store_outage(STORE_ROLE, "get_connection"):
                record = await self.store.get_connection(service, user_id)
        except CorruptRecord:
            logger.error("%s: the connection of user %s does not parse", service, user_id)
            raise BadGateway(service, reason=Reason.CREDENTIAL_UNAVAILABLE) from None
        if record is not None and (record.service, record.user_id) != (service, user_id):
            logger.error("%s: connection %s was returned for another user", service, record.id)
            raise BadGateway(service, reason=Reason.CREDENTIAL_UNAVAILABLE)
        return record

    def open(self, record: ConnectedAccount, slot: Slot) -> Secret | None:
        """The token in ``slot``; :class:`SealBroken` when the row does not open (the
        accounts answer it ``connection_broken``: only a reconnect can mend it)."""
        return self.sealer.open(record, slot)

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

    async def _renew(
        self, current: ConnectedAccount, refresh: Secret, vendor: TokenVendor, answer_by: float
    ) -> Secret:
        service = current.service
        tokens: VendorTokens | None = None
        try:
            with anyio.CancelScope(deadline=answer_by):  # the vendor call only, not the write
                tokens = await vendor.refresh(refresh)
        except VendorRefused as refused:
            if refused.permanent:
                return await self._break(current, vendor, refused.error)
            return self._failed(current, f"the vendor refused ({_code(refused.error)})")
        except VendorUnavailable as down:
            return self._failed(current, str(down), _retry_after(down))
        if tokens is None:  # no answer before the lease's margin: another may take over
            return self._failed(current, "the vendor took too long")
        self.backoff.forget((service, current.user_id))
        now = self.clock.now()

        def renewal(base: ConnectedAccount) -> ConnectedAccount:
            update = {
                "version": base.version + 1,
                "expires_at": tokens.expires_at,
                "scopes": _granted(tokens, base),
                "updated_at": now,
            }
            # RFC 6749 §6: a response without a refresh token leaves the previous one in force.
            renewed = base.model_copy(update=update)
            return self.sealer.seal(renewed, tokens.access_token, tokens.refresh_token or refresh)

        renewed = await self._write(current, refresh, renewal)
        if renewed is None:
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

        def breaking(base: ConnectedAccount) -> ConnectedAccount:
            update = {
                "status": ConnectionStatus.BROKEN,
                "access_token": b"",
                "refresh_token": None,
                "version": base.version + 1,
                "updated_at": now,
            }
            return base.model_copy(update=update)

        broken = await self._write(current, self.open(current, "refresh"), breaking)
        if broken is None:  # someone renewed, reconnected or disconnected it meanwhile
            return await self._lost(current, vendor, None)
        self.backoff.forget((current.service, current.user_id))
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

    async def _write(
        self,
        current: ConnectedAccount,
        presented: Secret | None,
        change: Callable[[ConnectedAccount], ConnectedAccount],
    ) -> ConnectedAccount | None:
        """Write ``change(row)`` by compare-and-set, from ``current`` (the row the renewal
        read); the row written, or ``None`` when another renewal replaced it meanwhile.

        A lost compare-and-set is not always a lost race: a key rotation re-sealing the row,
        or a 401 marking it due (:mod:`agentguard.connect._rejection`), moves its version
        without renewing it. While the row is the same connection, still working and still
        holding the refresh token this renewal presented (compared in constant time), the
        change is made on top of the row as it is now: dropping a renewal the vendor has made
        would leave the row with the refresh token the vendor has just retired, which a
        rotating vendor reads as theft at the next renewal (RFC 9700 §4.14.2) and kills the
        grant. Only a renewal, reconnect or disconnect in between wins over ours.
        """
        base: ConnectedAccount | None = current
        for _ in range(_ATTEMPTS):
            if base is None:
                return None
            changed = change(base)
            with store_outage(STORE_ROLE, "update_connection"):
                if await self.store.update_connection(changed, version=base.version):
                    return changed
            base = await self.read(current.service, current.user_id)
            if not _unrenewed(self.sealer, base, current, presented):
                return None
        logger.warning("%s: connection %s kept changing; not saved", current.service, current.id)
        return None

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

    def _failed(
        self, record: ConnectedAccount, why: str, retry_after: float | None = None
    ) -> Secret:
        """A renewal the vendor could not make: back off, then :meth:`_fallback`."""
        seconds = self.backoff.failed((record.service, record.user_id), retry_after)
        logger.warning(
            "%s: renewing connection %s failed (%s); not tried again for %gs",
            record.service,
            record.id,
            why,
            seconds,
        )
        return self._fallback(record, retry_after=seconds)

    def _fallback(self, record: ConnectedAccount, *, retry_after: float | None = None) -> Secret:
        """The renewal failed for now: the current token while it lasts, else 502 (with
        ``Retry-After`` when the (service, user) is backing off)."""
        if record.status is ConnectionStatus.ACTIVE and not expired(record, self.clock.now()):
            return self.access(record)
        if retry_after is not None:
            raise VendorBackoff(record.service, retry_after)
        raise BadGateway(record.service, reason=Reason.VENDOR_UNAVAILABLE)


def _unrenewed(
    sealer: ConnectionSealer,
    found: ConnectedAccount | None,
    current: ConnectedAccount,
    presented: Secret | None,
) -> bool:
    """Whether ``found`` is ``current``'s connection, still working and holding the refresh
    token ``presented`` (both none counts): changed since, but not renewed."""
    if found is None or found.id != current.id or found.status is not ConnectionStatus.ACTIVE:
        return False
    try:
        held = sealer.open(found, "refresh")
    except SealBroken:
        return False
    if held is None or presented is None:
        return held is None and presented is None
    return held == presented  # Secret compares in constant time


def _granted(tokens: VendorTokens, current: ConnectedAccount) -> tuple[str, ...]:
    """The scopes after a refresh: the vendor's ``scope`` if it sent one, else the scopes
    granted before (RFC 6749 §5.1: omitted means unchanged; the configured scopes may be
    more than the user granted)."""
    if getattr(tokens, "scope_given", True) and tokens.scopes:
        return tokens.scopes
    return current.scopes


def _retry_after(down: VendorUnavailable) -> float | None:
    """The vendor's ``Retry-After`` in seconds, when the client read one."""
    seconds = getattr(down, "retry_after", None)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return float(seconds)
    return None


def _code(error: str) -> str:
    """An RFC 6749 error code fit for the audit log (a vendor could send anything)."""
    if 0 < len(error) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-.") for c in error):
        return error
    return "invalid_response"
