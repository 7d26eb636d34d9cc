"""Operator tokens: the CLI's ``--ttl`` range, and who the audit log says used or decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard import Guard
from agentguard.approvals._operators import issue_operator_token, revoke_operator_token
from agentguard.asgi._operator import OperatorApp
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.gates.attack3.support import cli, init
from tests.support.approval_records import held_call

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("ttl", ["99999999999999", "300000000000"])
def test_operators_issue_with_an_out_of_range_ttl_is_a_usage_error(
    tmp_path: Path, ttl: str
) -> None:
    """Today: an OverflowError traceback (exit 1, the code for "refused")."""
    init(tmp_path)
    done = cli(tmp_path, "operators", "issue", "--name", "ci", "--ttl", ttl)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""


async def _listener(**guard_options: Any) -> tuple[MemoryStore, FakeClock, OperatorApp]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    guard = Guard(store, clock=clock, **guard_options)
    return store, clock, OperatorApp(guard, approvals=store, operators=store)


def _client(app: OperatorApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://operator")


async def _events(store: MemoryStore, app: OperatorApp) -> list[dict[str, Any]]:
    await app.guard.audit.flush()
    return [entry.event() for entry in await store.read()]


@pytest.mark.parametrize("summaries", ["default", "off"])
async def test_a_revoked_operator_token_used_is_audited_naming_it(summaries: str) -> None:
    """A stolen operator token tried after its revocation is about a known operator: like a
    revoked agent key it deserves its own event naming the token. Today it is counted per
    source only (default), or not audited at all (``anonymous_refusals=None``, i.e.
    ``audit.refusal_summaries = false``, documented as "every refusal is its own event")."""
    options = {} if summaries == "default" else {"anonymous_refusals": None}
    store, clock, app = await _listener(**options)
    token, record = await issue_operator_token(store, "alice", clock=clock)
    assert await revoke_operator_token(store, record.id, now=clock.now())
    async with _client(app) as client:
        response = await client.get(
            "/approvals", headers={"Authorization": f"Bearer {token.reveal()}"}
        )
    assert response.status_code == 401 and response.json()["reason"] == "revoked"
    events = await _events(store, app)
    named = [event for event in events if record.id in repr(event)]
    assert named, events
    assert token.reveal() not in repr(events)


async def test_a_decision_over_the_api_names_the_operator_token_that_made_it() -> None:
    """Operator names are free text and not unique (``operators issue --name admin`` twice
    works): the ``approval.decide`` event must say which token decided, or two people sharing
    a name, or a token revoked after misuse, cannot be told apart."""
    store, clock, app = await _listener()
    _, first = await issue_operator_token(store, "admin", clock=clock)
    token, second = await issue_operator_token(store, "admin", clock=clock)
    held = await store.create_approval(held_call(clock.now()), now=clock.now())
    async with _client(app) as client:
        response = await client.post(
            f"/approvals/{held.id}/approve", headers={"Authorization": f"Bearer {token.reveal()}"}
        )
    assert response.status_code == 200, response.text
    decided = [e for e in await _events(store, app) if e["action"] == "approval.decide"]
    assert len(decided) == 1
    assert second.id in repr(decided[0]) and first.id not in repr(decided[0]), decided[0]
