"""The gateway app in-process: health, readiness, request ids, JSON logs, draining."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from agentguard.config import SettingsError, load_settings
from agentguard.gateway import JSONFormatter, build_gateway
from agentguard.storage import MemoryStore
from tests.product.conftest import new_kek

pytestmark = pytest.mark.anyio

ENV = {
    "AGENTGUARD_STORE": "memory://",
    "AGENTGUARD_PUBLIC_ORIGIN": "http://gw.test",
    "AGENTGUARD_KEK": new_kek(),
}


class BrokenStore(MemoryStore):
    async def head(self) -> None:
        raise ConnectionError("database is down")


async def test_health_and_readiness() -> None:
    gateway = build_gateway(load_settings(environ=ENV))
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz", headers={"X-Request-Id": "probe-1"})
        assert ready.json() == {"status": "ready"}
        assert ready.headers["x-request-id"] == "probe-1"
        generated = await client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
        assert len(generated.headers["x-request-id"]) == 16


async def test_readiness_fails_when_the_store_does() -> None:
    gateway = build_gateway(load_settings(environ=ENV), store=BrokenStore())
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "reason": "ConnectionError",
        "unavailable": {"audit store": "ConnectionError"},
    }
    assert (await gateway.guard.audit.flush()) == 0


async def test_audit_events_carry_the_request_id(tmp_path: Path) -> None:
    path = tmp_path / "agentguard.toml"
    # One event per refusal: a malformed key is otherwise counted in a refusal summary.
    path.write_text(
        "[audit]\nrefusal_summaries = false\n"
        '[[services]]\nname = "crm"\nbase_url = "https://crm.example"\n'
    )
    store = MemoryStore()
    gateway = build_gateway(load_settings(path, environ=ENV), store=store)
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        refused = await client.get("/crm/contacts", headers={"Authorization": "Bearer nope"})
    assert refused.status_code in (400, 401)
    ids = {entry.event().get("request_id") for entry in await store.read()}
    assert refused.headers["x-request-id"] in ids


async def test_drain_closes_everything_once() -> None:
    gateway = build_gateway(load_settings(environ=ENV))
    await gateway.aclose()
    await gateway.aclose()
    assert repr(gateway).startswith("Gateway(services=[]")


def test_json_formatter_writes_one_object_with_the_request_id() -> None:
    record = logging.LogRecord("agentguard.access", logging.INFO, __file__, 1, "request", (), None)
    record.request_id = "abc"
    record.status = 200
    document = json.loads(JSONFormatter().format(record))
    assert document["request_id"] == "abc" and document["status"] == 200
    assert document["level"] == "info" and document["msg"] == "request"


def test_gateway_paths_cannot_be_service_names(tmp_path: Path) -> None:
    path = tmp_path / "agentguard.toml"
    path.write_text(
        '[dpop]\nenabled = false\n[[services]]\nname = "oauth"\nbase_url = "https://x.example"\n'
    )
    with pytest.raises(SettingsError, match="reserved"):
        load_settings(path, environ={})


async def test_protected_resource_metadata_for_the_gateway_and_each_service(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agentguard.toml"
    path.write_text('[[services]]\nname = "crm"\nbase_url = "https://crm.example"\n')
    gateway = build_gateway(load_settings(path, environ=ENV), store=MemoryStore())
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        root = await client.get("/.well-known/oauth-protected-resource")
        crm = await client.get("/.well-known/oauth-protected-resource/crm")
        refused = await client.get("/crm/contacts")
    assert root.json()["resource"] == "http://gw.test"
    assert crm.json()["resource"] == "http://gw.test/crm"
    assert "crm:write" in crm.json()["scopes_supported"]
    assert refused.status_code == 401
    expected = 'resource_metadata="http://gw.test/.well-known/oauth-protected-resource"'
    assert expected in refused.headers["www-authenticate"]


async def test_a_key_in_the_path_never_reaches_the_access_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agentguard import KeyKind, generate_key

    path = tmp_path / "agentguard.toml"
    path.write_text('[[services]]\nname = "crm"\nbase_url = "https://crm.example"\n')
    gateway = build_gateway(load_settings(path, environ=ENV), store=MemoryStore())
    keys = [generate_key(kind).reveal() for kind in (KeyKind.ACCESS, KeyKind.REFRESH)]
    transport = httpx.ASGITransport(app=gateway.app)
    # The test's own client logs the URLs it requests (the agent's side): keep it quiet.
    caplog.set_level(logging.WARNING, logger="httpx")
    with caplog.at_level(logging.INFO, logger="agentguard.access"):
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            for key in keys:
                refused = await client.get(f"/crm/contacts/{key}", headers={"X-Api-Key": key})
                assert refused.status_code in (400, 401)
                await client.get(f"/crm/{key[:20]}/x")  # a cut key too
    logged = [
        getattr(record, "path", "")
        for record in caplog.records
        if record.name == "agentguard.access"
    ]
    assert len(logged) == 4 and all("[redacted]" in str(p) for p in logged), logged
    text = "\n".join(str(p) for p in logged)
    assert not any(key[6:16] in text for key in keys), text
