"""Background renewal: renews an idle agent ahead of expiry, through the same single flight."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime

import anyio
import pytest

from agentguard.client import AgentAuth, Renewer
from agentguard.client._renewal import Flight
from tests.client.conftest import LIFETIME, Runtime, Server, credentials_for

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - the renewer signals through plain state
            await anyio.sleep(0.005)


class CountingClock:
    """The runtime's clock, counting how often it is read: each renewer check reads it."""

    def __init__(self, auth: AgentAuth) -> None:
        self.inner = auth.clock
        self.reads = 0
        auth.clock = self

    def now(self) -> datetime:
        self.reads += 1
        return self.inner.now()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def checks(self, more: int) -> None:
        """Wait (deadline 5 s) until the clock has been read ``more`` more times."""
        target = self.reads + more
        await _until(lambda: self.reads >= target)


async def test_task_renews_an_idle_agent_ahead_of_expiry(runtime: Runtime) -> None:
    auth = runtime.auth()
    first = auth.credentials
    clock = CountingClock(auth)
    async with Renewer(auth, poll_interval=0.01, rng=random.Random(7)) as renewer:
        await clock.checks(3)  # the renewer has looked at the clock, and more than once
        assert renewer.renewals == 0  # not due yet
        assert runtime.recorder.token_calls == 0
        runtime.clock.advance(0.8 * LIFETIME)
        await _until(lambda: renewer.renewals == 1)
        renewed = auth.credentials
        assert renewed.access_key != first.access_key
        assert renewed.expires_at > first.expires_at
        runtime.clock.advance(0.8 * LIFETIME)
        await _until(lambda: renewer.renewals == 2)
    assert runtime.recorder.token_calls == 2
    async with runtime.client(auth) as client:  # the idle agent's next call just works
        assert (await client.get("/crm/contacts")).status_code == 200
    assert 401 not in runtime.recorder.statuses


async def test_renewer_and_requests_never_refresh_twice(runtime: Runtime) -> None:
    auth = runtime.auth()
    clock = CountingClock(auth)
    async with runtime.client(auth) as client, Renewer(auth, poll_interval=0.001):
        for _ in range(5):
            runtime.clock.advance(0.45 * LIFETIME)
            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(client.get, "/crm/contacts")
            await clock.checks(2)  # the renewer gets its turn between the bursts
    events = [e.event() for e in await runtime.store.read()]
    assert not [e for e in events if e["action"] == "key.reuse_detected"]
    assert 401 not in runtime.recorder.statuses
    assert runtime.recorder.statuses.count(200) >= 50
    # 2.25 lifetimes went by without a 401, so the keys were renewed at least twice
    assert auth.refreshes >= 2
    assert runtime.recorder.token_calls == auth.refreshes


async def test_renewer_stops_when_the_user_is_disabled(runtime: Runtime) -> None:
    auth = runtime.auth()
    await runtime.disable_user()
    runtime.clock.advance(0.9 * LIFETIME)
    async with Renewer(auth, poll_interval=0.01) as renewer:
        await _until(lambda: renewer.error is not None)
    assert renewer.error is not None and renewer.error.reason == "user_disabled"
    assert runtime.recorder.token_calls == 1


def test_thread_renews_on_a_real_socket(server: Server) -> None:
    from agentguard.client import AgentAuth
    from agentguard.dpop import DPoPKey
    from agentguard.testing import make_user

    user = anyio.run(lambda: make_user(server.store, grants="crm:read"))
    key = DPoPKey.generate()
    keys = anyio.run(lambda: server.guard.issuer.issue(user.id, "ws-1", jkt=key.thumbprint))
    auth = AgentAuth(credentials_for(keys, key, server.url + "/oauth/token"), clock=server.clock)
    with Renewer(auth, poll_interval=0.01) as renewer:
        server.clock.advance(0.85 * LIFETIME)
        deadline = time.monotonic() + 5
        while renewer.renewals == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert renewer.renewals == 1
    assert server.recorder.token_calls == 1


def test_flight_wakes_waiting_threads() -> None:
    import threading

    flight = Flight()
    woke: list[bool] = []

    def wait() -> None:
        flight.wait_sync()
        woke.append(True)

    waiter = threading.Thread(target=wait)
    waiter.start()
    flight.finish()
    waiter.join(timeout=5)
    assert woke == [True] and flight.done


async def test_jitter_must_leave_a_positive_renewal_point(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="jitter"):
        Renewer(runtime.auth(), jitter=0.9)
