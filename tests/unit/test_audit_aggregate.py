"""Refusals that name no one are counted per source and interval; the rest keep one event each."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from agentguard import Guard, GuardRequest, KeyKind, RouteRule, generate_key
from agentguard.audit import Action, AuditEvent, AuditWriter
from agentguard.audit._aggregate import (
    OTHER_SOURCE,
    UNKNOWN_SOURCE,
    RefusalSummaries,
    RefusalSummaryPolicy,
)
from agentguard.errors import AuditUnavailable, RequestRefused
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

pytestmark = pytest.mark.anyio

RULES = [RouteRule("/crm", service="crm")]


@dataclasses.dataclass(frozen=True, slots=True)
class _FromClient(GuardRequest):
    """A GuardRequest that names its client, as the ASGI and WSGI adapters' requests do."""

    client: str | None = None


def request(key: str | None, client: str | None = None, path: str = "/crm/x") -> GuardRequest:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key is not None else []
    return _FromClient(method="GET", path=path, headers=headers, client=client)


async def refuse(guard: Guard, req: GuardRequest) -> RequestRefused:
    with pytest.raises(RequestRefused) as info:
        await guard.authenticate(req)
    return info.value


async def events(store: MemoryStore) -> list[dict[str, Any]]:
    return [entry.event() for entry in await store.read()]


def guard_on(store: MemoryStore, clock: FakeClock, **policy: Any) -> Guard:
    summaries = RefusalSummaryPolicy(**policy) if policy else RefusalSummaryPolicy()
    return Guard(store, rules=RULES, clock=clock, anonymous_refusals=summaries)


async def test_unknown_keys_from_one_source_become_one_counted_event(
    store: MemoryStore, clock: FakeClock
) -> None:
    guard = guard_on(store, clock, interval=60)
    for _ in range(50):
        error = await refuse(guard, request(generate_key(KeyKind.ACCESS).reveal(), "203.0.113.9"))
        assert (error.status, error.reason.value) == (401, "unknown_key")
    assert await events(store) == []  # nothing written inside the interval
    clock.advance(61)
    await refuse(guard, request(generate_key(KeyKind.ACCESS).reveal(), "203.0.113.9"))
    (summary,) = await events(store)
    assert summary["action"] == Action.REFUSAL_SUMMARY.value
    assert (summary["decision"], summary["reason"], summary["status"]) == (
        "deny",
        "unknown_key",
        401,
    )
    assert summary["service"] == "crm"
    detail = summary["detail"]
    assert (detail["source"], detail["count"], detail["interval_s"]) == ("203.0.113.9", 50, 60)
    assert detail["first"] == detail["last"] == detail["interval_start"]
    await guard.audit.flush()  # shutdown writes the open interval: the 51st refusal
    assert [e["detail"]["count"] for e in await events(store)] == [50, 1]


async def test_sources_and_reasons_are_counted_apart(store: MemoryStore, clock: FakeClock) -> None:
    guard = guard_on(store, clock)
    for client in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
        await refuse(guard, request("ag_at_short", client))  # malformed
    await refuse(guard, request(None, "198.51.100.1"))  # no key at all
    await refuse(guard, request("garbage", None))  # a source the adapter did not name
    assert await guard.audit.flush() == 4
    found = {
        (e["detail"]["source"], e["reason"]): e["detail"]["count"] for e in await events(store)
    }
    assert found == {
        ("198.51.100.1", "malformed_key"): 2,
        ("198.51.100.2", "malformed_key"): 1,
        ("198.51.100.1", "missing_credentials"): 1,
        (UNKNOWN_SOURCE, "malformed_key"): 1,
    }


async def test_sources_past_the_bound_fold_into_other(store: MemoryStore, clock: FakeClock) -> None:
    guard = guard_on(store, clock, max_sources=3)
    for n in range(10):
        await refuse(guard, request("ag_at_short", f"192.0.2.{n}"))
    await guard.audit.flush()
    counts = {e["detail"]["source"]: e["detail"]["count"] for e in await events(store)}
    assert counts == {"192.0.2.0": 1, "192.0.2.1": 1, "192.0.2.2": 1, OTHER_SOURCE: 7}


async def test_count_threshold_writes_early_so_a_crash_loses_at_most_that_many(
    store: MemoryStore, clock: FakeClock
) -> None:
    guard = guard_on(store, clock, max_count=100)
    for _ in range(250):
        await refuse(guard, request("ag_at_short", "192.0.2.7"))
    counts = [e["detail"]["count"] for e in await events(store)]
    assert counts == [100, 100]  # 50 held, which a crash now would lose
    assert guard.audit.summaries is not None and guard.audit.summaries.held == 50


async def test_refusals_about_a_known_key_keep_their_own_event(
    store: MemoryStore, clock: FakeClock
) -> None:
    guard = guard_on(store, clock)
    await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue("user-1", "ws-1")
    await store.revoke(key_id=keys.access.id, reason="test", now=clock.now())
    before = len(await events(store))
    error = await refuse(guard, request(keys.access_key.reveal(), "203.0.113.9"))
    assert error.reason.value == "revoked"
    last = (await events(store))[-1]
    assert len(await events(store)) == before + 1
    assert (last["action"], last["reason"], last["actor"]["key_id"]) == (
        "guard.decision",
        "revoked",
        keys.access.id,
    )
    refresh = keys.refresh_key.reveal()  # a known key of the wrong kind names its owner too
    assert (await refuse(guard, request(refresh, "203.0.113.9"))).reason.value == "wrong_key_kind"
    assert (await events(store))[-1]["actor"]["user"] == "user-1"
    assert guard.audit.summaries is not None and guard.audit.summaries.held == 0


async def test_due_summaries_go_out_with_the_next_event_of_any_kind(
    store: MemoryStore, clock: FakeClock
) -> None:
    guard = guard_on(store, clock, interval=10)
    await make_user(store, grants="crm:read")
    keys = await guard.issuer.issue("user-1", "ws-1")
    await refuse(guard, request("ag_at_short", "192.0.2.1"))
    clock.advance(11)
    await guard.authenticate(request(keys.access_key.reveal(), "192.0.2.1"))
    actions = [e["action"] for e in await events(store)]
    assert actions[-2:] == ["guard.refusal_summary", "guard.decision"]


async def test_disabled_means_one_event_per_refusal(store: MemoryStore, clock: FakeClock) -> None:
    guard = Guard(store, rules=RULES, clock=clock, anonymous_refusals=None)
    for _ in range(5):
        await refuse(guard, request("ag_at_short", "192.0.2.1"))
    assert [e["reason"] for e in await events(store)] == ["malformed_key"] * 5


async def test_a_failed_summary_append_is_kept_and_refused_with_503(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)

    class Flaky:
        broken = True

        async def append(self, batch: Sequence[AuditEvent]) -> Any:
            if self.broken:
                raise RuntimeError("down")
            return await store.append(batch)

    flaky = Flaky()
    summaries = RefusalSummaries(RefusalSummaryPolicy(max_count=2), clock)
    writer = AuditWriter(flaky, summaries=summaries)  # type: ignore[arg-type]
    await writer.count_refusal(source="a", reason="unknown_key", status=401)
    with pytest.raises(AuditUnavailable):
        await writer.count_refusal(source="a", reason="unknown_key", status=401)
    assert writer.pending == 1
    flaky.broken = False
    assert await writer.flush() == 1
    (summary,) = await events(store)
    assert summary["detail"]["count"] == 2


def test_policy_refuses_reasons_that_name_someone() -> None:
    with pytest.raises(ValueError, match="known key"):
        RefusalSummaryPolicy(reasons=frozenset({"revoked"}))
    for bad in ({"interval": 0}, {"max_sources": 0}, {"max_count": 0}):
        with pytest.raises(ValueError):
            RefusalSummaryPolicy(**bad)  # type: ignore[arg-type]


def test_sources_are_trimmed_to_printable_ascii(clock: FakeClock) -> None:
    summaries = RefusalSummaries(RefusalSummaryPolicy(), clock)
    summaries.add(source="évil\n" + "x" * 200, reason="unknown_key", status=401, service=None)
    (summary,) = summaries.take(force=True)
    source = summary.detail["source"]
    assert isinstance(source, str) and source.isascii() and source.isprintable()
    assert len(source) == 64 and source.startswith("?vil?")
