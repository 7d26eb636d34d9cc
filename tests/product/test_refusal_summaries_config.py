"""``[audit] refusal_*``: the gateway counts refusals that name no one, as configured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentguard import KeyKind, generate_key
from agentguard.config import load_settings
from agentguard.gateway import build_gateway
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


async def test_junk_dpop_proofs_at_the_token_endpoint_are_counted_a_real_key_is_named(
    tmp_path: Path,
) -> None:
    path = _settings(tmp_path, "").read_text().replace("enabled = false", "enabled = true")
    (tmp_path / "agentguard.toml").write_text(path)
    gateway = build_gateway(load_settings(tmp_path / "agentguard.toml", environ=ENV))
    from agentguard.testing import make_user

    user = await make_user(gateway.store)
    issued = await gateway.guard.issuer.issue(user.id, "ws-1")
    transport = httpx.ASGITransport(app=gateway.app, client=("10.0.0.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as client:
        for n in range(FLOOD):
            key = generate_key(KeyKind.REFRESH).reveal() if n % 2 else "junk"
            form = {"grant_type": "refresh_token", "refresh_token": key}
            answer = await client.post("/oauth/token", data=form, headers={"DPoP": "x.y.z"})
            assert answer.json()["error"] == "invalid_dpop_proof"
        form = {"grant_type": "refresh_token", "refresh_token": issued.refresh_key.reveal()}
        answer = await client.post("/oauth/token", data=form, headers={"DPoP": "x.y.z"})
        assert answer.json()["error"] == "invalid_dpop_proof"
    await gateway.aclose()
    events = [entry.event() for entry in await gateway.guard.audit.store.read()]
    named = [e for e in events if e["action"] == "key.refresh"]
    assert len(named) == 1 and named[0]["actor"]["key_id"] == issued.refresh.id  # type: ignore[index]
    summaries = [e for e in events if e["action"] == "guard.refusal_summary"]
    assert sum(e["detail"]["count"] for e in summaries) == FLOOD  # type: ignore[index]
    assert len(events) == 1 + 1 + len(summaries) and len(summaries) <= 2  # key.issue, the named one


async def test_refusals_about_a_real_key_name_it_and_garbage_is_counted(tmp_path: Path) -> None:
    from agentguard.testing import make_user

    gateway = build_gateway(load_settings(_settings(tmp_path, ""), environ=ENV))
    user = await make_user(gateway.store, grants="crm:read")
    issued = await gateway.guard.issuer.issue(user.id, "ws-1")
    real = issued.access_key.reveal()
    garbage = generate_key(KeyKind.ACCESS).reveal()  # well-formed, in no store
    transport = httpx.ASGITransport(app=gateway.app, client=("10.0.0.5", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as client:
        scope = await client.post("/crm/contacts", headers={"Authorization": f"Bearer {real}"})
        assert scope.status_code == 403  # insufficient_scope: about this key
        for key in (real, garbage):  # refused before any key is resolved
            twice = [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")]
            assert (await client.get("/crm/contacts", headers=twice)).status_code == 400
            ambiguous = await client.get(
                "/crm/a/%2e%2e/contacts", headers={"Authorization": f"Bearer {key}"}
            )
            assert ambiguous.status_code == 400
    await gateway.aclose()
    events = [entry.event() for entry in await gateway.guard.audit.store.read()]
    decisions = [e for e in events if e["action"] == "guard.decision"]
    assert [(e["reason"], e["actor"]["key_id"]) for e in decisions] == [  # type: ignore[index]
        ("insufficient_scope", issued.access.id),
        ("malformed_request", issued.access.id),
        ("malformed_request", issued.access.id),
    ]
    assert decisions[0]["actor"]["user"] == user.id  # type: ignore[index]
    counted = [e for e in events if e["action"] == "guard.refusal_summary"]
    assert sum(e["detail"]["count"] for e in counted) == 2  # type: ignore[index]


async def test_a_real_key_anywhere_in_a_refused_request_is_named(tmp_path: Path) -> None:
    from agentguard.testing import make_user

    gateway = build_gateway(load_settings(_settings(tmp_path, ""), environ=ENV))
    user = await make_user(gateway.store, grants="crm:read")
    issued = await gateway.guard.issuer.issue(user.id, "ws-1")
    real = issued.access_key.reveal()
    junk = "ag_at_" + "x" * 49  # the right shape, a wrong checksum: no lookup spent on it
    attempts: list[list[tuple[str, str]]] = [
        [("Authorization", f"Token {real}")],  # unsupported_scheme
        [("X-Api-Key", real)],  # missing_credentials: not where this service takes its key
        [("X-Junk", " ".join([junk] * 6)), ("Authorization", f"Bearer {real}")] * 2,
    ]
    transport = httpx.ASGITransport(app=gateway.app, client=("10.0.0.6", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.example") as client:
        for headers in attempts:
            assert (await client.get("/crm/contacts", headers=headers)).status_code in (400, 401)
    await gateway.aclose()
    events = [entry.event() for entry in await gateway.guard.audit.store.read()]
    decisions = [e for e in events if e["action"] == "guard.decision"]
    assert [e["actor"]["key_id"] for e in decisions] == [issued.access.id] * 3  # type: ignore[index]
    assert not [e for e in events if e["action"] == "guard.refusal_summary"]
