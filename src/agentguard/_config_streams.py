"""The settings of open streams: ``[streams]``, how long-lived responses are kept live.

Exported from :mod:`agentguard.config`; kept apart because that module is long::

    [streams]
    recheck_interval = 5.0   # seconds between re-checks of each open stream's key and owner
    events = "auto"          # revocation events that cut streams at once: "auto" (PostgreSQL
                             # LISTEN/NOTIFY, SQLite's data_version, in-process polling for the
                             # memory store), "off" (the interval only), or a redis:// URL
                             # (Redis pub/sub, for stores that cannot notify)
    channel = "agentguard:revocations"  # the Redis channel (with a redis:// ``events``)
    outage_grace = 30.0      # seconds a stream may go on while its re-checks fail (0: none)

A stream is cut with the refusal a new request would get; see ``docs/how-to/live-streams.md``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["StreamSettings"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


class StreamSettings(BaseModel):
    """``[streams]``: re-checking open streams (SSE, streamed responses, websockets).

    Attributes:
        recheck_interval: seconds between two re-checks of an open stream's key, user,
            membership and account (each distinct key is looked up once per round).
        events: ``"auto"`` picks the store's own change feed (PostgreSQL ``LISTEN``, SQLite
            ``PRAGMA data_version``, polling for the in-memory store); ``"off"`` relies on the
            interval alone; a ``redis://`` (or ``rediss://``) URL subscribes to Redis pub/sub
            (writers announce through :func:`~agentguard.storage.announce_changes`).
        channel: the Redis channel events travel on.
        outage_grace: seconds a stream is kept while the store cannot be read; after that it
            is cut with 503 ``store_unavailable`` (fail closed). ``0`` cuts at the first
            failed re-check.
        poll_interval: seconds between two reads of SQLite's ``data_version``.
        max_concurrency: most store look-ups one re-check round runs at once.
        linger: seconds a registry started on demand keeps its feed after its last stream
            ended (a lifespan-started one runs until shutdown).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    recheck_interval: float = Field(default=5.0, gt=0, le=3600)
    events: str = "auto"
    channel: str = Field(default="agentguard:revocations", min_length=1, max_length=200)
    outage_grace: float = Field(default=30.0, ge=0, le=3600)
    poll_interval: float = Field(default=0.2, gt=0, le=10)
    max_concurrency: int = Field(default=8, ge=1, le=256)
    linger: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: str) -> str:
        if value in ("auto", "off"):
            return value
        if urlsplit(value).scheme in _REDIS_SCHEMES:
            return value
        # Never echo the value: a Redis URL may carry a password.
        raise ValueError('events is "auto", "off" or a redis:// URL')

    @property
    def redis_url(self) -> str | None:
        """The Redis URL events travel on, or ``None`` without one."""
        return None if self.events in ("auto", "off") else self.events

    def __repr_args__(self) -> list[tuple[str | None, object]]:
        shown = self.events if self.redis_url is None else "redis://…"
        return [
            (name, shown if name == "events" else value) for name, value in super().__repr_args__()
        ]
