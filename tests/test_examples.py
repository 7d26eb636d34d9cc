"""The examples run as documented."""

from __future__ import annotations

import httpx
import pytest

from agentguard import IssuedKeys
from examples import starlette_app

pytestmark = pytest.mark.anyio


async def test_starlette_example() -> None:
    reader = await starlette_app.issue_demo_keys("reader", "crm:read")
    writer = await starlette_app.issue_demo_keys("writer", "crm:write")
    transport = httpx.ASGITransport(app=starlette_app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example.test") as client:

        def auth(keys: IssuedKeys) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys.access_key.reveal()}"}

        added = await client.post("/crm/contacts", json={"name": "Ada"}, headers=auth(writer))
        assert added.status_code == 201
        denied = await client.post("/crm/contacts", json={"name": "Eve"}, headers=auth(reader))
        assert denied.status_code == 403
        found = await client.post("/crm/search", json={"q": "ad"}, headers=auth(writer))
        assert found.json() == {"found": ["Ada"]}
        searched = await client.post("/crm/search", json={"q": "x"}, headers=auth(reader))
        assert searched.status_code == 200  # a POST that only reads needs crm:read
        listed = await client.get("/crm/contacts", headers=auth(reader))
        assert listed.json() == {"contacts": []}  # each user sees their own
        refreshed = await client.post(
            "/oauth/token",
            data={"grant_type": "refresh_token", "refresh_token": reader.refresh_key.reveal()},
        )
        assert refreshed.status_code == 200
