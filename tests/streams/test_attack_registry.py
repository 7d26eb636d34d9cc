"""Attacking the live-stream registry: a store that hangs, expiry at the boundary, races
between a decision and its stream, floods of events and leases.

A hanging store is not a failing one: a look-up that never returns must count as an outage
(cut after ``outage_grace``), and must not stop the registry from cutting streams whose key
expires or is revoked meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from typing import Any

import anyio
import pytest

from agentguard import Guard
from agentguard.config import StreamSettings
from agentguard.errors import Reason, StoreUnavailable
from agentguard.storage import MemoryStore
from agentguard.storage._protocols import KeyLookup
from agentguard.testing import FakeClock, make_user
from tests.streams.support import DEADLINE, Setup, cut_within, memory_setup, still_live

pytestmark = pytest.mark.anyio


class HangingStore(MemoryStore):
    """Look-ups hang (never return, never fail) while ``hanging`` is set."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.hanging = False
        self.lookups = 0

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        self.lookups += 1
        if self.hanging:
            await anyio.sleep_forever()
        return await super().lookup(key_hash)


async def hanging_setup(**settings: Any) -> Setup:
    clock = FakeClock()
    store = HangingStore(clock)
    options = {"events": "off", "linger": 0.0, **settings}
    guard = Guard(store, clock=clock, streams=StreamSettings(**options))
    user = await make_user(store, grants="crm:write")
    keys = await guard.issuer.issue(user.id, "ws-1")
    return Setup(clock, store, guard, user, keys)


async def test_a_hanging_store_does_not_keep_a_stream_past_its_keys_expiry() -> None:
    setup = await hanging_setup(recheck_interval=0.5, outage_grace=3600.0)
    principal = await setup.guard.resolve(setup.key)
    assert principal.expires_at is not None
    streams = setup.guard.streams
    async with streams.hold(principal, key=setup.key) as lease:
        setup.store.hanging = True
        setup.store.lookups = 0
        streams.changed()  # a round starts and its look-up hangs
        with anyio.fail_after(DEADLINE):
            while setup.store.lookups == 0:  # noqa: ASYNC110 - registry state, no event
                await anyio.sleep(0.01)
        setup.clock.advance(principal.expires_at - setup.clock.now())
        streams.wake()
        error = await cut_within(lease)
    assert error.reason is Reason.EXPIRED


async def test_a_hanging_store_is_an_outage_and_cuts_after_the_grace() -> None:
    setup = await hanging_setup(recheck_interval=0.5, outage_grace=0.0)
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        setup.store.hanging = True
        setup.guard.streams.changed()
        error = await cut_within(lease)
    assert isinstance(error, StoreUnavailable)
    (event,) = await setup.cut_events()
    assert event["detail"]["trigger"] == "outage"  # type: ignore[index]


async def test_one_hanging_lookup_does_not_hold_the_round_for_every_other_key() -> None:
    """Many distinct keys and a store that hangs: the round ends within its bound, not one
    bound per look-up, and an event for another stream is acted on at once afterwards."""
    setup = await hanging_setup(recheck_interval=0.5, outage_grace=3600.0, max_concurrency=2)
    streams = setup.guard.streams
    async with contextlib.AsyncExitStack() as stack:
        leases = []
        for _ in range(20):
            keys = await setup.guard.issuer.issue(setup.user.id, "ws-1")
            key = keys.access_key.reveal()
            principal = await setup.guard.resolve(key)
            leases.append(await stack.enter_async_context(streams.hold(principal, key=key)))
        setup.store.hanging = True
        started = time.monotonic()
        with anyio.fail_after(DEADLINE):
            await streams.recheck()
        assert time.monotonic() - started < DEADLINE
        assert not any(lease.is_cut for lease in leases)  # an outage within its grace


async def test_a_key_expiring_exactly_now_is_cut_at_hold() -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)
    assert principal.expires_at is not None
    setup.clock.advance(principal.expires_at - setup.clock.now())
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        assert (await cut_within(lease)).reason is Reason.EXPIRED


async def test_a_key_one_microsecond_before_expiry_lives_then_is_cut() -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)
    assert principal.expires_at is not None
    setup.clock.advance(principal.expires_at - setup.clock.now() - timedelta(microseconds=1))
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        await still_live(lease, 0.1)
        setup.clock.advance(timedelta(microseconds=1))
        setup.guard.streams.wake()
        assert (await cut_within(lease)).reason is Reason.EXPIRED


# A stream that starts long after its request was decided (a slow first byte)


async def test_a_revocation_during_a_slow_first_byte_cuts_the_stream_at_once() -> None:
    """The key is revoked (and the event seen) while the upstream thinks for 30 s before its
    first byte; the stream that then starts must be cut at once, not an interval later."""
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)  # the request is decided
    await setup.guard.issuer.revoke(key_id=principal.key_id)
    setup.guard.streams.changed(key_id=principal.key_id)  # seen by the feed: no lease yet
    setup.clock.advance(30)  # a reasoning model's time to the first token
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        assert (await cut_within(lease)).reason is Reason.REVOKED


async def test_a_flood_of_other_events_does_not_hide_the_one_naming_the_stream() -> None:
    """More events than the registry remembers arrive between the decision and the stream:
    the one naming this key may have been dropped, so the stream is checked soon, not an
    interval later."""
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)
    await setup.guard.issuer.revoke(key_id=principal.key_id)
    setup.guard.streams.changed(key_id=principal.key_id)
    for index in range(5000):
        setup.guard.streams.changed(user_id=f"someone-{index}")
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        setup.clock.advance(1)
        setup.guard.streams.wake()
        assert (await cut_within(lease)).reason is Reason.REVOKED
