"""The one kind of write transaction every SQLiteStore write runs in."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["immediate"]


@contextmanager
def immediate(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that holds the database's write lock from its first statement.

    ``BEGIN IMMEDIATE`` takes the lock before the transaction reads anything, so a
    read-decide-write inside it cannot act on a read another connection has since made stale.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
