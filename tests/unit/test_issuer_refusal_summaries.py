"""A refresh with a key that names no one is counted per source, not audited one by one."""

from __future__ import annotations

import pytest

from agentguard import KeyIssuer, KeyKind, generate_key
from agentguard.audit import AuditWriter
from agentguard.audit._aggregate import RefusalSummaries, RefusalSummaryPolicy
from agentguard.errors import InvalidGrant, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio


def _issuer(store: MemoryStore, clock: FakeClock) -> KeyIssuer:
    summaries = RefusalSummaries(RefusalSummaryPolicy(interval=60), clock)
    return KeyIssuer(store, clock=clock, audit=AuditWriter(store, summaries=summaries))


@pytest.mark.parametrize(
    ("key", "reason"),
    [("ag_rt_garbage", Reason.MALFORMED_KEY), (None, Reason.UNKNOWN_KEY)],
)
async def test_a_key_that_names_no_one_is_counted_per_source(
    key: str | None, reason: Reason
) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    issuer = _issuer(store, clock)
    presented = key or generate_key(KeyKind.REFRESH).reveal()
    for _ in range(3):
        with pytest.raises(InvalidGrant) as refused:
            await issuer.refresh(presented, source="203.0.113.7")
        assert (refused.value.reason, refused.value.status) == (reason, 400)
    assert await store.read() == []  # nothing written per refusal
    clock.advance(61)
    assert issuer.audit is not None
    assert await issuer.audit.flush_summaries() == 1
    [entry] = await store.read()
    event = entry.event()
    assert (event["action"], event["decision"], event["reason"]) == (
        "guard.refusal_summary",
        "deny",
        reason.value,
    )
    assert event["detail"]["source"] == "203.0.113.7"  # type: ignore[index]
    assert event["detail"]["count"] == 3  # type: ignore[index]
    assert event["status"] == 400


async def test_a_known_key_refused_keeps_its_own_event() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    issuer = _issuer(store, clock)
    user = await make_user(store)
    issued = await issuer.issue(user.id, "ws-1")
    with pytest.raises(InvalidGrant) as refused:
        await issuer.refresh(issued.access_key.reveal(), source="203.0.113.7")  # wrong kind
    assert refused.value.reason is Reason.WRONG_KEY_KIND
    last = (await store.read())[-1].event()
    assert (last["action"], last["reason"]) == ("key.refresh", "wrong_key_kind")
    assert last["actor"]["key_id"] == issued.access.id  # type: ignore[index]
