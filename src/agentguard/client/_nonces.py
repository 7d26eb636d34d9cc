"""The DPoP nonces servers hand out (RFC 9449 section 8), remembered per server."""

from __future__ import annotations

import threading
from typing import Literal

from agentguard.client._wire import WireResponse, WireURL

__all__ = ["Nonces", "Role", "origin"]

Role = Literal["resource", "token"]


def origin(url: WireURL) -> str:
    """``scheme://host:port``, with the default port spelled out."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}"


class Nonces:
    """The last nonce each server gave, by role and origin; safe to share across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nonces: dict[tuple[Role, str], str] = {}

    def get(self, role: Role, url: WireURL) -> str | None:
        with self._lock:
            return self._nonces.get((role, origin(url)))

    def remember(self, role: Role, url: WireURL, response: WireResponse) -> None:
        nonce = response.headers.get("dpop-nonce")
        if nonce:
            with self._lock:
                self._nonces[(role, origin(url))] = nonce
