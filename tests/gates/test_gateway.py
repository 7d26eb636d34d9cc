"""The gateway from its settings: a service route holding DELETE for approval, a per-method
cost, a budget and a rate limit, end to end over real sockets (uvicorn, loopback upstream)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from pydantic import SecretStr

from agentguard import CredentialOwner, CredentialScope
from agentguard.config import SecretValues, Settings
from agentguard.credentials import CredentialVault
from agentguard.gateway import Gateway, build_gateway
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.conftest import CANARY
from tests.gates.support import Party, Recorder, approve, issue, populate
from tests.support.servers import LoopbackServer, free_port


@dataclass
class Served:
    gateway: Gateway
    upstream: Recorder
    origin: str
    alice: Party
    bob: Party

    def call(self, method: str, path: str, party: Party | None = None, approval: str | None = None,
             content: bytes = b"") -> httpx.Response:  # fmt: skip
        headers = (party or self.alice).auth(approval)
        return httpx.request(
            method, self.origin + path, headers=headers, content=content, timeout=10
        )


def _settings(origin: str, upstream: str) -> Settings:
    built = Settings.model_validate(
        {
            "public_origin": origin,
            "store": {"url": "memory://"},
            "services": [
                {
                    "name": "crm",
                    "base_url": upstream,
                    "allow_insecure_http": True,
                    "routes": [{"path": "/", "approval": ["DELETE"], "cost": {"POST": 5}}],
                }
            ],
            "approvals": {"ttl": 600, "max_body": 2048},
            "budgets": [{"name": "crm-daily", "service": "crm", "limit": 12, "window": 86400}],
            "rate_limits": [
                {"name": "crm-rate", "service": "crm", "rate": 1, "period": 60, "burst": 9}
            ],
        }
    )
    kek = "kek-1:" + base64.urlsafe_b64encode(os.urandom(32)).decode()
    return built.model_copy(update={"secret_values": SecretValues(kek=SecretStr(kek))})


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    upstream = Recorder()
    with LoopbackServer(upstream) as upstream_server:
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        gateway = build_gateway(_settings(origin, upstream_server.url), store=store, clock=clock)

        async def seed() -> tuple[Party, Party]:
            await populate(store)
            vault = CredentialVault(store, gateway.settings.keyring())
            for user in ("alice", "bob"):
                await vault.put(
                    "crm", CredentialOwner.USER, user, CANARY, scope=CredentialScope.USER
                )
            return await issue(gateway.guard, "alice"), await issue(gateway.guard, "bob")

        alice, bob = anyio.run(seed)
        with LoopbackServer(gateway.app, lifespan="on", port=port):
            yield Served(gateway, upstream, origin, alice, bob)


def test_a_held_delete_round_trip_through_the_gateway(served: Served) -> None:
    held = served.call("DELETE", "/crm/contacts/7")
    assert held.status_code == 403, held.text
    document = held.json()
    assert (document["error"], document["reason"]) == ("approval_required", "approval_required")
    approval_id = document["approval_id"]
    assert document["approval_uri"] == f"{served.origin}/oauth/approvals/{approval_id}"
    assert set(document) == {
        "error", "error_description", "reason", "approval_id", "expires_at", "approval_uri",
    }  # fmt: skip
    assert served.upstream.calls == []

    def poll(party: Party) -> httpx.Response:
        return httpx.get(document["approval_uri"], headers=party.auth(), timeout=10)

    assert poll(served.alice).json()["state"] == "pending"
    assert poll(served.bob).status_code == 404  # another user's approval does not exist for bob
    anyio.run(approve, served.gateway.guard, approval_id)
    assert poll(served.alice).json()["state"] == "approved"
    ran = served.call("DELETE", "/crm/contacts/7", approval=approval_id)
    assert ran.status_code == 200, ran.text
    assert [(c.method, c.path, c.body) for c in served.upstream.calls] == [
        ("DELETE", "/contacts/7", b"")
    ]
    assert poll(served.alice).json()["state"] == "consumed"
    used = served.call("DELETE", "/crm/contacts/7", approval=approval_id)
    assert used.json()["reason"] == "approval_used"
    over = served.call("DELETE", "/crm/contacts/8", content=b"x" * 2049)
    assert over.status_code == 413
    assert len(served.upstream.calls) == 1


def test_costs_budget_and_rate_limit_from_settings(served: Served) -> None:
    bob = served.bob  # his own budget and bucket; the budget is per user, the rate per key
    statuses = [served.call(m, "/crm/deals", party=bob).status_code for m in ("POST", "POST")]
    assert statuses == [200, 200]  # 10 of 12 spent
    spent = served.call("POST", "/crm/deals", party=bob)
    assert spent.status_code == 429 and spent.json()["reason"] == "budget_exhausted"
    assert int(spent.headers["retry-after"]) == 86400
    assert [served.call("GET", "/crm/deals", party=bob).status_code for _ in range(3)] == [
        200, 200, 429,
    ]  # fmt: skip
    # 6 tokens of the burst of 9 taken so far; then the bucket refuses, before the budget
    reasons = [served.call("GET", "/crm/deals", party=bob).json()["reason"] for _ in range(4)]
    assert reasons == ["budget_exhausted"] * 3 + ["rate_limited"]
    limited = served.call("GET", "/crm/deals", party=bob)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert CANARY not in limited.text and bob.key not in limited.text
