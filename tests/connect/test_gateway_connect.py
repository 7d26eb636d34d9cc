"""The standalone gateway with a connected service, built from a TOML file, over real sockets.

A :class:`~agentguard.testing.FakeOAuthVendor` on loopback is both the vendor's authorization
server and its API. An operator makes a one-time link on the operator listener; a "browser"
(httpx with a cookie jar) opens it, confirms, goes to the vendor (which approves at once) and
comes back to the callback; the agent, with its unchanged placeholder key, then calls
``/crm/...`` and the vendor's API sees that user's own token. A user who never connected is
refused ``connection_required`` with the connect page; a disconnect by the operator stops the
next call. Served as ``agentguard serve`` serves it: both listeners in one event loop.
"""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agentguard.config import SecretValues, Settings, SettingsError
from agentguard.errors import ConfigurationError
from agentguard.gateway import build_gateway
from agentguard.gateway._connect import connect_flows
from agentguard.storage import MemoryStore
from agentguard.testing._oauth_vendor import FakeOAuthVendor
from tests.connect.gateway_support import Running, running

__all__ = ["running"]  # the fixture, imported for pytest


def test_a_connected_user_calls_with_their_own_vendor_account(running: Running) -> None:
    alice, bob = running.agents["alice"], running.agents["bob"]
    refused = alice.call(running.origin)
    assert refused.status_code == 403
    body = refused.json()
    assert (body["error"], body["reason"], body["service"]) == (
        "connection_required", "connection_required", "crm",
    )  # fmt: skip
    assert body["connect_uri"] == f"{running.origin}/connect/crm"

    url = running.link("alice")
    assert url.startswith(f"{running.origin}/connect/crm?ticket=ag_ct_")
    done = running.connect_in_browser(url, "alice-at-vendor")
    assert done.status_code == 200 and "Connected" in done.text, done.text

    called = alice.call(running.origin)
    assert called.status_code == 200, called.text
    assert called.json()["vendor_user"] == "alice-at-vendor"
    assert called.json()["path"] == "/api/contacts"

    other = bob.call(running.origin)  # no fallback to alice's account, ever
    assert other.status_code == 403 and other.json()["reason"] == "connection_required"
    assert other.json()["connect_uri"] == f"{running.origin}/connect/crm"
    assert running.vendor.api_calls == {"alice-at-vendor": 1}

    [linked] = running.events("connection.link")
    assert linked["actor"]["user"] == "alice" and linked["detail"]["by"] == "ops-anna"
    assert "ag_ct_" not in str(linked)
    [connected] = running.events("connection.connect")
    assert connected["actor"]["user"] == "alice" and connected["service"] == "crm"


def test_each_user_calls_with_their_own_token_under_concurrent_load(running: Running) -> None:
    for user in ("alice", "bob"):
        done = running.connect_in_browser(running.link(user), f"{user}-at-vendor")
        assert done.status_code == 200, done.text
    calls = [running.agents[user] for user in ("alice", "bob") for _ in range(12)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda agent: (agent, agent.call(running.origin)), calls))
    for agent, answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["vendor_user"] == f"{agent.user_id}-at-vendor"
    assert running.vendor.api_calls == {"alice-at-vendor": 12, "bob-at-vendor": 12}

    listed = running.op("GET", "/connections")
    assert listed.status_code == 200
    rows = listed.json()["connections"]
    assert [(r["service"], r["user_id"], r["status"]) for r in rows] == [
        ("crm", "alice", "active"), ("crm", "bob", "active"),
    ]  # fmt: skip
    assert set(rows[0]) == {
        "id", "service", "user_id", "status", "scopes", "expires_at", "connected_at",
        "updated_at",
    }  # fmt: skip
    assert rows[0]["scopes"] == ["contacts.read"]
    only_bob = running.op("GET", "/connections?user_id=bob").json()["connections"]
    assert [r["user_id"] for r in only_bob] == ["bob"]


def test_a_disconnect_by_the_operator_stops_the_next_call(running: Running) -> None:
    alice, bob = running.agents["alice"], running.agents["bob"]
    for user in ("alice", "bob"):
        running.connect_in_browser(running.link(user), f"{user}-at-vendor")
    assert alice.call(running.origin).status_code == 200

    gone = running.op("DELETE", "/connections/crm/alice")
    assert gone.status_code == 200 and gone.json() == {"disconnected": True}
    assert running.vendor.revoked >= 1  # revoked at the vendor (RFC 7009)
    after = alice.call(running.origin)
    assert after.status_code == 403 and after.json()["reason"] == "connection_required"
    assert bob.call(running.origin).json()["vendor_user"] == "bob-at-vendor"
    again = running.op("DELETE", "/connections/crm/alice")
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    [event] = running.events("connection.disconnect")
    assert event["actor"]["user"] == "alice" and event["detail"]["by"] == "ops-anna"
    assert running.vendor.api_calls == {"alice-at-vendor": 1, "bob-at-vendor": 1}


def test_links_are_refused_for_the_wrong_user_or_service(running: Running) -> None:
    def refused(path: str) -> tuple[int, str, str]:
        answer = running.op("POST", path)
        body = answer.json()
        return answer.status_code, body["error"], body["error_description"]

    status, error, text = refused("/connections/crm/nobody/link")
    assert (status, error) == (404, "not_found") and "nobody" in text
    status, error, text = refused("/connections/billing/alice/link")
    assert (status, error) == (409, "service_not_connected") and "operator" in text
    status, error, text = refused("/connections/nothing/alice/link")
    assert (status, error) == (404, "not_found") and "connected services: crm" in text
    assert running.events("connection.link") == []


def test_the_vendor_clients_close_with_the_gateway(running: Running) -> None:
    assert running.gateway.connect is not None
    assert sorted(running.gateway.connect.vendors) == ["crm"]
    assert running.gateway.proxies["crm"] is not None
    assert "connect" not in running.gateway.proxies


def _direct_settings(**update: Any) -> Settings:
    """Settings built without load_settings (so without its checks), as an embedding app may."""
    vendor = FakeOAuthVendor(base_url="http://127.0.0.1:9")
    service = {
        "name": "crm",
        "base_url": vendor.api_url,
        "allow_insecure_http": True,
        "credentials": "connected",
        "oauth": vendor.oauth_config().model_dump(),
    }
    document: dict[str, Any] = {"store": {"url": "memory://"}, "services": [service], **update}
    return Settings.model_validate(document)


def test_the_gateway_refuses_settings_that_were_not_checked() -> None:
    settings = _direct_settings(dpop={"enabled": False})
    with pytest.raises(ConfigurationError, match=r"needs public_origin"):
        build_gateway(settings, store=MemoryStore())


def test_the_gateway_needs_the_client_secret_and_a_store_for_connections() -> None:
    settings = _direct_settings(public_origin="http://127.0.0.1:8080")
    kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    settings = settings.model_copy(update={"secret_values": SecretValues(kek=SecretStr(kek))})
    with pytest.raises(SettingsError, match=r"^AGENTGUARD_OAUTH_CRM_CLIENT_SECRET: "):
        build_gateway(settings, store=MemoryStore())
    with pytest.raises(ConfigurationError, match=r"a store that keeps connected accounts"):
        connect_flows(settings, object(), clock=None, audit=None)


@pytest.mark.parametrize("path", ["/connect", "/crm", "/oauth"])
def test_no_redirect_is_built_from_the_host_header(running: Running, path: str) -> None:
    # Starlette's trailing-slash redirect answered 307 with Location http://evil.example/...
    answer = httpx.get(running.origin + path, headers={"Host": "evil.example"}, timeout=10)
    assert answer.status_code == 404, (answer.status_code, answer.headers)
    assert "location" not in answer.headers
