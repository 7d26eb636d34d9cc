"""``[audit] refusal_*``: the gateway counts refusals that name no one, as configured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentguard.config import load_settings
from agentguard.gateway import build_gateway
from agentguard.keys import generate_key
from agentguard.model import KeyKind
from tests.product.conftest import new_kek

ENV = {"AGENTGUARD_KEK": new_kek()}
FLOOD = 200

pytestmark = pytest.mark.anyio


def _settings(tmp_path: Path, audit: str) -> Path:
    path = tmp_path / "agentguard.toml"
    path.write_text(
        'public_origin = "https://gw.example"\n[store]\nurl = "memory://"\n'
        f"[dpop]\nenabled = false\n[audit]\n{audit}\n"
        '[[services]]\nname = "crm"\nbase_url = "https://api.crm.example"\n'
    )
    return path


async def _flood(tmp_path: Path, audit: str, environ: dict[str, str] | None = None) -> list[str]:
    """FLOOD requests with unknown and malformed keys from two addresses; the events written."""
    gateway = build_gateway(load_settings(_settings(tmp_path, audit), environ=environ or ENV))
    for n in range(FLOOD):
        key = generate_key(KeyKind.ACCESS).reveal() if (n // 2) % 2 else "ag_at_garbage"
        transport = httpx.ASGITransport(app=gateway.app, client=(f"10.0.0.{n % 2}", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as c:
            answer = await c.get("/crm/contacts", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 401
    await gateway.aclose()  # shutdown flushes the open interval
    return [str(entry.event()["action"]) for entry in await gateway.guard.audit.store.read()]


async def test_by_default_a_flood_that_names_no_one_is_counted_per_source(tmp_path: Path) -> None:
    actions = await _flood(tmp_path, "")
    summaries = [action for action in actions if action == "guard.refusal_summary"]
    # two sources x two reasons (unknown key, malformed key): four counted events in all
    assert len(summaries) == 4 and len(actions) == 4, actions


async def test_refusal_summaries_off_writes_one_event_per_refusal(tmp_path: Path) -> None:
    actions = await _flood(tmp_path, "refusal_summaries = false")
    assert len(actions) == FLOOD and "guard.refusal_summary" not in actions


async def test_the_environment_turns_summaries_off(tmp_path: Path) -> None:
    environ = {**ENV, "AGENTGUARD_AUDIT_REFUSAL_SUMMARIES": "false"}
    actions = await _flood(tmp_path, "", environ)
    assert len(actions) == FLOOD


async def test_unknown_refresh_keys_at_the_token_endpoint_are_counted_too(tmp_path: Path) -> None:
    gateway = build_gateway(load_settings(_settings(tmp_path, ""), environ=ENV))
    transport = httpx.ASGITransport(app=gateway.app, client=("10.0.0.9", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as client:
        for n in range(FLOOD):
            key = generate_key(KeyKind.REFRESH).reveal() if n % 2 else "ag_rt_garbage"
            form = {"grant_type": "refresh_token", "refresh_token": key}
            answer = await client.post("/oauth/token", data=form)
            assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    await gateway.aclose()
    events = [entry.event() for entry in await gateway.guard.audit.store.read()]
    counted = {
        (event["reason"], event["detail"]["source"], event["detail"]["count"])  # type: ignore[index]
        for event in events
    }
    assert counted == {
        ("unknown_key", "10.0.0.9", FLOOD // 2),
        ("malformed_key", "10.0.0.9", FLOOD // 2),
    }
