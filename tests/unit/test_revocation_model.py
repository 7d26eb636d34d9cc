"""Revocation semantics: SQLiteStore against the MemoryStore model on generated histories.

Each history issues families, rotates (current or already used refresh keys), revokes by key,
family and user, and commits "late" keys into families as a rotation that raced a revocation
would. Both stores get the same records on the same clock; every return value and, at the end,
every key as lookup and list_keys report it must agree. A second property checks the promise
itself on the model: a key of a family revoked (directly or through its user) reads as revoked
and does not rotate, whenever it was added.
"""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import KeyKind, KeyRecord
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import key_record, seed_directory

EXAMPLES = 150

_USERS = ("u1", "u2")
_op = st.one_of(
    st.tuples(st.just("issue"), st.sampled_from(_USERS)),
    st.tuples(st.just("rotate"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("late"), st.integers(0, 7)),
    st.tuples(st.just("revoke_key"), st.integers(0, 31)),
    st.tuples(st.just("revoke_family"), st.integers(0, 7)),
    st.tuples(st.just("revoke_user"), st.sampled_from(_USERS)),
    st.tuples(st.just("advance")),
)
histories = st.lists(_op, min_size=1, max_size=25)


class History:
    """Applies one generated history to several stores at once and records what they return."""

    def __init__(self, stores: list[Any], clock: FakeClock) -> None:
        self.stores = stores
        self.clock = clock
        self.keys: list[KeyRecord] = []
        self.families: list[tuple[str, str]] = []  # (family_id, user_id)
        self.refresh: dict[str, list[KeyRecord]] = {}  # family -> its refresh keys, oldest first
        self.revoked: set[str] = set()  # families revoked as a whole, per the model

    async def all(self, call: str, *args: Any, **kwargs: Any) -> Any:
        results = [await getattr(store, call)(*args, **kwargs) for store in self.stores]
        assert all(result == results[0] for result in results), (call, results)
        return results[0]

    def _pair(self, family: str, user: str) -> list[KeyRecord]:
        return [
            key_record(self.clock, family_id=family, user_id=user),
            key_record(self.clock, family_id=family, user_id=user, kind=KeyKind.REFRESH),
        ]

    async def apply(self, op: tuple[Any, ...]) -> None:
        name, now = op[0], self.clock.now()
        if name == "issue":
            pair = self._pair(key_record(self.clock).family_id, op[1])
            await self.all("insert_keys", pair)
            self.families.append((pair[0].family_id, op[1]))
            self.keys.extend(pair)
            self.refresh[pair[0].family_id] = [pair[1]]
        elif name == "advance":
            self.clock.advance(1)
        elif name == "revoke_user":
            await self.all("revoke", user_id=op[1], reason=f"user@{now}", now=now)
            self.revoked |= {k.family_id for k in self.keys if k.user_id == op[1]}
        elif name == "revoke_key" and self.keys:
            key = self.keys[op[1] % len(self.keys)]
            await self.all("revoke", key_id=key.id, reason=f"key@{now}", now=now)
        elif self.families:
            family, user = self.families[op[1] % len(self.families)]
            if name == "revoke_family":
                await self.all("revoke", family_id=family, reason=f"family@{now}", now=now)
                self.revoked.add(family)
            elif name == "late":
                pair = self._pair(family, user)
                await self.all("insert_keys", pair)
                self.keys.extend(pair)
                self.refresh[family].append(pair[1])
            elif name == "rotate":
                used = self.refresh[family][-1 if op[2] else 0]
                pair = self._pair(family, user)
                won = await self.all("rotate", used.id, pair, now=now)
                assert not (won and family in self.revoked), "a revoked family rotated"
                if won:
                    self.keys.extend(pair)
                    self.refresh[family].append(pair[1])


def _run(body: Any) -> None:
    anyio.run(body)


@settings(max_examples=EXAMPLES, deadline=None)
@given(histories)
def test_sqlite_agrees_with_the_model(history: list[tuple[Any, ...]]) -> None:
    async def body() -> None:
        clock = FakeClock()
        model = MemoryStore(clock=clock)
        async with SQLiteStore(":memory:", clock=clock) as sqlite:
            stores: list[Any] = [model, sqlite]
            for store in stores:
                await seed_directory(store)
            run = History(stores, clock)
            for op in history:
                await run.apply(op)
            for key in run.keys:
                await run.all("lookup", key.key_hash)
            await run.all("list_keys")

    _run(body)


@settings(max_examples=EXAMPLES, deadline=None)
@given(histories)
def test_no_key_of_a_revoked_family_is_live(history: list[tuple[Any, ...]]) -> None:
    async def body() -> None:
        clock = FakeClock()
        model = MemoryStore(clock=clock)
        await seed_directory(model)
        run = History([model], clock)
        for op in history:
            await run.apply(op)
        for key in run.keys:
            found = await model.lookup(key.key_hash)
            assert found is not None
            if key.family_id in run.revoked:
                assert found.key.revoked_at is not None
        for family in run.revoked:
            for refresh in run.refresh.get(family, []):
                new = [key_record(clock, family_id=family)]
                assert await model.rotate(refresh.id, new, now=clock.now()) is False

    _run(body)
