"""Faults under load, against ``agentguard serve`` on loopback: each fails closed and recovers.

- the store goes away mid-load (PostgreSQL backends terminated): 503, never a 500 and never a
  200 without its audit event; 200 again without a restart;
- the vendor goes away (502 naming the service) and comes back (200), or is slow (504), and
  the gateway's open file descriptors and threads come back to where they were;
- the audit store fails: 503 ``audit_unavailable`` (in-process);
- the agent's clock is 10 minutes off: a clear ``dpop_iat_out_of_window`` refusal.

These run in every ``nox -s tests``; each takes a few seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from agentguard import CredentialOwner, StoredCredential
from agentguard.audit import AuditEntry, AuditEvent
from agentguard.client import AgentAuth
from agentguard.config import load_settings
from agentguard.errors import Reason, describe
from agentguard.gateway import build_gateway
from agentguard.storage import SQLiteStore
from tests.backends.services import drop_schema, postgres_dsn, random_name
from tests.load.conftest import (
    SERVICE,
    Deployment,
    LoadResult,
    Upstream,
    deployment,
    drive,
    proc_status,
    settle,
    sqlite_url,
    upstream_app,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

AGENTS = 16
FD_SLACK = 8
THREAD_SLACK = 2


def _load(
    gateway: Deployment,
    seconds: float,
    *,
    path: str = f"/{SERVICE}/contacts",
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> LoadResult:
    async def run() -> LoadResult:
        return await drive(
            gateway.origin,
            gateway.keys,
            agents=AGENTS,
            seconds=seconds,
            max_requests=20_000,
            path=path,
            during=during,
        )

    return anyio.run(run)


def _all_ok(result: LoadResult) -> None:
    assert not result.errors, result.errors
    assert result.statuses == {200: result.sent}, (result.statuses, result.samples)


def _names_the_service(body: dict[str, object], reason: Reason) -> None:
    assert body["error"] == "bad_gateway", body
    assert body["service"] == SERVICE, body
    assert body["reason"] == reason.value, body
    assert body["error_description"] == f"{SERVICE}: {describe(reason)}", body


def test_store_down_mid_load_fails_closed_and_recovers(tmp_path: Path, upstream: Upstream) -> None:
    dsn = anyio.run(postgres_dsn)
    schema = random_name("agentguard_fault")
    url = f"{dsn}?schema={schema}&application_name={schema}"  # names this gateway's connections
    cuts: list[int] = []

    async def cut_the_store() -> None:
        await anyio.sleep(1.0)
        admin = await asyncpg.connect(dsn)
        try:
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    schema,
                )
                cuts.append(int(killed))
                await anyio.sleep(0.05)
        finally:
            await admin.close()

    try:
        with deployment(tmp_path, url, upstream, access_log=False) as gateway:
            result = _load(gateway, 2.5, during=cut_the_store)  # the cut: 1.0 s to 2.5 s
            recovery = _until_all_ok(gateway)
            gateway.stop()
        allows = gateway.audited_allows()
    finally:
        anyio.run(drop_schema, dsn, schema)

    print(
        f"\nstore down: statuses {dict(result.statuses)}, transport errors "
        f"{dict(result.errors)}, audited allows {allows}, connections cut {sum(cuts)}, "
        f"recovery batches {[dict(batch.statuses) for batch in recovery]}"
    )
    assert sum(cuts) > 0, "no connection of the gateway was found to terminate"
    assert result.statuses[503] > 0, "terminating the store's connections refused nothing"
    refusal = result.samples[503]
    assert refusal["error"] == "temporarily_unavailable", refusal
    assert refusal["reason"] in ("store_unavailable", "audit_unavailable"), refusal
    # recovered without a restart: _until_all_ok saw a batch of only 200s before its deadline
    assert recovery[-1].statuses == {200: recovery[-1].sent}
    # fail closed with a 503, never a 500 or a dropped connection, during the cut and after
    for batch in (result, *recovery):
        assert not batch.errors, batch.errors
        assert set(batch.statuses) <= {200, 503}, (batch.statuses, batch.samples)
    # every 200 was audited (an allow whose request then failed may add to the count)
    answered = sum(batch.statuses[200] for batch in (result, *recovery))
    failed = sum(batch.sent for batch in (result, *recovery)) - answered
    assert answered <= allows <= answered + failed


def _until_all_ok(gateway: Deployment, *, deadline: float = 30.0) -> list[LoadResult]:
    """Short loads until one is answered, all 200 (no transport error); fail at ``deadline``.

    Every batch is returned, the all-200 one last, so a caller can check what came before it.
    """
    batches: list[LoadResult] = []
    give_up = time.monotonic() + deadline
    while True:
        batch = _load(gateway, 0.5)
        batches.append(batch)
        if batch.completed and not batch.errors and batch.statuses == {200: batch.sent}:
            return batches
        assert time.monotonic() < give_up, (
            f"no all-200 batch within {deadline} s: {[dict(b.statuses) for b in batches]}"
        )


def test_upstream_down_is_502_and_back_is_200_without_leaks(
    tmp_path: Path, upstream: Upstream
) -> None:
    with deployment(tmp_path, sqlite_url(tmp_path), upstream, access_log=False) as gateway:
        _all_ok(_load(gateway, 1.5))
        baseline = proc_status(gateway.pid)
        for _ in range(3):
            upstream.stop()
            down = _load(gateway, 0.8)
            assert not down.errors, down.errors
            assert set(down.statuses) == {502}, (down.statuses, down.samples)
            _names_the_service(down.samples[502], Reason.UPSTREAM_UNREACHABLE)
            upstream.start()
            _all_ok(_load(gateway, 0.8))
        after = settle(gateway.pid, baseline, fds=FD_SLACK, threads=THREAD_SLACK)
        print(f"\nupstream down: before {baseline}, after {after}")
        gateway.stop()
    assert after["fds"] <= baseline["fds"] + FD_SLACK, (baseline, after)
    assert after["Threads"] <= baseline["Threads"] + THREAD_SLACK, (baseline, after)
    gateway.audited_allows()  # the log still verifies


def test_slow_upstream_is_504_without_leaks(tmp_path: Path, upstream: Upstream) -> None:
    root = sqlite_url(tmp_path)
    with deployment(tmp_path, root, upstream, read_timeout=1, access_log=False) as gateway:
        _all_ok(_load(gateway, 1.5))
        baseline = proc_status(gateway.pid)
        slow = _load(gateway, 2.5, path=f"/{SERVICE}/slow")
        assert not slow.errors, slow.errors
        assert set(slow.statuses) == {504}, (slow.statuses, slow.samples)
        assert slow.percentile(0.5) < 2.0  # the read timeout (1 s), not the vendor's 3 s
        timeout = slow.samples[504]
        assert timeout["error"] == "gateway_timeout", timeout
        assert timeout["service"] == SERVICE, timeout
        assert timeout["reason"] == Reason.UPSTREAM_TIMEOUT.value, timeout
        assert timeout["error_description"] == f"{SERVICE}: {describe(Reason.UPSTREAM_TIMEOUT)}"
        _all_ok(_load(gateway, 1.0))
        after = settle(gateway.pid, baseline, fds=FD_SLACK, threads=THREAD_SLACK)
        print(f"\nslow upstream: before {baseline}, after {after}")
        gateway.stop()
    assert after["fds"] <= baseline["fds"] + FD_SLACK, (baseline, after)
    assert after["Threads"] <= baseline["Threads"] + THREAD_SLACK, (baseline, after)
    gateway.audited_allows()


class FailingAuditStore(SQLiteStore):
    """A SQLite store whose audit appends fail while ``failing`` is set (a full disk, say).

    With ``drop_on_credential_read`` the store goes away at the credential read instead: that
    read fails, and so does every append after it (the connection is gone for everything).
    """

    failing = False
    drop_on_credential_read = False

    async def append(self, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        if self.failing:
            raise OSError("disk full")
        return await super().append(events)

    async def get_credential(
        self, service: str, owner_kind: CredentialOwner, owner_id: str
    ) -> StoredCredential | None:
        if self.drop_on_credential_read:
            self.failing = True
            raise OSError("connection lost")
        return await super().get_credential(service, owner_kind, owner_id)


def _in_process(
    tmp_path: Path, faults: Sequence[str | None]
) -> tuple[list[httpx.Response], Deployment]:
    """The gateway in-process over a :class:`FailingAuditStore`: one request per fault.

    A fault is ``None`` (all works), ``"audit"`` (appends fail) or ``"store"`` (the store goes
    at the credential read); the store works again after each request.
    """
    unused = Upstream(tmp_path / "upstream.log")  # answered in-process below, never started
    with deployment(tmp_path, sqlite_url(tmp_path), unused, start=False) as gateway:
        settings = load_settings(gateway.config, environ={"AGENTGUARD_KEK": gateway.kek})
    store = FailingAuditStore(tmp_path / "agentguard.db")
    built = build_gateway(
        settings, store=store, transports={SERVICE: httpx.ASGITransport(app=upstream_app())}
    )
    headers = {"Authorization": f"Bearer {gateway.keys[0]}"}

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=built.app, raise_app_exceptions=False)
        responses = []
        try:
            async with httpx.AsyncClient(transport=transport, base_url=gateway.origin) as client:
                for fault in faults:
                    store.failing = fault == "audit"
                    store.drop_on_credential_read = fault == "store"
                    responses.append(await client.get(f"/{SERVICE}/contacts", headers=headers))
                    store.failing = store.drop_on_credential_read = False
        finally:
            await built.aclose()
        return responses

    return anyio.run(scenario), gateway


def _unavailable(response: httpx.Response, *reasons: Reason) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "temporarily_unavailable", body
    assert body["reason"] in [reason.value for reason in reasons], body
    assert body["error_description"] == describe(Reason(body["reason"])), body
    assert response.headers["retry-after"] == "1"


def test_failing_audit_store_fails_closed(tmp_path: Path) -> None:
    faults = [None, "audit", "audit", "audit", "audit", "audit", None]
    responses, gateway = _in_process(tmp_path, faults)
    statuses = [response.status_code for response in responses]
    assert statuses == [200, 503, 503, 503, 503, 503, 200], statuses
    for refused in responses[1:-1]:
        _unavailable(refused, Reason.AUDIT_UNAVAILABLE)
    assert gateway.audited_allows() == 2  # exactly the two answered requests


def test_store_lost_after_the_decision_is_503_not_500(tmp_path: Path) -> None:
    """The allow is recorded, then the store goes: the refusal cannot be recorded either.

    The proxy must still answer 503 (fail closed), not let the audit failure escape as a 500 or
    a dropped connection. This is what the store-down test hits now and then under load.
    """
    faults = [None, "store", None]
    responses, gateway = _in_process(tmp_path, faults)
    assert [r.status_code for r in responses] == [200, 503, 200], [r.text for r in responses]
    _unavailable(responses[1], Reason.STORE_UNAVAILABLE, Reason.AUDIT_UNAVAILABLE)
    gateway.audited_allows()


class SkewedClock:
    """The agent's wall clock, ``offset`` seconds off."""

    def __init__(self, offset: float) -> None:
        self.offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


def test_client_clock_skew_is_a_clear_dpop_error(tmp_path: Path, upstream: Upstream) -> None:
    store = sqlite_url(tmp_path)
    with deployment(tmp_path, store, upstream, users=1, bearer=False, access_log=False) as gateway:
        credentials = gateway.credentials_file(0)
        for offset in (-600, 600):
            auth = AgentAuth.from_file(credentials, clock=SkewedClock(offset))
            with httpx.Client(base_url=gateway.origin, auth=auth, trust_env=False) as client:
                refused = client.get(f"/{SERVICE}/contacts")
            assert refused.status_code == 401, refused.text
            body = refused.json()
            assert body["reason"] == "dpop_iat_out_of_window", body
            assert body["error"] == "invalid_dpop_proof", body
            # says what is wrong and by how much it may be off, not just "invalid"
            assert body["error_description"] == (
                "the DPoP proof's iat must be within 300 seconds of now"
            ), body
            challenge = refused.headers["www-authenticate"]
            assert 'DPoP realm="agentguard", error="invalid_dpop_proof"' in challenge, challenge
        auth = AgentAuth.from_file(credentials)  # the right time: accepted
        with httpx.Client(base_url=gateway.origin, auth=auth, trust_env=False) as client:
            assert client.get(f"/{SERVICE}/contacts").status_code == 200
