"""PostgreSQL ``LISTEN``: the revocation triggers' notifications, on a connection of its own.

The triggers (:mod:`agentguard.storage._postgres._notify`) notify when the writing transaction
commits, on every instance listening to the schema's channel, whoever wrote. The listener holds
one connection outside the store's pool (a pooled connection must never keep a ``LISTEN``) and
checks it with a ``SELECT 1`` every ``keepalive`` seconds, so a connection lost without a word
is noticed; a lost connection raises, and the registry reconnects after a backoff and then
re-checks every open stream (notifications sent meanwhile are gone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import anyio

from agentguard._extras import import_extra
from agentguard.storage._postgres._notify import channel_for
from agentguard.storage._protocols import StorageError
from agentguard.storage._revocation_feeds._changes import Change, parse_change

__all__ = ["APPLICATION", "PostgresFeed"]

APPLICATION = "agentguard-revocations"
"""The listener connection's ``application_name`` (``pg_stat_activity`` shows it)."""


class PostgresFeed:
    """Listens to the revocation channel of ``schema`` over ``dsn`` (asyncpg)."""

    def __init__(
        self, dsn: str, schema: str, *, keepalive: float = 15.0, timeout: float = 5.0
    ) -> None:
        self._dsn = dsn
        self.schema = schema
        self.channel = channel_for(schema)
        self.keepalive = keepalive
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PostgresFeed(schema={self.schema!r})"  # the DSN may hold a password

    async def watch(self, changed: Callable[[Change], None], ready: Callable[[], None]) -> None:
        asyncpg = import_extra("asyncpg")
        connection: Any = await asyncpg.connect(
            self._dsn, timeout=self.timeout, server_settings={"application_name": APPLICATION}
        )
        lost = asyncio.Event()

        def deliver(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            changed(parse_change(payload))

        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(self.channel, deliver)
            ready()
            while True:
                with anyio.move_on_after(self.keepalive):
                    await lost.wait()
                if lost.is_set() or connection.is_closed():
                    raise StorageError("the PostgreSQL listener connection was lost")
                await connection.fetchval("SELECT 1", timeout=self.timeout)
        finally:
            with anyio.CancelScope(shield=True):
                await _close(connection, self.timeout)


async def _close(connection: Any, seconds: float) -> None:
    if connection.is_closed():
        return
    try:
        with anyio.fail_after(seconds):
            await connection.close()
    except Exception:  # a broken socket or a timeout: drop it without the goodbye
        with contextlib.suppress(Exception):
            connection.terminate()
