"""An operator's decision: taken once, audited without the body, refused clearly otherwise;
on the in-memory store and on a real SQLite file."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard._model import ApprovalRecord
from agentguard.approvals._decide import ApprovalNotPending, UnknownApproval, decide
from agentguard.audit._writer import AuditWriter
from agentguard.errors import AuditUnavailable, UsageError
from agentguard.storage import MemoryStore, PostgresStore, SQLiteStore
from agentguard.testing import FakeClock
from tests.backends.services import temporary_schema
from tests.support.approval_records import held_call

pytestmark = pytest.mark.anyio

SECRET_BODY = b'{"note": "preview-must-not-reach-the-audit-log"}'


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        async with SQLiteStore(tmp_path / "approvals.db") as opened:
            yield opened
    else:
        async with temporary_schema() as (dsn, schema), PostgresStore(dsn, schema=schema) as pg:
            yield pg


class Notes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def notify(self, event: str, record: ApprovalRecord) -> None:
        self.seen.append((event, record.id))


async def _held(store: Any, clock: FakeClock, **options: Any) -> ApprovalRecord:
    record = held_call(clock.now(), **options)
    stored: ApprovalRecord = await store.create_approval(record, now=clock.now())
    return stored


async def _events(store: Any) -> list[dict[str, Any]]:
    return [entry.event() for entry in await store.read()]


@pytest.mark.parametrize("approve", [True, False])
async def test_a_decision_is_stored_audited_and_notified(store: Any, approve: bool) -> None:
    clock = FakeClock()
    held = await _held(store, clock, body=SECRET_BODY)
    notes = Notes()
    decided = await decide(
        store, AuditWriter(store), held.id, approve=approve, by="alice", clock=clock,
        notifier=notes, via="cli",
    )  # fmt: skip
    assert decided.status.value == ("approved" if approve else "denied")
    assert decided.decided_by == "alice" and decided.decided_at == clock.now()
    stored = await store.get_approval(held.id)
    assert stored is not None and stored.status == decided.status
    [event] = await _events(store)
    assert event["action"] == "approval.decide"
    assert event["decision"] == ("allow" if approve else "deny")
    assert event["actor"] == {
        "user": held.user_id, "workspace": held.workspace_id, "account": held.account_id,
        "key_id": held.key_id, "family": held.family_id,
    }  # fmt: skip
    assert (event["service"], event["method"], event["path"]) == ("crm", "POST", "/crm/contacts")
    assert event["detail"] == {"approval_id": held.id, "operator": "alice", "via": "cli"}
    assert "preview-must-not-reach" not in repr(event)
    event_name = "approval.approved" if approve else "approval.denied"
    assert notes.seen == [(event_name, held.id)]


async def test_a_second_decision_is_refused_naming_the_state(store: Any) -> None:
    clock = FakeClock()
    held = await _held(store, clock)
    audit = AuditWriter(store)
    await decide(store, audit, held.id, approve=True, by="alice", clock=clock)
    for approve in (True, False):
        with pytest.raises(ApprovalNotPending) as caught:
            await decide(store, audit, held.id, approve=approve, by="bob", clock=clock)
        assert caught.value.state == "approved" and not isinstance(caught.value, UnknownApproval)
        assert "approved already" in str(caught.value)
    stored = await store.get_approval(held.id)
    assert stored is not None and stored.decided_by == "alice"
    assert len(await _events(store)) == 1


async def test_an_unknown_approval_is_refused(store: Any) -> None:
    with pytest.raises(UnknownApproval) as caught:
        await decide(store, AuditWriter(store), "apr_nope", approve=True, by="a", clock=FakeClock())
    assert caught.value.state is None and "no approval 'apr_nope'" in str(caught.value)
    assert await _events(store) == []


async def test_an_expired_approval_cannot_be_approved(store: Any) -> None:
    clock = FakeClock()
    held = await _held(store, clock, ttl=timedelta(minutes=5))
    clock.advance(timedelta(minutes=5))
    with pytest.raises(ApprovalNotPending) as caught:
        await decide(store, AuditWriter(store), held.id, approve=True, by="a", clock=clock)
    assert caught.value.state == "expired" and "expired" in str(caught.value)
    stored = await store.get_approval(held.id)
    assert stored is not None and stored.status.value == "pending"


async def test_concurrent_decisions_take_effect_once(store: Any) -> None:
    clock = FakeClock()
    held = await _held(store, clock)
    audit = AuditWriter(store)
    outcomes: list[str] = []

    async def one(name: str, approve: bool) -> None:
        try:
            await decide(store, audit, held.id, approve=approve, by=name, clock=clock)
        except ApprovalNotPending:
            outcomes.append("refused")
        else:
            outcomes.append(name)

    async with anyio.create_task_group() as tasks:
        for index in range(8):
            tasks.start_soon(one, f"op{index}", index % 2 == 0)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and outcomes.count("refused") == 7
    stored = await store.get_approval(held.id)
    assert stored is not None and stored.decided_by == winners[0]
    assert len(await _events(store)) == 1


async def test_a_failing_notifier_is_logged_and_the_decision_stands(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def notify(self, event: str, record: ApprovalRecord) -> None:
            raise RuntimeError("webhook down")

    clock = FakeClock()
    held = await _held(store, clock)
    with caplog.at_level(logging.ERROR, logger="agentguard.approvals"):
        decided = await decide(
            store, AuditWriter(store), held.id, approve=False, by="a", clock=clock,
            notifier=Broken(),
        )  # fmt: skip
    assert decided.status.value == "denied"
    assert "approval notifier failed: RuntimeError" in caplog.text


async def test_an_audit_outage_is_raised_and_the_decision_stands(store: Any) -> None:
    class DownAudit:
        async def append(self, events: Any) -> Any:
            raise OSError("disk full")

    clock = FakeClock()
    held = await _held(store, clock)
    notes = Notes()
    with pytest.raises(AuditUnavailable):
        await decide(
            store, AuditWriter(DownAudit()), held.id, approve=True, by="a",  # type: ignore[arg-type]
            clock=clock, notifier=notes,
        )  # fmt: skip
    stored = await store.get_approval(held.id)
    assert stored is not None and stored.status.value == "approved"
    assert notes.seen == []  # told only of recorded decisions


@pytest.mark.parametrize("name", ["", "x" * 129])
async def test_the_operator_name_is_one_to_128_characters(store: Any, name: str) -> None:
    clock = FakeClock()
    held = await _held(store, clock)
    with pytest.raises(UsageError):
        await decide(store, AuditWriter(store), held.id, approve=True, by=name, clock=clock)
    stored = await store.get_approval(held.id)
    assert stored is not None and stored.status.value == "pending"
