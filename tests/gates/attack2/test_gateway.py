"""Issue 20, second attack, over real HTTP against ``agentguard serve`` (fails on f4c042c)."""

from __future__ import annotations

import httpx

from tests.gates.attack.conftest import Gateway


def test_head_on_a_get_held_route_is_held_too(gateway: Gateway) -> None:
    """``/crm/exports`` holds GET for approval and charges it 5. A HEAD to the same target is
    neither held nor charged 5, and the proxy forwards it with the real vendor credential:
    vendors' frameworks (Rails, Django, Flask, Express, Starlette) run the GET handler for a
    HEAD and only drop the body, so the export (its side effects, its cost) happens with no
    human having approved it."""
    response = httpx.head(
        gateway.url + "/crm/exports/all", headers={"X-Api-Key": gateway.agent_key}, timeout=10
    )
    reached = [call for call in gateway.upstream() if "exports" in str(call["target"])]
    assert reached == [], (
        f"{reached[0]['method']} {reached[0]['target']} reached the vendor with no approval "
        f"(agent got {response.status_code})"
    )
    assert response.status_code == 403, response.status_code
