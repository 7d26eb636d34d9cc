"""The gateway with ``[telemetry]``: a span per proxied decision, the trace context carried to
the upstream, and ``GET /metrics`` on the operator listener (operator token required)."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from agentguard import CredentialOwner, CredentialScope
from agentguard.approvals._operators import issue_operator_token
from agentguard.config import SecretValues, Settings
from agentguard.credentials import CredentialVault
from agentguard.gateway import _app as gateway_app
from agentguard.gateway import build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.conftest import CANARY
from tests.telemetry.support import PARENT_ID, TRACE_ID, TRACEPARENT, Otel, in_memory

pytestmark = pytest.mark.anyio


def _settings(telemetry: dict[str, Any]) -> Settings:
    built = Settings.model_validate(
        {
            "public_origin": "http://gw.test",
            "store": {"url": "memory://"},
            "services": [
                {
                    "name": "crm",
                    "base_url": "https://crm.example",
                    "routes": [{"path": "/"}],
                }
            ],
            "telemetry": telemetry,
        }
    )
    kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    return built.model_copy(update={"secret_values": SecretValues(kek=SecretStr(kek))})


class _Upstream:
    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, json={"contacts": []})


async def _gateway(
    monkeypatch: pytest.MonkeyPatch, otel: Otel | None
) -> tuple[Any, _Upstream, str, str, MemoryStore]:
    if otel is not None:
        monkeypatch.setattr(gateway_app, "gateway_telemetry", lambda settings: otel.telemetry)
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    upstream = _Upstream()
    settings = _settings({"traces": otel is not None, "metrics": otel is not None})
    gateway = build_gateway(
        settings, store=store, clock=clock, transports={"crm": httpx.MockTransport(upstream)}
    )
    await make_user(store, user_id="alice", grants="crm:write")
    vault = CredentialVault(store, gateway.settings.keyring())
    await vault.put("crm", CredentialOwner.USER, "alice", CANARY, scope=CredentialScope.USER)
    keys = await gateway.guard.issuer.issue("alice", "ws-1")
    token, _ = await issue_operator_token(store, "ops", clock=clock)
    return gateway, upstream, keys.access_key.reveal(), token.reveal(), store


async def test_a_proxied_call_has_one_span_and_carries_its_context_upstream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    otel = in_memory()
    gateway, upstream, key, _, store = await _gateway(monkeypatch, otel)
    headers = {
        "authorization": f"Bearer {key}",
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=opaque",
    }
    transport = httpx.ASGITransport(gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        sent = await client.get("/crm/contacts?page=2", headers=headers)
    assert sent.status_code == 200, sent.text
    (span,) = otel.finished()
    attributes = dict(span.attributes or {})
    entries = await store.read(0)
    (decision,) = [
        (entry.seq, json.loads(entry.body))
        for entry in entries
        if json.loads(entry.body)["action"] == "guard.decision"
    ]
    seq, event = decision
    assert attributes["agentguard.decision_id"] == event["request_id"]
    assert attributes["agentguard.audit.seq"] == seq
    assert attributes["agentguard.upstream.status_code"] == 200
    assert isinstance(attributes["agentguard.upstream.latency_us"], int)
    assert (attributes["agentguard.decision"], attributes["agentguard.service"]) == (
        "allow", "crm",
    )  # fmt: skip
    assert attributes["http.response.status_code"] == 200
    assert span.context.trace_id == TRACE_ID and span.parent is not None
    assert span.parent.span_id == PARENT_ID
    # the upstream sees the decision's span as its parent, in the agent's trace, once
    (forwarded,) = upstream.seen
    assert forwarded.headers.get_list("traceparent") == [
        f"00-{TRACE_ID:032x}-{span.context.span_id:016x}-01"
    ]
    assert forwarded.headers.get_list("tracestate") == ["vendor=opaque"]
    upstream_points = otel.points("agentguard.upstream.duration")
    assert [(a, p.count) for a, p in upstream_points] == [({"service": "crm", "status": 200}, 1)]
    dumped = otel.dump()
    assert CANARY not in dumped and key not in dumped and "page=2" not in dumped


async def test_an_upstream_failure_ends_the_span_as_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    otel = in_memory()
    gateway, _, key, _, _ = await _gateway(monkeypatch, otel)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    gateway.proxies["crm"]._http._transport = httpx.MockTransport(unreachable)
    transport = httpx.ASGITransport(gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        sent = await client.get("/crm/contacts", headers={"authorization": f"Bearer {key}"})
    assert sent.status_code == 502
    (span,) = otel.finished()
    attributes = dict(span.attributes or {})
    assert (attributes["agentguard.decision"], attributes["agentguard.reason"]) == (
        "deny", "upstream_unreachable",
    )  # fmt: skip
    assert attributes["http.response.status_code"] == 502
    assert span.status.status_code.name == "ERROR"
    failed = otel.points("agentguard.upstream.duration")
    assert [a for a, _ in failed] == [{"service": "crm", "error": "ConnectError"}]


async def test_without_telemetry_the_agents_trace_context_passes_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, upstream, key, _, _ = await _gateway(monkeypatch, None)
    assert gateway.guard.telemetry is None
    transport = httpx.ASGITransport(gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        headers = {"authorization": f"Bearer {key}", "traceparent": TRACEPARENT}
        assert (await client.get("/crm/contacts", headers=headers)).status_code == 200
    assert upstream.seen[0].headers.get_list("traceparent") == [TRACEPARENT]


async def test_metrics_on_the_operator_listener_need_an_operator_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    otel = in_memory()
    gateway, _, key, operator, _ = await _gateway(monkeypatch, otel)
    agents = httpx.ASGITransport(gateway.app)
    async with httpx.AsyncClient(transport=agents, base_url="http://gw.test") as client:
        assert (await client.get("/crm/a", headers={"authorization": f"Bearer {key}"})
                ).status_code == 200  # fmt: skip
        assert (await client.get("/metrics")).status_code == 404  # not on the agents' listener
    assert gateway.operator_app is not None
    listener = httpx.ASGITransport(gateway.operator_app)
    async with httpx.AsyncClient(transport=listener, base_url="http://ops.test") as client:
        anonymous = await client.get("/metrics")
        as_agent = await client.get("/metrics", headers={"authorization": f"Bearer {key}"})
        scraped = await client.get("/metrics", headers={"authorization": f"Bearer {operator}"})
        posted = await client.post("/metrics", headers={"authorization": f"Bearer {operator}"})
        deeper = await client.get("/metrics/x", headers={"authorization": f"Bearer {operator}"})
    assert anonymous.status_code == 401 and "agentguard_" not in anonymous.text
    assert as_agent.status_code == 401
    assert (posted.status_code, deeper.status_code) == (405, 404)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert scraped.headers["cache-control"] == "no-store"
    # read back with Prometheus's own parser (prometheus-client's), not ours
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    decisions = [
        (sample.labels, sample.value)
        for sample in families["agentguard_decisions"].samples
        if sample.name == "agentguard_decisions_total"
    ]
    assert decisions == [({"decision": "allow", "service": "crm"}, 1.0)]
    assert families["agentguard_decision_duration_seconds"].type == "histogram"
    assert families["agentguard_upstream_duration_seconds"].type == "histogram"
    assert families["agentguard_audit_pending"].type == "gauge"
    for secret in (key, operator, CANARY):
        assert secret not in scraped.text


async def test_metrics_off_serves_no_metrics_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _, _, operator, _ = await _gateway(monkeypatch, None)
    listener = httpx.ASGITransport(gateway.operator_app)
    async with httpx.AsyncClient(transport=listener, base_url="http://ops.test") as client:
        answered = await client.get("/metrics", headers={"authorization": f"Bearer {operator}"})
    assert answered.status_code == 404
