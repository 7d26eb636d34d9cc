"""LazyClient: the one way agentguard holds an outbound ``httpx.AsyncClient``.

The client is created on first use, inside the running event loop (an ASGI app is often built
before any loop exists), never follows redirects (a credential must not travel to a host the
request chose), never reads proxy settings from the environment, and is closed only when
agentguard created it (a client passed in belongs to the caller).
"""

from __future__ import annotations

import httpx

__all__ = ["LazyClient"]


class LazyClient:
    """Holds a caller's client, or creates and owns one with these settings."""

    __slots__ = ("_client", "_limits", "_owns", "_timeout", "_transport")

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        timeout: httpx.Timeout | float = 10.0,
        limits: httpx.Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = client
        self._owns = client is None
        self._timeout = timeout
        self._limits = limits
        self._transport = transport

    @property
    def client(self) -> httpx.AsyncClient:
        """The client (created now if it does not exist yet)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits or httpx.Limits(),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the client if agentguard created it; a later use creates a fresh one."""
        if self._owns and self._client is not None:
            await self._client.aclose()
            self._client = None
