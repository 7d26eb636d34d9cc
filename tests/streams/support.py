"""What the stream tests share: a guard over a store with one user and key, and waiting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from agentguard import Guard, IssuedKeys, User
from agentguard._permissions import Requirement
from agentguard._request import GuardRequest
from agentguard._stream_lease import StreamLease
from agentguard.config import StreamSettings
from agentguard.errors import RequestRefused
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user

DEADLINE = 3.0  # seconds any cut that should be prompt may take, even on a loaded machine


@dataclass
class Setup:
    clock: FakeClock
    store: Any
    guard: Guard
    user: User
    keys: IssuedKeys

    @property
    def key(self) -> str:
        return self.keys.access_key.reveal()

    async def events(self) -> list[dict[str, object]]:
        return [entry.event() for entry in await self.store.read()]

    async def cut_events(self) -> list[dict[str, object]]:
        found = []
        for event in await self.events():
            detail = event.get("detail")
            if isinstance(detail, dict) and detail.get("stream") == "cut":
                found.append(event)
        return found


async def memory_setup(
    *, clock: FakeClock | None = None, grants: str = "crm:write", **settings: Any
) -> Setup:
    clock = clock or FakeClock()
    store = MemoryStore(clock=clock)
    options = {"events": "off", "linger": 0.0, **settings}
    guard = Guard(store, clock=clock, streams=StreamSettings(**options))
    user = await make_user(store, grants=grants)
    keys = await guard.issuer.issue(user.id, "ws-1")
    return Setup(clock, store, guard, user, keys)


def request_with(key: str, method: str = "GET", path: str = "/crm/deals") -> GuardRequest:
    return GuardRequest(method, path, headers=[(b"authorization", f"Bearer {key}".encode())])


async def admitted(setup: Setup, requirement: Requirement) -> Any:
    """The Passage of a real guarded request with the setup's key."""
    return await setup.guard.admit(request_with(setup.key), requirement=requirement)


async def cut_within(lease: StreamLease, seconds: float = DEADLINE) -> RequestRefused:
    """Why ``lease`` was cut; fails the test when it is not cut within ``seconds``."""
    with anyio.fail_after(seconds):
        return await lease.wait()


async def still_live(lease: StreamLease, seconds: float = 0.3) -> None:
    """Assert ``lease`` stays uncut for ``seconds``."""
    with anyio.move_on_after(seconds):
        await lease.wait()
    assert not lease.is_cut, lease.error


async def eventually(condition: Callable[[], bool], seconds: float = DEADLINE) -> None:
    """Wait until ``condition()`` holds; fails the test after ``seconds``."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - polls registry state that has no event
            await anyio.sleep(0.01)
