"""ApprovalContract: approvals created once per held-back call, decided once, consumed once.

Every guarantee of :class:`~agentguard.storage.ApprovalStore`'s docstrings, on ``store`` and,
for the one-winner guarantees, on ``store`` and ``other_store`` (two instances over one
backend) at once: of concurrent decisions one wins, of concurrent uses one call runs. A random
program of creations, decisions, uses and clock moves, each through either instance, is
compared step by step with a model written from the docstrings.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, NamedTuple

import anyio

from agentguard._keys._format import new_id
from agentguard._model import ApprovalRecord, ApprovalStatus
from agentguard.storage._gate_protocols import ApprovalStore
from agentguard.storage._protocols import IntegrityError
from agentguard.testing._fakes import FakeClock
from agentguard.testing.conformance._base import ContractBase, assert_store_type

__all__ = ["ApprovalContract", "approval_record"]

TTL = timedelta(minutes=10)


def approval_record(
    clock: FakeClock,
    *,
    binding: str | None = None,
    user_id: str = "u1",
    approval_id: str | None = None,
    ttl: timedelta = TTL,
) -> ApprovalRecord:
    """A pending approval created now, with a random binding unless one is given."""
    now = clock.now()
    body = secrets.token_bytes(16)
    return ApprovalRecord(
        id=approval_id or new_id("apr"),
        binding=binding or secrets.token_hex(32),
        family_id="fam_1",
        key_id="key_1",
        user_id=user_id,
        workspace_id="w1",
        account_id="a1",
        service="crm",
        scope="crm:write",
        method="POST",
        path="/crm/contacts",
        query="page=[key]",
        body_digest="sha-256:" + hashlib.sha256(body).hexdigest(),
        body_bytes=len(body),
        body_preview=body.hex(),
        rule_version="0123456789abcdef",
        created_at=now,
        expires_at=now + ttl,
    )


async def approved(store: ApprovalStore, clock: FakeClock) -> ApprovalRecord:
    """An approval created and approved now."""
    record = approval_record(clock)
    await store.create_approval(record, now=clock.now())
    decided = await store.decide_approval(record.id, approve=True, by="op1", now=clock.now())
    assert decided is not None and decided.status is ApprovalStatus.APPROVED
    return decided


class _Step(NamedTuple):
    """One step of a random program; ``target`` picks among the approvals created so far."""

    kind: str
    via_other: bool
    flag: bool  # approve (decide), the bound call (consume)
    target: int
    seconds: int


@dataclass
class _Model:
    """The docstrings' approvals, for one binding: what each step must return."""

    records: dict[str, ApprovalRecord] = field(default_factory=dict)

    def create(self, record: ApprovalRecord, now: datetime) -> ApprovalRecord:
        for standing in self.records.values():
            if standing.status is ApprovalStatus.PENDING and standing.expires_at > now:
                return standing
        self.records[record.id] = record
        return record

    def decide(self, approval_id: str, approve: bool, by: str, now: datetime) -> bool:
        record = self.records[approval_id]
        if record.status is not ApprovalStatus.PENDING or not record.expires_at > now:
            return False
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
        self.records[approval_id] = record.model_copy(
            update={"status": status, "decided_at": now, "decided_by": by}
        )
        return True

    def consume(self, approval_id: str, binding: str, now: datetime) -> bool:
        record = self.records[approval_id]
        if (
            record.status is not ApprovalStatus.APPROVED
            or record.binding != binding
            or not record.expires_at > now
        ):
            return False
        self.records[approval_id] = record.model_copy(
            update={"status": ApprovalStatus.CONSUMED, "consumed_at": now}
        )
        return True


class ApprovalContract(ContractBase):
    """Subclass with ``store`` and ``other_store``: two instances of one ApprovalStore backend."""

    store_type: ClassVar[type[ApprovalStore]]
    """Set it to your backend's class: ``mypy --strict`` checks it against ``ApprovalStore``."""

    async def test_store_implements_approval_store(self, store: ApprovalStore) -> None:
        assert_store_type(self, store, ApprovalStore)

    async def test_created_approval_reads_back_pending(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        record = approval_record(clock)
        assert await store.create_approval(record, now=clock.now()) == record
        assert await store.get_approval(record.id) == record
        assert await store.get_approval("apr_unknown") is None

    async def test_same_call_again_gets_the_standing_approval(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        first = approval_record(clock)
        await store.create_approval(first, now=clock.now())
        clock.advance(30)
        again = approval_record(clock, binding=first.binding)
        assert await store.create_approval(again, now=clock.now()) == first
        assert await store.get_approval(again.id) is None
        assert [r.id for r in await store.list_approvals()] == [first.id]
        other_call = approval_record(clock)
        assert await store.create_approval(other_call, now=clock.now()) == other_call

    async def test_same_call_after_expiry_or_decision_gets_a_new_approval(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        first = approval_record(clock)
        await store.create_approval(first, now=clock.now())
        clock.advance(TTL)  # expires_at == now: no longer standing
        second = approval_record(clock, binding=first.binding)
        assert await store.create_approval(second, now=clock.now()) == second
        assert await store.decide_approval(second.id, approve=False, by="op", now=clock.now())
        third = approval_record(clock, binding=first.binding)
        assert await store.create_approval(third, now=clock.now()) == third
        assert await store.decide_approval(third.id, approve=True, by="op", now=clock.now())
        fourth = approval_record(clock, binding=first.binding)
        assert await store.create_approval(fourth, now=clock.now()) == fourth
        ids = {r.id for r in await store.list_approvals()}
        assert ids == {first.id, second.id, third.id, fourth.id}

    async def test_duplicate_id_raises_integrity_error(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        first = approval_record(clock)
        await store.create_approval(first, now=clock.now())
        clash = approval_record(clock, approval_id=first.id)  # another binding, the same id
        try:
            await store.create_approval(clash, now=clock.now())
        except IntegrityError:
            pass
        else:
            raise AssertionError("a duplicate approval id was stored")
        assert await store.get_approval(first.id) == first

    async def test_decision_is_recorded_once(self, store: ApprovalStore, clock: FakeClock) -> None:
        for approve, status in ((True, ApprovalStatus.APPROVED), (False, ApprovalStatus.DENIED)):
            record = approval_record(clock)
            await store.create_approval(record, now=clock.now())
            clock.advance(5)
            decided = await store.decide_approval(
                record.id, approve=approve, by="op1", now=clock.now()
            )
            expected = record.model_copy(
                update={"status": status, "decided_at": clock.now(), "decided_by": "op1"}
            )
            assert decided == expected
            assert await store.get_approval(record.id) == expected
            for again in (True, False):
                assert (
                    await store.decide_approval(record.id, approve=again, by="op2", now=clock.now())
                    is None
                )
            assert await store.get_approval(record.id) == expected

    async def test_expired_or_unknown_approval_cannot_be_decided(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        record = approval_record(clock)
        await store.create_approval(record, now=clock.now())
        late = record.expires_at
        assert await store.decide_approval(record.id, approve=True, by="op", now=late) is None
        assert await store.get_approval(record.id) == record
        assert await store.decide_approval("apr_unknown", approve=True, by="op", now=late) is None

    async def test_approved_call_runs_once(self, store: ApprovalStore, clock: FakeClock) -> None:
        record = await approved(store, clock)
        clock.advance(1)
        assert await store.consume_approval(record.id, binding=record.binding, now=clock.now())
        consumed = record.model_copy(
            update={"status": ApprovalStatus.CONSUMED, "consumed_at": clock.now()}
        )
        assert await store.get_approval(record.id) == consumed
        clock.advance(1)
        assert not await store.consume_approval(record.id, binding=record.binding, now=clock.now())
        assert await store.get_approval(record.id) == consumed

    async def test_only_the_bound_call_consumes(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        record = await approved(store, clock)
        other_binding = secrets.token_hex(32)
        assert not await store.consume_approval(record.id, binding=other_binding, now=clock.now())
        assert await store.get_approval(record.id) == record
        assert await store.consume_approval(record.id, binding=record.binding, now=clock.now())

    async def test_pending_denied_expired_and_unknown_approvals_do_not_consume(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        pending = approval_record(clock)
        await store.create_approval(pending, now=clock.now())
        denied = approval_record(clock)
        await store.create_approval(denied, now=clock.now())
        assert await store.decide_approval(denied.id, approve=False, by="op", now=clock.now())
        for record in (pending, denied):
            assert not await store.consume_approval(
                record.id, binding=record.binding, now=clock.now()
            )
        assert (await store.get_approval(pending.id)) == pending
        late = await approved(store, clock)
        assert not await store.consume_approval(late.id, binding=late.binding, now=late.expires_at)
        assert await store.get_approval(late.id) == late
        assert not await store.consume_approval(
            "apr_unknown", binding=late.binding, now=clock.now()
        )

    async def test_list_newest_first_filtered_and_limited(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        records = []
        for n in range(5):
            record = approval_record(clock, user_id="u1" if n % 2 == 0 else "u2")
            await store.create_approval(record, now=clock.now())
            records.append(record)
            clock.advance(1)
        await store.decide_approval(records[0].id, approve=True, by="op", now=clock.now())
        await store.decide_approval(records[3].id, approve=False, by="op", now=clock.now())
        clock.advance(TTL)  # every approval is now expired: expiry is not a stored status
        newest_first = [r.id for r in reversed(records)]
        assert [r.id for r in await store.list_approvals()] == newest_first
        assert [r.id for r in await store.list_approvals(limit=2)] == newest_first[:2]
        pending = await store.list_approvals(status=ApprovalStatus.PENDING)
        assert [r.id for r in pending] == [records[4].id, records[2].id, records[1].id]
        assert [r.id for r in await store.list_approvals(user_id="u2")] == [
            records[3].id,
            records[1].id,
        ]
        mine = await store.list_approvals(status=ApprovalStatus.PENDING, user_id="u1", limit=1)
        assert [r.id for r in mine] == [records[4].id]
        approved_ = await store.list_approvals(status=ApprovalStatus.APPROVED)
        assert [r.id for r in approved_] == [records[0].id]
        assert await store.list_approvals(status=ApprovalStatus.CONSUMED) == []

    async def test_list_orders_equal_creation_times_newest_stored_first(
        self, store: ApprovalStore, clock: FakeClock
    ) -> None:
        records = [approval_record(clock) for _ in range(3)]  # one created_at for all three
        for record in records:
            await store.create_approval(record, now=clock.now())
        listed = [r.id for r in await store.list_approvals()]
        assert listed == [r.id for r in reversed(records)], "ties: newest stored first"

    # two instances over one backend

    async def test_each_instance_sees_the_others_approvals(
        self, store: ApprovalStore, other_store: ApprovalStore, clock: FakeClock
    ) -> None:
        record = approval_record(clock)
        await store.create_approval(record, now=clock.now())
        assert await other_store.get_approval(record.id) == record
        again = approval_record(clock, binding=record.binding)
        assert await other_store.create_approval(again, now=clock.now()) == record
        assert await other_store.decide_approval(record.id, approve=True, by="op", now=clock.now())
        assert await store.consume_approval(record.id, binding=record.binding, now=clock.now())
        assert not await other_store.consume_approval(
            record.id, binding=record.binding, now=clock.now()
        )
        found = await other_store.get_approval(record.id)
        assert found is not None and found.status is ApprovalStatus.CONSUMED

    async def test_concurrent_decisions_across_instances_have_one_winner(
        self, store: ApprovalStore, other_store: ApprovalStore, clock: FakeClock
    ) -> None:
        record = approval_record(clock)
        await store.create_approval(record, now=clock.now())
        results: list[ApprovalRecord | None] = [None] * 24

        async def decide(n: int) -> None:
            instance = store if n % 2 else other_store
            results[n] = await instance.decide_approval(
                record.id, approve=n % 3 != 0, by=f"op{n}", now=clock.now()
            )

        async with anyio.create_task_group() as group:
            for n in range(len(results)):
                group.start_soon(decide, n)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, f"{len(winners)} concurrent decisions of one approval won"
        assert await store.get_approval(record.id) == winners[0]
        assert await other_store.get_approval(record.id) == winners[0]

    async def test_concurrent_uses_across_instances_run_one_call(
        self, store: ApprovalStore, other_store: ApprovalStore, clock: FakeClock
    ) -> None:
        record = await approved(store, clock)
        results = [False] * 24

        async def consume(n: int) -> None:
            instance = store if n % 2 else other_store
            results[n] = await instance.consume_approval(
                record.id, binding=record.binding, now=clock.now()
            )

        async with anyio.create_task_group() as group:
            for n in range(len(results)):
                group.start_soon(consume, n)
        assert results.count(True) == 1, f"one approval let {results.count(True)} calls run"
        found = await other_store.get_approval(record.id)
        assert found is not None and found.status is ApprovalStatus.CONSUMED

    async def test_random_programs_match_the_model(
        self, store: ApprovalStore, other_store: ApprovalStore, clock: FakeClock
    ) -> None:
        """Creations, decisions, uses and clock moves for one call, through either instance."""
        from hypothesis import strategies as st

        from agentguard.testing.conformance._programs import run_programs

        steps = st.builds(
            _Step,
            kind=st.sampled_from(["create", "decide", "consume", "consume", "advance"]),
            via_other=st.booleans(),
            flag=st.sampled_from([True, True, False]),
            target=st.integers(0, 3),
            seconds=st.sampled_from([0, 1, 60, 299, 300, 600]),
        )

        async def check(program: list[_Step]) -> None:
            model = _Model()
            binding = secrets.token_hex(32)
            ids: list[str] = []
            for n, step in enumerate(program):
                now = clock.now()
                via = other_store if step.via_other else store
                if step.kind == "create":
                    record = approval_record(clock, binding=binding, ttl=timedelta(seconds=300))
                    got = await via.create_approval(record, now=now)
                    assert got == model.create(record, now), f"step {n}: create returned {got}"
                    if got.id == record.id:
                        ids.append(record.id)
                elif step.kind == "advance":
                    clock.advance(step.seconds)
                elif ids and step.kind == "decide":
                    target = ids[step.target % len(ids)]
                    by = f"op{n}"
                    result = await via.decide_approval(target, approve=step.flag, by=by, now=now)
                    won = model.decide(target, step.flag, by, now)
                    assert result == (model.records[target] if won else None), f"step {n}: decide"
                elif ids:
                    target = ids[step.target % len(ids)]
                    bound = binding if step.flag else secrets.token_hex(32)
                    used = await via.consume_approval(target, binding=bound, now=now)
                    assert used == model.consume(target, bound, now), f"step {n}: consume"
            for approval_id, expected in model.records.items():
                assert await store.get_approval(approval_id) == expected
                assert await other_store.get_approval(approval_id) == expected

        programs = st.lists(steps, min_size=1, max_size=20)
        await run_programs(programs, check, examples=40)
