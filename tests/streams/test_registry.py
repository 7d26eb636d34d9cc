"""The live-stream registry over the in-memory store, with a fake clock: when leases are cut,
how often the store is asked, what an outage does, and that nothing outlives its streams."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from agentguard import Guard
from agentguard._live_streams import LiveStreams
from agentguard._model import AccountStatus, Level
from agentguard._permissions import Requirement
from agentguard.config import StreamSettings
from agentguard.errors import InsufficientScope, InvalidToken, Reason, StoreUnavailable
from agentguard.storage import MemoryStore, StorageError
from agentguard.storage._protocols import KeyLookup
from agentguard.testing import FakeClock, make_user
from tests.streams.support import (
    Setup,
    admitted,
    cut_within,
    eventually,
    memory_setup,
    still_live,
)

pytestmark = pytest.mark.anyio


class CountingStore(MemoryStore):
    """Counts look-ups, can fail them, and can hold them to measure concurrency."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.lookups = 0
        self.failing = False
        self.delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0

    async def lookup(self, key_hash: bytes) -> KeyLookup | None:
        self.lookups += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await anyio.sleep(self.delay)
            if self.failing:
                raise StorageError("the test store is down")
            return await super().lookup(key_hash)
        finally:
            self.in_flight -= 1


async def counting_setup(**settings: Any) -> Setup:
    clock = FakeClock()
    store = CountingStore(clock)
    options = {"events": "off", "linger": 0.0, **settings}
    guard = Guard(store, clock=clock, streams=StreamSettings(**options))
    user = await make_user(store, grants="crm:write")
    keys = await guard.issuer.issue(user.id, "ws-1")
    return Setup(clock, store, guard, user, keys)


def workers() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name() == "agentguard-live-streams" and not task.done()
    ]


async def test_a_lease_is_cut_at_its_keys_expiry() -> None:
    setup = await memory_setup()
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        setup.clock.advance(principal.expires_at - setup.clock.now() - timedelta(seconds=1))
        setup.guard.streams.wake()
        await still_live(lease, 0.1)
        setup.clock.advance(1)
        setup.guard.streams.wake()
        error = await cut_within(lease)
    assert isinstance(error, InvalidToken)
    assert error.reason is Reason.EXPIRED
    assert error.status == 401
    (event,) = await setup.cut_events()
    assert event["reason"] == "expired"
    assert event["decision"] == "deny"
    assert event["actor"] == {
        "account": principal.account_id,
        "family": principal.family_id,
        "key_id": principal.key_id,
        "user": principal.user_id,
        "workspace": principal.workspace_id,
    }
    detail = event["detail"]
    assert isinstance(detail, dict)
    assert detail["stream"] == "cut"
    assert detail["trigger"] == "expiry"
    assert isinstance(detail["open_ms"], int)
    assert event["status"] == 401


async def test_a_revoked_key_is_cut_at_the_next_interval_not_before() -> None:
    setup = await memory_setup(recheck_interval=5.0)
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        await setup.guard.issuer.revoke(key_id=principal.key_id)
        setup.clock.advance(3.9)  # a round takes leases due within half a second
        setup.guard.streams.wake()
        await still_live(lease, 0.2)  # events are off: only the interval can see it
        setup.clock.advance(1.1)
        setup.guard.streams.wake()
        error = await cut_within(lease)
    assert error.reason is Reason.REVOKED
    (event,) = await setup.cut_events()
    assert event["detail"]["trigger"] == "interval"  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("disable", Reason.USER_DISABLED),
        ("leave", Reason.NOT_A_MEMBER),
        ("close", Reason.ACCOUNT_CLOSED),
        ("revoke_user", Reason.REVOKED),
    ],
)
async def test_an_event_cuts_at_once_with_the_reason_a_request_would_get(
    change: str, reason: Reason
) -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    store, user = setup.store, setup.user
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        if change == "disable":
            await store.put_user(user.model_copy(update={"enabled": False}))
        elif change == "leave":
            await store.set_membership(user.id, "ws-1", member=False)
        elif change == "close":
            account = await store.get_account(user.account_id)
            await store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))
        else:
            await setup.guard.issuer.revoke(user_id=user.id)
        with pytest.raises(InvalidToken) as refused:
            await setup.guard.resolve(setup.key)
        setup.guard.streams.changed(user_id=user.id)  # as the store's feed would say
        error = await cut_within(lease)
    assert type(error) is type(refused.value)
    assert error.reason is refused.value.reason is reason
    (event,) = await setup.cut_events()
    assert event["reason"] == reason.value
    assert event["detail"]["trigger"] == "event"  # type: ignore[index]


async def test_an_event_naming_someone_else_cuts_nothing() -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        await setup.guard.issuer.revoke(key_id=principal.key_id)
        setup.guard.streams.changed(user_id="someone-else")
        await still_live(lease, 0.2)
        setup.guard.streams.changed(key_id=principal.key_id)
        assert (await cut_within(lease)).reason is Reason.REVOKED


async def test_lowered_grants_cut_a_stream_that_carries_its_requirement() -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    passage = await admitted(setup, Requirement("crm", Level.WRITE))
    async with setup.guard.streams.hold(passage, key=setup.key) as lease:
        await make_user(setup.store, grants="crm:read")  # the same user, now read-only
        setup.guard.streams.changed(user_id=setup.user.id)
        error = await cut_within(lease)
    assert isinstance(error, InsufficientScope)
    assert error.status == 403
    (event,) = await setup.cut_events()
    assert event["request_id"] == passage.request.request_id
    assert event["path"] == passage.request.audit_path
    assert event["method"] == "GET"


async def test_one_lookup_per_distinct_key_per_round() -> None:
    setup = await counting_setup(recheck_interval=5.0)
    other = await setup.guard.issuer.issue(setup.user.id, "ws-1")
    first = await setup.guard.resolve(setup.key)
    second = await setup.guard.resolve(other.access_key.reveal())
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(10):
            await stack.enter_async_context(setup.guard.streams.hold(first, key=setup.key))
        for _ in range(5):
            await stack.enter_async_context(
                setup.guard.streams.hold(second, key=other.access_key.reveal())
            )
        assert setup.guard.streams.open_count == 15
        before = setup.store.lookups
        assert await setup.guard.streams.recheck() == 0
        assert setup.store.lookups - before == 2


async def test_a_round_runs_at_most_max_concurrency_lookups_at_once() -> None:
    setup = await counting_setup(recheck_interval=5.0, max_concurrency=3)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(12):
            keys = await setup.guard.issuer.issue(setup.user.id, "ws-1")
            key = keys.access_key.reveal()
            principal = await setup.guard.resolve(key)
            await stack.enter_async_context(setup.guard.streams.hold(principal, key=key))
        setup.store.delay = 0.01
        setup.store.most_in_flight = 0
        await setup.guard.streams.recheck()
    assert setup.store.most_in_flight == 3


async def test_an_outage_is_tolerated_for_the_grace_then_cut_503() -> None:
    setup = await counting_setup(recheck_interval=5.0, outage_grace=10.0)
    principal = await setup.guard.resolve(setup.key)
    streams = setup.guard.streams
    async with streams.hold(principal, key=setup.key) as lease:
        setup.store.failing = True
        assert await streams.recheck() == 0  # failing since now: within the grace
        setup.clock.advance(9)
        assert await streams.recheck() == 0
        setup.clock.advance(1)
        assert await streams.recheck() == 1
        error = await cut_within(lease)
    assert isinstance(error, StoreUnavailable)
    assert error.status == 503
    assert error.reason is Reason.STORE_UNAVAILABLE
    (event,) = await setup.cut_events()
    assert event["detail"]["trigger"] == "outage"  # type: ignore[index]


async def test_a_recovered_store_resets_the_grace() -> None:
    setup = await counting_setup(recheck_interval=5.0, outage_grace=10.0)
    principal = await setup.guard.resolve(setup.key)
    streams = setup.guard.streams
    async with streams.hold(principal, key=setup.key) as lease:
        setup.store.failing = True
        assert await streams.recheck() == 0
        setup.clock.advance(8)
        setup.store.failing = False
        assert await streams.recheck() == 0
        setup.store.failing = True
        setup.clock.advance(8)  # 16 s since the first failure, 0 since the new one
        assert await streams.recheck() == 0
        assert not lease.is_cut


async def test_a_grace_of_zero_cuts_at_the_first_failed_recheck() -> None:
    setup = await counting_setup(recheck_interval=5.0, outage_grace=0.0)
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        setup.store.failing = True
        assert await setup.guard.streams.recheck() == 1
    assert isinstance(lease.error, StoreUnavailable)


async def test_the_lease_is_released_when_the_block_ends_even_by_an_error() -> None:
    setup = await memory_setup()
    principal = await setup.guard.resolve(setup.key)
    seen = []

    async def pump() -> None:
        async with setup.guard.streams.hold(principal, key=setup.key):
            seen.append(setup.guard.streams.open_count)
            raise RuntimeError("the pump failed")

    with pytest.raises(RuntimeError):
        await pump()
    assert seen == [1]
    assert setup.guard.streams.open_count == 0


async def test_the_worker_starts_on_demand_and_leaves_nothing_behind() -> None:
    setup = await memory_setup(linger=0.0)
    principal = await setup.guard.resolve(setup.key)
    assert workers() == []
    async with setup.guard.streams.hold(principal, key=setup.key):
        assert len(workers()) == 1
    await eventually(lambda: not workers())
    async with setup.guard.streams.hold(principal, key=setup.key):  # and starts again
        assert len(workers()) == 1


async def test_a_started_registry_keeps_its_feed_until_closed() -> None:
    setup = await memory_setup(events="auto")  # memory store: polled a few times a second
    streams = setup.guard.streams
    await streams.start()
    await eventually(streams.listening)
    principal = await setup.guard.resolve(setup.key)
    async with streams.hold(principal, key=setup.key) as lease:
        await setup.guard.issuer.revoke(key_id=principal.key_id)  # no wake, no clock move
        assert (await cut_within(lease)).reason is Reason.REVOKED
    assert len(workers()) == 1
    await streams.aclose()
    assert workers() == []


async def test_closing_cuts_the_streams_still_open() -> None:
    setup = await memory_setup()
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        await setup.guard.streams.aclose()
        error = await cut_within(lease)
    assert error.status == 503
    assert workers() == []


async def test_a_cut_is_audited_once_however_often_it_is_found() -> None:
    setup = await memory_setup(recheck_interval=5.0)
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        await setup.guard.issuer.revoke(key_id=principal.key_id)
        setup.guard.streams.changed()
        await cut_within(lease)
        setup.clock.advance(5)
        await setup.guard.streams.recheck()
        setup.guard.streams.changed()
        await anyio.sleep(0.05)
    assert len(await setup.cut_events()) == 1
    assert setup.guard.streams.cuts == 1


async def test_an_event_just_before_the_hold_is_not_missed() -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)  # the request is decided...
    await setup.guard.issuer.revoke(key_id=principal.key_id)  # ...revoked...
    setup.guard.streams.changed(key_id=principal.key_id)  # ...announced: no lease to cut yet
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        assert (await cut_within(lease)).reason is Reason.REVOKED


async def test_a_stream_without_an_agentguard_key_is_checked_against_the_directory() -> None:
    setup = await memory_setup(recheck_interval=3600.0)
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=None) as lease:
        assert lease.key_hash is None
        await setup.guard.issuer.revoke(key_id=principal.key_id)
        setup.guard.streams.changed()
        await still_live(lease, 0.2)  # documented: the token itself cannot be re-checked
        await setup.store.put_user(setup.user.model_copy(update={"enabled": False}))
        setup.guard.streams.changed()
        assert (await cut_within(lease)).reason is Reason.USER_DISABLED


async def test_the_lease_keeps_only_the_hash_and_shows_neither() -> None:
    setup = await memory_setup()
    principal = await setup.guard.resolve(setup.key)
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        shown = repr(lease) + repr(setup.guard.streams)
        slots = [getattr(lease, name, None) for name in type(lease).__slots__]
        assert setup.key not in shown
        assert lease.key_hash is not None
        assert lease.key_hash.hex() not in shown
        assert setup.key not in [value for value in slots if isinstance(value, str)]


async def test_a_registry_with_an_explicit_feed_uses_it() -> None:
    setup = await memory_setup()
    streams = LiveStreams(setup.guard, StreamSettings(linger=0.0), feed=None)
    assert streams.feed is None
    assert repr(streams) == "LiveStreams(open=0, interval=5.0)"


async def test_a_commit_naming_no_one_checks_new_streams_within_a_second_not_at_once() -> None:
    setup = await counting_setup(recheck_interval=5.0)
    principal = await setup.guard.resolve(setup.key)
    setup.guard.streams.changed()  # what a SQLite commit says: something, somewhere
    async with setup.guard.streams.hold(principal, key=setup.key) as lease:
        before = setup.store.lookups
        await anyio.sleep(0.05)
        assert setup.store.lookups == before  # short responses end before they cost a look-up
        await setup.guard.issuer.revoke(key_id=principal.key_id)
        setup.clock.advance(1)
        setup.guard.streams.wake()
        assert (await cut_within(lease)).reason is Reason.REVOKED


async def test_a_started_registry_does_not_run_a_round_per_short_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many short responses one after the other: the worker of a started registry (the
    gateway's) is not woken by each lease's release, only when a lease comes due."""
    setup = await memory_setup(events="off")
    streams = setup.guard.streams
    rounds: list[int] = []
    original = LiveStreams._round

    async def counted(self: LiveStreams, worker: Any) -> None:
        rounds.append(1)
        await original(self, worker)

    monkeypatch.setattr(LiveStreams, "_round", counted)
    await streams.start()
    await eventually(lambda: len(rounds) >= 1)  # the worker's first round
    principal = await setup.guard.resolve(setup.key)
    before = len(rounds)
    for _ in range(50):
        async with streams.hold(principal, key=setup.key):
            await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()  # a woken worker would run its round here
    assert len(rounds) - before <= 2
    await streams.aclose()
