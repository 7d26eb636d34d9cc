"""LimitContract: budget counters that never overspend, GCRA buckets exact to the microsecond.

Every guarantee of :class:`~agentguard.storage.LimitStore`'s docstrings, on ``store`` and, for
atomicity, on ``store`` and ``other_store`` (two instances over one backend) at once: fifty
concurrent charges never take a counter over its limit and every allowed one is counted; of
concurrent takes from a fresh bucket exactly ``burst`` are allowed. Random programs compare
charges with a counter model and takes, at random instants, with :func:`gcra_reference`, the
docstring's rule in integer microseconds, ``retry_after`` included.

The store's ``charge`` takes no ``now``; the contract moves ``clock`` (the store's clock) and
passes windows that end an hour after it, so a backend that forgets a counter by ``clock`` (or
by its own time, if ``clock`` runs at real speed) keeps it for the whole test.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar, NamedTuple

import anyio

from agentguard._keys._format import new_id
from agentguard.storage._gate_protocols import Charge, LimitStore, RateDecision
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["LimitContract", "gcra_reference"]

WINDOW = timedelta(hours=1)
CONCURRENT = 50


def gcra_reference(
    tat: int | None, now: int, interval: int, burst: int
) -> tuple[bool, int | None, int]:
    """The docstring's GCRA on integer microseconds: ``(allowed, tat after, retry_after)``.

    ``tat`` is the bucket's theoretical arrival time (``None`` for a fresh bucket); every
    argument and result is in whole microseconds.
    """
    t = max(now if tat is None else tat, now)
    if t + interval - now <= burst * interval:
        return True, t + interval, 0
    return False, tat, t + interval - now - burst * interval


def _at(start: datetime, micros: int) -> datetime:
    return start + timedelta(microseconds=micros)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class _Charge(NamedTuple):
    counter: int
    cost: int
    limit: int
    via_other: bool


class _Take(NamedTuple):
    bucket: int
    gap: int  # microseconds since the previous take
    via_other: bool


class LimitContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one LimitStore backend."""

    store_type: ClassVar[type[LimitStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``LimitStore``."""

    async def test_store_implements_limit_store(self, store: LimitStore) -> None:
        assert_store_type(self, store, LimitStore)

    # budgets

    async def test_charges_count_up_to_the_limit(self, store: LimitStore, clock: FakeClock) -> None:
        until = clock.now() + WINDOW
        counter = new_id("budget")
        assert await store.charge(counter, cost=3, limit=10, expires_at=until) == Charge(True, 3)
        assert await store.charge(counter, cost=7, limit=10, expires_at=until) == Charge(True, 10)
        assert await store.charge(counter, cost=1, limit=10, expires_at=until) == Charge(False, 10)
        assert await store.charge(counter, cost=0, limit=10, expires_at=until) == Charge(True, 10)
        other = new_id("budget")
        assert await store.charge(other, cost=0, limit=10, expires_at=until) == Charge(True, 0)
        assert await store.charge(other, cost=4, limit=10, expires_at=until) == Charge(True, 4)

    async def test_refused_charge_changes_nothing(
        self, store: LimitStore, clock: FakeClock
    ) -> None:
        until = clock.now() + WINDOW
        counter = new_id("budget")
        assert await store.charge(counter, cost=11, limit=10, expires_at=until) == Charge(False, 0)
        assert await store.charge(counter, cost=6, limit=10, expires_at=until) == Charge(True, 6)
        assert await store.charge(counter, cost=5, limit=10, expires_at=until) == Charge(False, 6)
        assert await store.charge(counter, cost=4, limit=10, expires_at=until) == Charge(True, 10)

    async def test_zero_cost_fails_only_above_the_limit(
        self, store: LimitStore, clock: FakeClock
    ) -> None:
        until = clock.now() + WINDOW
        counter = new_id("budget")
        assert await store.charge(counter, cost=0, limit=0, expires_at=until) == Charge(True, 0)
        assert await store.charge(counter, cost=8, limit=8, expires_at=until) == Charge(True, 8)
        assert await store.charge(counter, cost=0, limit=8, expires_at=until) == Charge(True, 8)
        # the limit lowered below what was spent: even a read now fails
        assert await store.charge(counter, cost=0, limit=5, expires_at=until) == Charge(False, 8)
        assert await store.charge(counter, cost=2, limit=20, expires_at=until) == Charge(True, 10)

    async def test_counter_lives_until_its_window_ends(
        self, store: LimitStore, clock: FakeClock
    ) -> None:
        until = clock.now() + timedelta(seconds=60)
        counter = new_id("budget")
        assert await store.charge(counter, cost=5, limit=10, expires_at=until) == Charge(True, 5)
        clock.advance(59)
        assert await store.charge(counter, cost=5, limit=10, expires_at=until) == Charge(True, 10)
        assert await store.charge(counter, cost=1, limit=10, expires_at=until) == Charge(False, 10)

    # rate limits

    async def test_fresh_bucket_allows_burst_then_waits_one_interval(
        self, store: LimitStore, clock: FakeClock
    ) -> None:
        bucket, now = new_id("rate"), clock.now()
        for _ in range(3):
            assert await store.take(bucket, interval=0.5, burst=3, now=now) == RateDecision(
                True, 0.0
            )
        refused = await store.take(bucket, interval=0.5, burst=3, now=now)
        assert refused.allowed is False and _micros(refused.retry_after) == 500_000
        assert (await store.take(bucket, interval=0.5, burst=3, now=now)).allowed is False

    async def test_retry_after_is_exact_to_the_microsecond(
        self, store: LimitStore, clock: FakeClock
    ) -> None:
        bucket, start = new_id("rate"), clock.now()
        assert (await store.take(bucket, interval=1.0, burst=2, now=start)).allowed
        assert (await store.take(bucket, interval=1.0, burst=2, now=start)).allowed
        early = await store.take(bucket, interval=1.0, burst=2, now=_at(start, 999_999))
        assert early.allowed is False and _micros(early.retry_after) == 1
        on_time = await store.take(bucket, interval=1.0, burst=2, now=_at(start, 1_000_000))
        assert on_time == RateDecision(True, 0.0)  # t + interval - now == burst * interval
        again = await store.take(bucket, interval=1.0, burst=2, now=_at(start, 1_250_000))
        assert again.allowed is False and _micros(again.retry_after) == 750_000

    async def test_idle_bucket_refills_to_burst_and_no_further(
        self, store: LimitStore, clock: FakeClock
    ) -> None:
        bucket, start = new_id("rate"), clock.now()
        for _ in range(2):
            assert (await store.take(bucket, interval=0.1, burst=2, now=start)).allowed
        later = _at(start, 10_000_000)  # a hundred intervals idle: still only `burst` at once
        for _ in range(2):
            assert (await store.take(bucket, interval=0.1, burst=2, now=later)).allowed
        refused = await store.take(bucket, interval=0.1, burst=2, now=later)
        assert refused.allowed is False and _micros(refused.retry_after) == 100_000

    async def test_buckets_are_independent(self, store: LimitStore, clock: FakeClock) -> None:
        first, second, now = new_id("rate"), new_id("rate"), clock.now()
        assert (await store.take(first, interval=60, burst=1, now=now)).allowed
        assert not (await store.take(first, interval=60, burst=1, now=now)).allowed
        assert (await store.take(second, interval=60, burst=1, now=now)).allowed

    # two instances over one backend

    async def test_each_instance_sees_the_others_counts_and_buckets(
        self, store: LimitStore, other_store: LimitStore, clock: FakeClock
    ) -> None:
        until, counter, bucket = clock.now() + WINDOW, new_id("budget"), new_id("rate")
        assert await store.charge(counter, cost=4, limit=5, expires_at=until) == Charge(True, 4)
        assert await other_store.charge(counter, cost=2, limit=5, expires_at=until) == Charge(
            False, 4
        )
        assert (await other_store.take(bucket, interval=30, burst=1, now=clock.now())).allowed
        refused = await store.take(bucket, interval=30, burst=1, now=clock.now())
        assert refused.allowed is False and _micros(refused.retry_after) == 30_000_000

    async def test_concurrent_charges_across_instances_never_overspend(
        self, store: LimitStore, other_store: LimitStore, clock: FakeClock
    ) -> None:
        until, counter = clock.now() + WINDOW, new_id("budget")
        results: list[Charge] = []

        async def charge(n: int) -> None:
            instance = store if n % 2 else other_store
            results.append(await instance.charge(counter, cost=3, limit=40, expires_at=until))

        async with anyio.create_task_group() as group:
            for n in range(CONCURRENT):
                group.start_soon(charge, n)
        allowed = sorted(r.used for r in results if r.allowed)
        assert allowed == list(range(3, 40, 3)), f"allowed charges left the counter at {allowed}"
        assert all(r.used == 39 for r in results if not r.allowed)
        for instance in (store, other_store):
            read = await instance.charge(counter, cost=0, limit=40, expires_at=until)
            assert read == Charge(True, 39)

    async def test_concurrent_mixed_charges_count_every_allowed_cost(
        self, store: LimitStore, other_store: LimitStore, clock: FakeClock
    ) -> None:
        until, counter = clock.now() + WINDOW, new_id("budget")
        outcomes: list[tuple[int, Charge]] = []

        async def charge(n: int) -> None:
            cost = 1 + n % 7
            instance = store if n % 2 else other_store
            outcomes.append(
                (cost, await instance.charge(counter, cost=cost, limit=97, expires_at=until))
            )

        async with anyio.create_task_group() as group:
            for n in range(CONCURRENT):
                group.start_soon(charge, n)
        spent = sum(cost for cost, result in outcomes if result.allowed)
        assert spent <= 97, f"concurrent charges spent {spent} of a limit of 97"
        assert all(result.used + cost > 97 for cost, result in outcomes if not result.allowed)
        assert sorted(r.used for _, r in outcomes if r.allowed)[-1] == spent
        read = await other_store.charge(counter, cost=0, limit=97, expires_at=until)
        assert read == Charge(True, spent), "an allowed charge was not counted"

    async def test_concurrent_takes_from_a_fresh_bucket_allow_exactly_burst(
        self, store: LimitStore, other_store: LimitStore, clock: FakeClock
    ) -> None:
        bucket, now = new_id("rate"), clock.now()
        results: list[RateDecision] = []

        async def take(n: int) -> None:
            instance = store if n % 2 else other_store
            results.append(await instance.take(bucket, interval=60, burst=5, now=now))

        async with anyio.create_task_group() as group:
            for n in range(30):
                group.start_soon(take, n)
        allowed = sum(r.allowed for r in results)
        assert allowed == 5, f"{allowed} concurrent takes allowed from a bucket of burst 5"
        assert all(_micros(r.retry_after) == 60_000_000 for r in results if not r.allowed)

    async def test_random_charges_match_a_counter_model(
        self, store: LimitStore, other_store: LimitStore, clock: FakeClock
    ) -> None:
        from hypothesis import strategies as st

        from agentguard.testing.conformance._programs import run_programs

        steps = st.builds(
            _Charge,
            counter=st.integers(0, 2),
            cost=st.integers(0, 12),
            limit=st.integers(0, 30),
            via_other=st.booleans(),
        )

        async def check(program: list[_Charge]) -> None:
            until, names = clock.now() + WINDOW, [new_id("budget") for _ in range(3)]
            used = [0, 0, 0]
            for n, step in enumerate(program):
                via = other_store if step.via_other else store
                name = names[step.counter]
                got = await via.charge(name, cost=step.cost, limit=step.limit, expires_at=until)
                fits = used[step.counter] + step.cost <= step.limit
                used[step.counter] += step.cost if fits else 0
                assert got == Charge(fits, used[step.counter]), f"step {n}: {step} gave {got}"

        await run_programs(st.lists(steps, min_size=1, max_size=30), check, examples=40)

    async def test_random_takes_match_the_gcra_reference(
        self, store: LimitStore, other_store: LimitStore, clock: FakeClock
    ) -> None:
        """Random instants, intervals and bursts; ``retry_after`` compared in microseconds."""
        from hypothesis import strategies as st

        from agentguard.testing.conformance._programs import run_programs

        @st.composite
        def programs(draw: st.DrawFn) -> tuple[int, int, list[_Take]]:
            interval = draw(st.sampled_from([1, 999, 100_000, 333_333, 1_000_000, 59_999_999]))
            burst = draw(st.integers(1, 5))
            gap = st.one_of(
                st.just(0),
                st.integers(0, 2 * interval),
                st.integers(0, (burst + 2) * interval),
            )
            steps = st.builds(_Take, bucket=st.integers(0, 1), gap=gap, via_other=st.booleans())
            return interval, burst, draw(st.lists(steps, min_size=1, max_size=40))

        async def check(program: tuple[int, int, list[_Take]]) -> None:
            interval, burst, takes = program
            start, names = clock.now(), [new_id("rate"), new_id("rate")]
            tats: list[int | None] = [None, None]
            now = 0
            for n, step in enumerate(takes):
                now += step.gap
                via = other_store if step.via_other else store
                got = await via.take(
                    names[step.bucket],
                    interval=interval / 1_000_000,
                    burst=burst,
                    now=_at(start, now),
                )
                allowed, tats[step.bucket], retry = gcra_reference(
                    tats[step.bucket], now, interval, burst
                )
                assert got.allowed is allowed and _micros(got.retry_after) == retry, (
                    f"step {n} ({step}, interval {interval} us, burst {burst}): got {got}, "
                    f"expected allowed={allowed}, retry_after={retry} us"
                )
                assert (got.retry_after == 0.0) is allowed, f"step {n}: retry_after {got}"
            clock.advance(timedelta(microseconds=now) + timedelta(seconds=1))

        await run_programs(programs(), check, examples=60)
