"""One span per decision through the ASGI middleware: attributes, parentage, the shared
decision id with the audit event, reviewer verdicts, limits and the metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentguard import Guard, RouteRule
from agentguard.asgi import AgentGuardMiddleware
from agentguard.limits import RateLimit
from agentguard.review import Verdict
from agentguard.storage import MemoryStore
from agentguard.telemetry._names import SPAN_NAME
from agentguard.testing import FakeClock, make_user
from tests import canary
from tests.telemetry.support import PARENT_ID, TRACE_ID, TRACEPARENT, Otel, in_memory

pytestmark = pytest.mark.anyio


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def _world(otel: Otel | None, **options: Any) -> tuple[httpx.AsyncClient, Guard, str]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(
        store,
        rules=[RouteRule("/crm", "crm")],
        clock=clock,
        instance="api-1",
        telemetry=None if otel is None else otel.telemetry,
        **options,
    )
    await make_user(store, user_id="alice", grants="crm:read")
    keys = await guard.issuer.issue("alice", "ws-1")
    app = AgentGuardMiddleware(
        Starlette(routes=[Route("/crm/contacts", _ok, methods=["GET", "POST"])]), guard
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw.test")
    return client, guard, keys.access_key.reveal()


async def _decisions(guard: Guard) -> list[dict[str, Any]]:
    entries = await guard.audit.store.read(0)
    events = [(entry.seq, json.loads(entry.body)) for entry in entries]
    return [{"seq": seq, **body} for seq, body in events if body["action"] == "guard.decision"]


async def test_an_allowed_call_has_one_span_with_the_audit_fields() -> None:
    otel = in_memory()
    client, guard, key = await _world(otel)
    async with client:
        sent = await client.get(
            "/crm/contacts", headers={"authorization": f"Bearer {key}", "traceparent": TRACEPARENT}
        )
    assert sent.status_code == 200
    (span,) = otel.finished()
    (event,) = await _decisions(guard)
    assert span.name == SPAN_NAME
    assert span.kind is SpanKind.SERVER
    rule = dict(span.attributes or {})["agentguard.rule.version"]
    assert dict(span.attributes or {}) == {
        "agentguard.decision_id": event["request_id"],
        "agentguard.audit.seq": event["seq"],
        "agentguard.decision": "allow",
        "agentguard.service": "crm",
        "http.request.method": "GET",
        "agentguard.rule.scope": "crm:read",
        "agentguard.rule.version": rule,
        "agentguard.key_id": event["actor"]["key_id"],
        "agentguard.family_id": event["actor"]["family"],
        "agentguard.user_id": "alice",
        "agentguard.workspace_id": "ws-1",
        "agentguard.account_id": "acct-1",
        "agentguard.instance": "api-1",
        "agentguard.decision.latency_us": event["latency_us"],
        "http.response.status_code": 200,
    }
    assert event["instance"] == "api-1" and event["decision"] == "allow"
    assert span.status.status_code is StatusCode.UNSET
    # linked to the incoming W3C trace context: same trace, the agent's span as parent
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == PARENT_ID
    assert span.parent.is_remote


async def test_a_refusal_has_its_span_and_shares_the_decision_id() -> None:
    otel = in_memory()
    client, guard, key = await _world(otel)
    async with client:
        sent = await client.post(
            "/crm/contacts", headers={"authorization": f"Bearer {key}", "x-request-id": "req-42"}
        )
    assert sent.status_code == 403
    (span,) = otel.finished()
    (event,) = await _decisions(guard)
    attributes = dict(span.attributes or {})
    assert event["request_id"] == "req-42" == attributes["agentguard.decision_id"]
    assert attributes["agentguard.audit.seq"] == event["seq"]
    assert (attributes["agentguard.decision"], attributes["agentguard.reason"]) == (
        "deny", "insufficient_scope",
    )  # fmt: skip
    assert attributes["http.response.status_code"] == 403
    assert attributes["agentguard.rule.scope"] == "crm:write"
    assert span.parent is None  # no traceparent: a new trace
    counted = {tuple(sorted(a.items())): p.value for a, p in otel.points("agentguard.decisions")}
    assert counted == {
        (("decision", "deny"), ("reason", "insufficient_scope"), ("service", "crm")): 1
    }


async def test_a_refusal_about_no_one_is_counted_and_still_has_a_span() -> None:
    otel = in_memory()
    client, guard, _ = await _world(otel)
    async with client:
        sent = await client.get("/crm/contacts", headers={"traceparent": TRACEPARENT})
    assert sent.status_code == 401
    (span,) = otel.finished()
    attributes = dict(span.attributes or {})
    assert "agentguard.audit.seq" not in attributes  # aggregated into a summary: no own event
    assert attributes["agentguard.reason"] == "missing_credentials"
    assert not any(name.endswith(("key_id", "user_id")) for name in attributes)
    assert await _decisions(guard) == []


async def test_a_blocking_reviewer_shows_on_the_span() -> None:
    otel = in_memory()

    def refuse_all(context: Any, content: str) -> Verdict:
        return Verdict.block("refuse_all", "test_block")

    client, _, key = await _world(otel, request_reviewers=[refuse_all])
    async with client:
        sent = await client.request(
            "GET", "/crm/contacts", headers={"authorization": f"Bearer {key}"}, content=b"hi"
        )
    assert sent.status_code == 403
    (span,) = otel.finished()
    attributes = dict(span.attributes or {})
    assert attributes["agentguard.decision"] == "allow"  # decided, then blocked by review
    assert attributes["http.response.status_code"] == 403
    assert attributes["agentguard.review.verdicts"] == ("in:refuse_all:block:test_block",)
    verdicts = otel.points("agentguard.review.verdicts")
    assert [(a, p.value) for a, p in verdicts] == [
        (
            {"direction": "in", "reviewer": "refuse_all", "outcome": "block",
             "reason": "test_block"},
            1,
        )
    ]  # fmt: skip


async def test_rate_limit_refusals_are_counted_by_limit() -> None:
    otel = in_memory()
    client, _, key = await _world(otel, rate_limits=[RateLimit("slow", 1 / 3600, burst=1)])
    async with client:
        statuses = [
            (
                await client.get("/crm/contacts", headers={"authorization": f"Bearer {key}"})
            ).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 429, 429]
    assert len(otel.finished()) == 3
    limited = [(a, p.value) for a, p in otel.points("agentguard.limit.refusals")]
    assert limited == [({"limit": "rate", "service": "crm"}, 2)]


async def test_audit_append_latency_and_queue_depth_are_measured() -> None:
    otel = in_memory()
    client, _, key = await _world(otel)
    async with client:
        await client.get("/crm/contacts", headers={"authorization": f"Bearer {key}"})
    appends = otel.points("agentguard.audit.append.duration")
    assert [(a, p.count) for a, p in appends] == [({"outcome": "ok"}, 2)]  # key.issue, decision
    assert [(a, p.value) for a, p in otel.points("agentguard.audit.pending")] == [
        ({"instance": "api-1"}, 0)
    ]
    decided = otel.points("agentguard.decision.duration")
    assert [(a, p.count) for a, p in decided] == [({"decision": "allow", "service": "crm"}, 1)]


async def test_no_secret_reaches_spans_or_metrics() -> None:
    otel = in_memory()
    client, _, key = await _world(otel)
    async with client:
        await client.get(
            "/crm/contacts?q=secret-query-value",
            headers={"authorization": f"Bearer {key}", "traceparent": TRACEPARENT},
        )
        await client.get("/crm/contacts", headers={"authorization": f"Bearer {key}x"})
        await client.get("/crm/contacts", headers={"authorization": f"Bearer {key}"})
    dumped = otel.dump()
    assert key not in dumped and "secret-query-value" not in dumped
    with canary._lock:  # every secret the whole run generated so far
        generated = canary._keys | canary._others
    assert generated and not [secret for secret in generated if secret in dumped]


async def test_without_telemetry_no_span_is_made() -> None:
    otel = in_memory()  # a provider exists, but the guard was not given it
    client, guard, key = await _world(None)
    async with client:
        assert (await client.get("/crm/contacts", headers={"authorization": f"Bearer {key}"})
                ).status_code == 200  # fmt: skip
    assert guard.telemetry is None and guard.audit.observer is None
    assert otel.finished() == []


@settings(max_examples=60, deadline=None)
@given(
    trace_id=st.integers(1, 2**128 - 1),
    span_id=st.integers(1, 2**64 - 1),
    sampled=st.booleans(),
)
def test_any_valid_traceparent_becomes_the_parent(
    trace_id: int, span_id: int, sampled: bool
) -> None:
    from agentguard._request import GuardRequest
    from agentguard.telemetry._propagation import parent

    header = f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}".encode()
    context, kind = parent([(b"traceparent", header)])
    from opentelemetry import trace

    assert context is not None and kind is SpanKind.SERVER
    found = trace.get_current_span(context).get_span_context()
    assert (found.trace_id, found.span_id, found.trace_flags.sampled) == (
        trace_id, span_id, sampled,
    )  # fmt: skip
    GuardRequest("GET", "/")  # importable alongside: the core needs no OpenTelemetry


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=3))
def test_garbage_traceparents_start_a_new_trace(values: list[bytes]) -> None:
    from opentelemetry import trace

    from agentguard.telemetry._propagation import parent

    context, _ = parent([(b"traceparent", value) for value in values])
    found = trace.get_current_span(context).get_span_context()
    if len(values) != 1:
        assert not found.is_valid  # none, or ambiguous: never one of them picked
    elif found.is_valid:  # the one value parsed: it must be a W3C traceparent
        text = values[0].decode("latin-1").strip()
        assert f"{found.trace_id:032x}" in text and f"{found.span_id:016x}" in text
