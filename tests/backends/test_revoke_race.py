"""Revocation wins against a thief rotating in a loop through another store instance.

Two store instances share one database (one SQLite file; one PostgreSQL schema, two pools). A
"thief" refreshes a family in a loop through instance 2 while instance 1 revokes the family,
or the user. Once ``revoke()`` has returned, every key the thief ever got, and any it gets
later, must fail to resolve on both instances and fail to rotate. Many trials per test, each
revoking at a different point of the thief's loop, so the revoke lands on every step of a
rotation (before its lookup, between lookup and rotate, during the rotate statement).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from agentguard import IssuedKeys, KeyIssuer, KeyResolver
from agentguard.errors import InvalidGrant, InvalidToken, Reason
from agentguard.storage import PostgresStore, SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import seed_directory
from tests.backends.services import temporary_schema

pytestmark = pytest.mark.anyio

TRIALS = 40
"""Trials per backend and mode; ``AG_RACE_TRIALS`` in the environment overrides it."""

_MORE_AFTER_REVOKE = 3  # rotations a thief may still win after revoke before we stop it


def _trials() -> int:
    import os

    return int(os.environ.get("AG_RACE_TRIALS", TRIALS))


@pytest.fixture(params=["sqlite", "postgres"])
async def instances(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[tuple[Any, Any]]:
    """Two independent store instances on one database."""
    if request.param == "sqlite":
        path = tmp_path / "agentguard.db"
        async with (
            SQLiteStore(path, clock=clock) as first,
            SQLiteStore(path, clock=clock) as second,
        ):
            yield first, second
        return
    async with (
        temporary_schema() as (dsn, schema),
        PostgresStore(dsn, clock=clock, schema=schema) as first,
        PostgresStore(dsn, clock=clock, schema=schema) as second,
    ):
        yield first, second


class Announcing:
    """Store instance 2 as the thief uses it: announces each lookup and rotate as it starts."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.started: list[str] = []
        self.aim: tuple[str, int, anyio.Event] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _start(self, step: str) -> None:
        self.started.append(step)
        if self.aim is not None and self.aim[:2] == (step, self.started.count(step)):
            self.aim[2].set()

    async def lookup(self, key_hash: bytes) -> Any:
        self._start("lookup")
        return await self._store.lookup(key_hash)

    async def rotate(self, used_id: str, new: Any, *, now: Any) -> bool:
        self._start("rotate")
        won: bool = await self._store.rotate(used_id, new, now=now)
        return won


class Race:
    """One revoker (instance 1) against one thief (instance 2)."""

    def __init__(self, first: Any, second: Any, clock: FakeClock) -> None:
        self.announcing = Announcing(second)
        self.revoker = KeyIssuer(first, clock=clock)
        self.thief = KeyIssuer(self.announcing, clock=clock)
        self.resolvers = (KeyResolver(first, clock), KeyResolver(second, clock))
        self.issuers = (self.revoker, KeyIssuer(second, clock=clock))

    async def trial(self, mode: str, rng: random.Random) -> int:
        """Run one race; returns how many keys the thief got after revoke had returned."""
        start = await self.revoker.issue("u1", "w1")
        # Issued after every earlier revocation of the user: a new family, unaffected.
        await self.resolvers[1].resolve(start.access_key.reveal())
        got: list[IssuedKeys] = [start]
        revoked_when: list[int] = []
        stopped: list[InvalidGrant] = []
        # Aim at one step of one rotation: the n-th lookup or rotate the thief starts, then a
        # few scheduler ticks more, so trials spread over the whole window.
        aimed = anyio.Event()
        self.announcing.started.clear()
        self.announcing.aim = (rng.choice(("lookup", "rotate")), rng.randrange(1, 4), aimed)

        async def thief() -> None:
            current = start
            try:
                while not revoked_when or len(got) < revoked_when[0] + _MORE_AFTER_REVOKE:
                    try:
                        current = await self.thief.refresh(current.refresh_key.reveal())
                    except InvalidGrant as error:
                        stopped.append(error)
                        return
                    got.append(current)
            finally:
                aimed.set()

        async def revoker() -> None:
            with anyio.fail_after(10):
                await aimed.wait()
            for _ in range(rng.randrange(4)):
                await anyio.lowlevel.checkpoint()
            if mode == "family":
                await self.revoker.revoke(family_id=start.access.family_id)
            else:
                await self.revoker.revoke(user_id="u1")
            revoked_when.append(len(got))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(thief)
                group.start_soon(revoker)
        await self.assert_dead(got)
        # The thief stopped because its key was revoked, not on a reuse alarm of its own.
        assert [error.reason for error in stopped] == [Reason.REVOKED]
        return len(got) - revoked_when[0]

    async def assert_dead(self, got: list[IssuedKeys]) -> None:
        """No access key resolves and no refresh key rotates, on either instance.

        Every resolution first, then refreshes newest first: refreshing a used key is reuse,
        which revokes the family again and would hide a survivor checked after it.
        """
        for keys in got:
            for resolver in self.resolvers:
                with pytest.raises(InvalidToken):
                    await resolver.resolve(keys.access_key.reveal())
        for keys in reversed(got):
            for issuer in self.issuers:
                with pytest.raises(InvalidGrant):
                    await issuer.refresh(keys.refresh_key.reveal())


@pytest.mark.parametrize("mode", ["family", "user"])
async def test_no_key_survives_revocation_racing_rotation(
    instances: tuple[Any, Any], clock: FakeClock, mode: str
) -> None:
    first, second = instances
    await seed_directory(first)
    race = Race(first, second, clock)
    rng = random.Random(f"{mode}-race")
    for _ in range(_trials()):
        await race.trial(mode, rng)
    # Keys issued to the user after the last revocation: a new family, it resolves and rotates.
    fresh = await race.revoker.issue("u1", "w1")
    assert (await race.resolvers[1].resolve(fresh.access_key.reveal())).user_id == "u1"
    rotated = await race.thief.refresh(fresh.refresh_key.reveal())
    await race.resolvers[0].resolve(rotated.access_key.reveal())
