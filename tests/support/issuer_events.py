"""Helpers for the KeyIssuer contract tests: the audit event and error ids a key produces."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from agentguard import KeyRecord
from agentguard.storage import MemoryStore

#: The actor of an event that names no key (a malformed or unknown key).
NO_ACTOR = {"user": None, "workspace": None, "account": None, "key_id": None, "family": None}


def actor(record: KeyRecord) -> dict[str, str]:
    """The ``actor`` object an audit event about ``record`` carries."""
    return {
        "user": record.user_id,
        "workspace": record.workspace_id,
        "account": record.account_id,
        "key_id": record.id,
        "family": record.family_id,
    }


def ids(record: KeyRecord) -> dict[str, str]:
    """The ids an error about ``record`` carries for the audit layer."""
    return {
        "key_id": record.id,
        "family_id": record.family_id,
        "user_id": record.user_id,
        "workspace_id": record.workspace_id,
        "account_id": record.account_id,
    }


async def events(store: MemoryStore) -> list[dict[str, Any]]:
    return [entry.event() for entry in await store.read()]


async def last_event(store: MemoryStore) -> tuple[object, ...]:
    event = (await events(store))[-1]
    fields = ("action", "decision", "reason", "actor", "detail", "ts")
    return tuple(event[name] for name in fields)


async def stored(store: MemoryStore, record: KeyRecord) -> KeyRecord:
    found = await store.lookup(record.key_hash)
    assert found is not None
    return found.key


class Interleaved:
    """The store, running ``meanwhile`` once just before the next rotation commits."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.meanwhile: Callable[[], Awaitable[object]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def rotate(self, used_id: str, new: Sequence[KeyRecord], *, now: datetime) -> bool:
        if self.meanwhile is not None:
            step, self.meanwhile = self.meanwhile, None
            await step()
        return await self._store.rotate(used_id, new, now=now)
