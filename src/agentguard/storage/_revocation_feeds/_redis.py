"""Redis pub/sub as a revocation bus, for stores that cannot notify by themselves.

Writers announce through :func:`announce_changes`, a wrapper around any store that publishes
each change that can end a stream (a key, family or user revoked; a user, account or
membership changed) after the store call returned; every instance's registry subscribes with
:class:`RedisFeed`. Redis pub/sub keeps nothing for a subscriber that was away: the registry
re-checks every stream after each (re)subscription, and its interval bounds what a lost
message or a failed publish can cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import anyio

from agentguard._extras import import_extra
from agentguard._model import Account, User
from agentguard.storage._revocation_feeds._changes import Change, encode_change, parse_change

__all__ = ["AnnouncingStore", "RedisAnnouncer", "RedisFeed", "announce_changes"]

logger = logging.getLogger("agentguard.streams")

DEFAULT_CHANNEL = "agentguard:revocations"


def _client(url: str, timeout: float, *, reply_timeout: float | None) -> Any:
    redis_asyncio = import_extra("redis.asyncio")
    return redis_asyncio.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=reply_timeout,
        health_check_interval=15,
    )


class RedisFeed:
    """Subscribes to ``channel`` on the Redis at ``url``."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL, *, timeout: float = 5.0) -> None:
        self._url = url
        self.channel = channel
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RedisFeed(channel={self.channel!r})"  # the URL may hold a password

    async def watch(self, changed: Callable[[Change], None], ready: Callable[[], None]) -> None:
        client = _client(self._url, self.timeout, reply_timeout=None)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=15.0)
                if message is None:
                    continue  # idle; the client's health check pings the connection
                kind = message.get("type")
                if kind == "subscribe":  # confirmed: nothing published from now on is missed
                    ready()
                elif kind == "message":
                    changed(parse_change(message.get("data")))
        finally:
            with anyio.CancelScope(shield=True):
                await _close(pubsub, client)


async def _close(pubsub: Any, client: Any) -> None:
    try:
        await pubsub.aclose()
    finally:
        await client.aclose()


class RedisAnnouncer:
    """Publishes changes on ``channel`` (one client per event loop, made on first use)."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL, *, timeout: float = 2.0) -> None:
        self._url = url
        self.channel = channel
        self.timeout = timeout
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def __repr__(self) -> str:
        return f"RedisAnnouncer(channel={self.channel!r})"

    def feed(self) -> RedisFeed:
        """The feed that receives what this announcer publishes."""
        return RedisFeed(self._url, self.channel)

    async def announce(self, **ids: str | None) -> None:
        """Publish a change naming ``ids``. A failure is logged, never raised: the write it
        follows is done, and open streams are re-checked on the interval all the same."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = _client(self._url, self.timeout, reply_timeout=self.timeout)
            self._clients[loop] = client
        try:
            await client.publish(self.channel, encode_change(**ids))
        except Exception as error:
            logger.warning(
                "could not announce a revocation on Redis (%s); open streams learn of it at "
                "their next re-check",
                type(error).__name__,
            )

    async def close(self) -> None:
        """Close the client of the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


class AnnouncingStore:
    """``store``, announcing each change that can end an open stream (see the module).

    Every other attribute is the wrapped store's, so the wrapper passes for whatever the store
    is (``isinstance`` against the storage Protocols answers as for the store).
    """

    def __init__(self, store: Any, announcer: RedisAnnouncer) -> None:
        self._store = store
        self._announcer = announcer

    def __repr__(self) -> str:
        return f"AnnouncingStore({self._store!r}, {self._announcer!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @property
    def wrapped(self) -> Any:
        """The store that does the work."""
        return self._store

    def revocation_feed(self, settings: Any = None) -> RedisFeed:
        """The feed of these announcements (the live-stream registry asks for it)."""
        return self._announcer.feed()

    async def revoke(
        self,
        *,
        key_id: str | None = None,
        family_id: str | None = None,
        user_id: str | None = None,
        reason: str,
        now: Any,
    ) -> int:
        count: int = await self._store.revoke(
            key_id=key_id, family_id=family_id, user_id=user_id, reason=reason, now=now
        )
        await self._announcer.announce(key_id=key_id, family_id=family_id, user_id=user_id)
        return count

    async def put_user(self, user: User) -> None:
        await self._store.put_user(user)
        await self._announcer.announce(user_id=user.id)

    async def put_account(self, account: Account) -> None:
        await self._store.put_account(account)
        await self._announcer.announce(account_id=account.id)

    async def set_membership(self, user_id: str, workspace_id: str, *, member: bool) -> None:
        await self._store.set_membership(user_id, workspace_id, member=member)
        if not member:
            await self._announcer.announce(user_id=user_id)

    async def close(self) -> None:
        """Close the announcer's client and the wrapped store."""
        try:
            await self._announcer.close()
        finally:
            close = getattr(self._store, "close", None)
            if close is not None:
                await close()


def announce_changes(store: Any, url: str, *, channel: str = DEFAULT_CHANNEL) -> AnnouncingStore:
    """Wrap ``store`` so that every change that can end an open stream is published on the
    Redis at ``url``; give the wrapper to the :class:`~agentguard.Guard` and to whatever else
    writes (the operator commands), and ``[streams] events = "<the same url>"``."""
    return AnnouncingStore(store, RedisAnnouncer(url, channel))
