"""Revocation events for open streams: where they come from, per store.

The live-stream registry (:mod:`agentguard._live_streams`) re-checks every open stream on an
interval; a feed makes a revocation reach the streams at once, on every instance:

- PostgreSQL: ``LISTEN`` on the channel the schema's triggers notify on
  (:class:`PostgresFeed`, triggers in :mod:`agentguard.storage._postgres._notify`);
- SQLite (a file): ``PRAGMA data_version`` polled on a connection of its own
  (:class:`DataVersionFeed`);
- the in-memory store (and SQLite ``:memory:``): :class:`PollFeed`, a few times a second;
- any store, as an explicit bus: Redis pub/sub (:class:`RedisFeed`), fed by
  :func:`announce_changes` around the writers' store.

A third-party store can offer its own: a ``revocation_feed(settings)`` method returning a
:class:`RevocationFeed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentguard.storage._revocation_feeds._changes import (
    EVERYTHING,
    FIELDS,
    Change,
    RevocationFeed,
    encode_change,
    parse_change,
)
from agentguard.storage._revocation_feeds._local import DataVersionFeed, PollFeed
from agentguard.storage._revocation_feeds._redis import (
    AnnouncingStore,
    RedisAnnouncer,
    RedisFeed,
    announce_changes,
)

if TYPE_CHECKING:
    from agentguard._config_streams import StreamSettings

__all__ = [
    "EVERYTHING",
    "FIELDS",
    "AnnouncingStore",
    "Change",
    "DataVersionFeed",
    "PollFeed",
    "RedisAnnouncer",
    "RedisFeed",
    "RevocationFeed",
    "announce_changes",
    "encode_change",
    "feed_for",
    "parse_change",
]

_MEMORY_PERIOD = 0.25


def feed_for(store: Any, settings: StreamSettings) -> RevocationFeed | None:
    """The feed that tells a registry over ``store`` of revocations, per ``settings.events``;
    ``None``: none (the interval alone)."""
    if settings.events == "off":
        return None
    if settings.redis_url is not None:
        return RedisFeed(settings.redis_url, settings.channel)
    offered = getattr(store, "revocation_feed", None)
    if callable(offered):
        feed: RevocationFeed | None = offered(settings)
        return feed
    from agentguard.storage._memory import MemoryStore
    from agentguard.storage._postgres.store import PostgresStore
    from agentguard.storage._sqlite.store import SQLiteStore

    if isinstance(store, PostgresStore):
        from agentguard.storage._revocation_feeds._postgres import PostgresFeed

        return PostgresFeed(store._dsn, store.schema)
    if isinstance(store, SQLiteStore):
        if store.path == ":memory:":
            return PollFeed(_MEMORY_PERIOD)
        return DataVersionFeed(store.path, period=settings.poll_interval)
    if isinstance(store, MemoryStore):
        return PollFeed(_MEMORY_PERIOD)
    return None
