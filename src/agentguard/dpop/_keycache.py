"""Proof headers already checked, with the public key each carries, in a bounded LRU.

An agent sends the same protected header (``typ``, ``alg``, ``jwk``) on every call, and parsing it
(base64url, strict JSON, the JWK's checks, its RFC 7638 thumbprint, and loading the key: an
on-curve check for EC) costs as much again as the signature check. The cache maps the exact
base64url header to what those steps produced: the algorithm, the thumbprint and the loaded key.
They are a pure function of the header text and the verifier's fixed settings, so an entry can
only be returned for the very header it was computed from. It holds keys, never verdicts: the
signature, claims, time, binding and replay checks run on every proof. Failed headers are not
cached, and headers longer than :data:`MAX_CACHED_HEADER` are parsed each time, which bounds the
memory an attacker can fill.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from agentguard.dpop._algorithms import Algorithm
from agentguard.dpop._jwk import PublicKey

__all__ = ["MAX_CACHED_HEADER", "CachedKey", "KeyCache"]

#: Longest base64url header cached (an RSA-4096 header is about 1,400 characters).
MAX_CACHED_HEADER = 2048


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A header's checked algorithm, its key's RFC 7638 thumbprint, and the loaded key."""

    algorithm: Algorithm
    thumbprint: str
    key: PublicKey


class KeyCache:
    """A bounded, thread-safe LRU of ``base64url header -> CachedKey``."""

    __slots__ = ("_cache", "_lock", "_size")

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("the key cache needs room for at least one key")
        # An OrderedDict (in C) rather than cachetools' LRUCache: a hit costs half as much.
        self._cache: OrderedDict[str, CachedKey] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyCache({len(self._cache)}/{self._size})"

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, header: str) -> CachedKey | None:
        """The entry for exactly this header, if it is cached."""
        with self._lock:
            entry = self._cache.get(header)
            if entry is not None:
                self._cache.move_to_end(header)
            return entry

    def put(self, header: str, entry: CachedKey) -> None:
        """Remember ``entry`` for ``header`` (unless the header is too long to be worth it)."""
        if len(header) <= MAX_CACHED_HEADER:
            with self._lock:
                self._cache[header] = entry
                self._cache.move_to_end(header)
                if len(self._cache) > self._size:
                    self._cache.popitem(last=False)
