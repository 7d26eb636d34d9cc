"""Opening a store from a URL.

``sqlite:///path/to.db``, ``postgresql://user@host/db?schema=agentguard``, ``memory://``, or a
third-party scheme.

Third-party backends register a scheme under the ``agentguard.storage`` entry-point group; the
entry point is a callable ``(url: str, clock: Clock | None) -> store``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from agentguard.clock import Clock
from agentguard.errors import ConfigurationError

__all__ = ["open_store"]


def open_store(url: str, *, clock: Clock | None = None) -> Any:
    """A store for ``url``. Raises :class:`ConfigurationError` for an unknown or bad URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError("a store URL looks like sqlite:///path/to/agentguard.db")
    scheme = scheme.lower()
    if scheme == "memory":
        from agentguard.storage.memory import MemoryStore

        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigurationError(
                "a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        from agentguard.storage.sqlite import SQLiteStore

        return SQLiteStore(rest[1:], clock=clock)
    if scheme in ("postgresql", "postgres"):
        from agentguard.storage.postgres import PostgresStore

        return PostgresStore.from_url(url, clock=clock)
    for entry in entry_points(group="agentguard.storage"):
        if entry.name == scheme:
            factory = entry.load()
            return factory(url, clock)
    raise ConfigurationError(f"no storage backend for the {scheme!r} scheme")
