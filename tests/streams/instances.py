"""Two guards over one shared database, as two app instances: A writes, B holds streams."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from agentguard import Guard, IssuedKeys, User
from agentguard._model import AccountStatus, Principal
from agentguard._stream_lease import StreamLease
from agentguard.errors import RequestRefused
from tests.streams.support import DEADLINE, eventually


@dataclass
class Pair:
    a: Guard
    b: Guard
    user: User
    keys: IssuedKeys

    @property
    def key(self) -> str:
        return self.keys.access_key.reveal()

    async def principal(self) -> Principal:
        """The stream's principal, resolved on B as B's request would."""
        return await self.b.resolve(self.key)

    async def listening(self) -> None:
        """Start B's registry and wait until its feed delivers events."""
        await self.b.streams.start()
        await eventually(self.b.streams.listening, DEADLINE * 2)


async def revoke_key(pair: Pair) -> None:
    await pair.a.issuer.revoke(key_id=pair.keys.access.id)


async def revoke_family(pair: Pair) -> None:
    await pair.a.issuer.revoke(family_id=pair.keys.access.family_id)


async def disable_user(pair: Pair) -> None:
    await pair.a.store.put_user(pair.user.model_copy(update={"enabled": False}))


async def remove_membership(pair: Pair) -> None:
    await pair.a.store.set_membership(pair.user.id, "ws-1", member=False)


async def close_account(pair: Pair) -> None:
    account = await pair.a.store.get_account(pair.user.account_id)
    assert account is not None
    await pair.a.store.put_account(account.model_copy(update={"status": AccountStatus.CLOSED}))


CHANGES: dict[str, tuple[Callable[[Pair], Awaitable[None]], str]] = {
    "revoke_key": (revoke_key, "revoked"),
    "revoke_family": (revoke_family, "revoked"),
    "disable_user": (disable_user, "user_disabled"),
    "remove_membership": (remove_membership, "not_a_member"),
    "close_account": (close_account, "account_closed"),
}


async def cut_after(
    pair: Pair, change: Callable[[Pair], Awaitable[None]], deadline: float = DEADLINE
) -> tuple[RequestRefused, float]:
    """Hold a stream on B, make ``change`` through A; the refusal and seconds to the cut."""
    principal = await pair.principal()
    lease: StreamLease
    async with pair.b.streams.hold(principal, key=pair.key) as lease:
        started = time.perf_counter()
        await change(pair)
        with anyio.fail_after(deadline):
            error = await lease.wait()
        return error, time.perf_counter() - started


async def close_all(*resources: Any) -> None:
    for resource in resources:
        if isinstance(resource, Guard):
            await resource.streams.aclose()
        else:
            await resource.close()
