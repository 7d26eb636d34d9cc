"""The connection under a SQLiteStore, on a thread of its own.

Every call runs on the store's one connection (opened on first use, which creates or upgrades
the schema), in order, on the connection's thread; see ``_threads`` for how calls reach it. A
second, read-only connection for lookups was measured and taken out: see docs/performance.md.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agentguard.storage._driver_errors import driver_errors
from agentguard.storage._protocols import IntegrityError, StorageError
from agentguard.storage._sqlite._threads import ConnectionThread
from agentguard.storage._sqlite.schema import configure, open_read_only, prepare

__all__ = ["BROKEN_RULE", "MEMORY", "Params", "Row", "SQLiteBase", "Work", "create_private"]

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
Row = tuple[Any, ...]
Params = Sequence[object] | dict[str, object]

MEMORY = ":memory:"


def create_private(path: str) -> None:
    """Create the database file readable by its owner only (it holds hashes and ciphertext)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


#: What a write that breaks a table constraint says (with the driver's own message after it).
BROKEN_RULE = "the write breaks a storage rule"


class SQLiteBase:
    """Opening, running on and closing a SQLiteStore's connections."""

    path: str
    timeout: float
    read_only: bool
    _writer: ConnectionThread
    _connection: sqlite3.Connection | None
    _closed: bool

    def _close(self) -> None:
        with self._writer.lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            return open_read_only(self.path, timeout=self.timeout)
        file_backed = self.path != MEMORY
        if file_backed:
            create_private(self.path)
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            configure(connection, timeout=self.timeout, file_backed=file_backed)
            prepare(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _run(self, work: Work[T], broken: str) -> T:
        with self._writer.lock, driver_errors("SQLite"):
            if self._closed:
                raise StorageError("this SQLiteStore is closed")
            if self._connection is None:
                self._connection = self._open()
            try:
                return work(self._connection)
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(f"{broken} ({exc})") from exc

    async def _call(self, work: Work[T], broken: str = BROKEN_RULE) -> T:
        return await self._writer.call(self._run, work, broken)

    # Reads: one statement each, so each sees one consistent snapshot.

    async def _fetch_one(self, statement: str, params: Params) -> Row | None:
        def work(connection: sqlite3.Connection) -> Row | None:
            row: Row | None = connection.execute(statement, params).fetchone()
            return row

        return await self._call(work)

    async def _fetch_all(self, statement: str, params: Params) -> list[Row]:
        def work(connection: sqlite3.Connection) -> list[Row]:
            rows: list[Row] = connection.execute(statement, params).fetchall()
            return rows

        return await self._call(work)
