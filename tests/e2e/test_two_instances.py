"""Two app instances (two uvicorn processes) over one PostgreSQL schema and one Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard import IssuedKeys, KeyIssuer
from agentguard.audit import verify_log
from agentguard.dpop import DPoPKey
from agentguard.storage import PostgresStore
from agentguard.testing import make_user
from tests.backends.services import drop_schema, postgres_dsn, random_name, redis_url
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio
ORIGIN = "http://gateway.test"
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def instance(name: str, environment: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests.e2e.multi_instance_app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **environment, "AG_E2E_INSTANCE": name},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/oauth/token", timeout=1).status_code == 405:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"instance {name} did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture
async def environment() -> AsyncIterator[dict[str, str]]:
    dsn, cache_url = await postgres_dsn(), await redis_url()
    schema, prefix = random_name("agentguard_e2e"), random_name("agentguard:e2e") + ":"
    try:
        yield {
            "AG_E2E_DSN": dsn,
            "AG_E2E_SCHEMA": schema,
            "AG_E2E_REDIS": cache_url,
            "AG_E2E_PREFIX": prefix,
        }
    finally:
        await drop_schema(dsn, schema)
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(cache_url)
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
        await client.aclose()


async def call(
    url: str, keys: IssuedKeys, key: DPoPKey, proof: str | None = None
) -> httpx.Response:
    access = keys.access_key.reveal()
    proof = proof or key.proof("GET", ORIGIN + "/crm/contacts", access_key=access)
    headers = {"Authorization": f"DPoP {access}", "DPoP": proof}
    async with httpx.AsyncClient() as client:
        return await client.get(url + "/crm/contacts", headers=headers)


async def test_two_instances_share_every_decision(environment: dict[str, str]) -> None:
    store = PostgresStore(environment["AG_E2E_DSN"], schema=environment["AG_E2E_SCHEMA"])
    async with store:
        user = await make_user(store, grants="crm:read")
        issuer = KeyIssuer(store, clock=store.clock)
        key = DPoPKey.generate()
        first = await issuer.issue(user.id, "ws-1", jkt=key.thumbprint)
        second = await issuer.issue(user.id, "ws-1", jkt=key.thumbprint)

    with instance("A", environment) as a, instance("B", environment) as b:
        # a proof used on A is refused on B (one Redis replay cache)
        proof = key.proof("GET", ORIGIN + "/crm/contacts", access_key=first.access_key.reveal())
        assert (await call(a, first, key, proof)).json()["instance"] == "A"
        replayed = await call(b, first, key, proof)
        assert (replayed.status_code, replayed.json()["reason"]) == (401, "dpop_replayed")

        # a key revoked through A fails on B at the very next call
        assert (await call(b, second, key)).status_code == 200
        async with httpx.AsyncClient() as client:
            revoked = await client.post(
                a + "/oauth/revoke", data={"token": second.refresh_key.reveal()}
            )
        assert revoked.status_code == 200
        after = await call(b, second, key)
        assert (after.status_code, after.json()["reason"]) == (401, "revoked")

        # concurrent refresh of one key on A and B: exactly one winner
        results: list[int] = []

        async def refresh(url: str) -> None:
            proof = key.proof("POST", ORIGIN + "/oauth/token")
            form = {"grant_type": "refresh_token", "refresh_token": first.refresh_key.reveal()}
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    url + "/oauth/token", data=form, headers={"DPoP": proof}
                )
            results.append(response.status_code)

        async with anyio.create_task_group() as group:
            group.start_soon(refresh, a)
            group.start_soon(refresh, b)
        assert sorted(results) == [200, 400]

    # both instances appended to one linear chain that verifies
    async with PostgresStore(
        environment["AG_E2E_DSN"], schema=environment["AG_E2E_SCHEMA"]
    ) as check:
        entries = await check.read()
    report = verify_log(entries)
    assert report.ok, [finding.line() for finding in report.findings]
    instances = {entry.event()["instance"] for entry in entries}
    assert {"A", "B"} <= instances
