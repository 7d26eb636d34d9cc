"""The pytest11 plugin's fixtures work in a user's own suite (run through pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_fixtures_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest
from agentguard import Grants

@pytest.fixture
def agentguard_grants():
    return Grants.from_scope("crm:write")
"""
    )
    pytester.makepyfile(
        """
import anyio
import pytest

def test_store_user_and_keys(agentguard_store, agentguard_user, agentguard_keys, agentguard_clock):
    assert agentguard_user.grants.to_scope() == "crm:write"
    assert agentguard_keys.access.user_id == agentguard_user.id
    found = anyio.run(agentguard_store.lookup, agentguard_keys.access.key_hash)
    assert found is not None and found.member

def test_guarded_client(agentguard_client, agentguard_keys, agentguard_clock):
    async def call(key):
        return await agentguard_client.post(
            "/crm/contacts", headers={"Authorization": f"Bearer {key}"}
        )
    response = anyio.run(call, agentguard_keys.access_key.reveal())
    assert response.status_code == 200
    assert response.json()["user"] == "user-1"
    agentguard_clock.advance(3600)
    assert anyio.run(call, agentguard_keys.access_key.reveal()).status_code == 401

def test_refresh_through_client(agentguard_client, agentguard_keys):
    async def refresh():
        key = agentguard_keys.refresh_key.reveal()
        form = {"grant_type": "refresh_token", "refresh_token": key}
        return await agentguard_client.post("/oauth/token", data=form)
    assert anyio.run(refresh).status_code == 200
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
