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
old one, which a rotating vendor treats as theft). The vendor call alone has a deadline: it must
answer :data:`LEASE_MARGIN` seconds before the lease runs out (the vendor client's own timeout
fits in a lease, which :func:`minimum_lease` checks). Once the vendor has answered, its tokens
are written whatever the time: a deadline there would drop a refresh token the vendor has
already rotated.

Reading the connection, renewing it at the vendor and what becomes of a failed renewal (a
broken connection, a back-off, the current token while it lasts) are
:mod:`agentguard.connect._renewal`'s.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import timedelta

import anyio

from agentguard._clock import Clock
from agentguard._model import ConnectedAccount
from agentguard._secret import Secret
from agentguard.audit._writer import AuditWriter
from agentguard.connect._errors import ConnectionRequired
from agentguard.connect._locks import KeyedLocks
from agentguard.connect._refresh_policy import (
    ACCESS_HINT,
    REFRESH_HINT,
    STORE_ROLE,
    AccountStore,
    TokenVendor,
    connection_event,
    expired,
    refresh_due,
)
from agentguard.connect._renewal import TokenRenewal
from agentguard.connect._sealing import ConnectionSealer
from agentguard.errors import Reason, StoreUnavailable
from agentguard.storage._outage import store_outage

__all__ = [
    "ACCESS_HINT",
    "LEASE_MARGIN",
    "REFRESH_HINT",
    "AccountStore",
    "RefreshFlight",
    "TokenVendor",
    "connection_event",
    "expired",
    "lease_name",
    "minimum_lease",
    "refresh_due",
]

logger = logging.getLogger("agentguard.connect")

_FIRST_POLL = 0.02
_LAST_POLL = 0.25
LEASE_MARGIN = 5.0
"""Seconds of a refresh lease kept for writing the vendor's answer: the vendor call must end
this long before the lease runs out, so that no other instance takes over the lease (and
presents the refresh token the vendor has just rotated) while the answer is being saved."""


def minimum_lease(vendors: Iterable[object]) -> float:
    """The shortest refresh lease that fits the slowest vendor's timeout (a ``timeout``
    attribute in seconds, as :class:`~agentguard.connect.VendorClient` has; none counts as 0)
    and :data:`LEASE_MARGIN` to save its answer."""
    slowest = 0.0
    for vendor in vendors:
        timeout = getattr(vendor, "timeout", None)
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            slowest = max(slowest, float(timeout))
    return slowest + LEASE_MARGIN


def lease_name(service: str, user_id: str) -> str:
    """The store lease of one (service, user)'s refresh (service names hold no ``:``)."""
    return f"connect-refresh:{service}:{user_id}"


class RefreshFlight(TokenRenewal):
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
        super().__init__(store, sealer, clock, refusal, audit=audit)
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.instance = instance
        self._locks = KeyedLocks()

    async def token(self, record: ConnectedAccount, vendor: TokenVendor) -> Secret:
        """A working access token for ``record``'s (service, user), renewed if due."""
        service, user_id = record.service, record.user_id
        async with self._locks.hold((service, user_id)):
            current = self.working(await self.read(service, user_id), service)
            fresh = self.fresh(current, vendor)
            if fresh is not None:
                return fresh
            waiting = self.backoff.waiting((service, user_id))
            if waiting is not None:  # the vendor failed lately: not asked again yet
                return self._fallback(current, retry_after=waiting)
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
            answer_by = anyio.current_time() + self.lease_seconds - LEASE_MARGIN
            with store_outage(STORE_ROLE, "acquire_lease"):
                held = await self.store.acquire_lease(name, holder=holder, now=now, until=until)
            if held:
                try:
                    return await self._as_holder(service, user_id, vendor, answer_by)
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

    async def _as_holder(
        self, service: str, user_id: str, vendor: TokenVendor, answer_by: float
    ) -> Secret:
        current = self.working(await self.read(service, user_id), service)
        fresh = self.fresh(current, vendor)
        if fresh is not None:
            return fresh
        refresh = self.open(current, "refresh")
        with anyio.CancelScope(shield=True):  # no deadline: see the module's docstring
            if refresh is None:  # due only once expired: nothing can renew it
                token = await self._break(current, vendor, "no_refresh_token")
            else:
                token = await self._renew(current, refresh, vendor, answer_by)
        return token

    async def _release(self, name: str, holder: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                with store_outage(STORE_ROLE, "release_lease"):
                    await self.store.release_lease(name, holder=holder)
            except StoreUnavailable:  # logged by store_outage; the lease runs out by itself
                logger.warning("lease %s was not released; it runs out by itself", name)


def _same(latest: ConnectedAccount | None, seen: ConnectedAccount) -> bool:
    return latest is not None and (latest.id, latest.version) == (seen.id, seen.version)
