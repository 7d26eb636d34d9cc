"""Stateless DPoP nonces (RFC 9449 §8, §9): an HMAC of the current time step.

Every instance that shares the secret issues and accepts the same nonces without talking to the
others or to storage. A nonce stays valid for the step it was issued in and the next one, so a
client that fetched one just before a step ended is not bounced. Use separate secrets for the
token endpoint and the resource server so a nonce from one is useless at the other.
"""

from __future__ import annotations

import hashlib
import hmac
import math

from agentguard._clock import Clock
from agentguard.dpop._jose import b64url_encode

__all__ = ["MIN_SECRET_BYTES", "NonceSource"]

MIN_SECRET_BYTES = 32
_CONTEXT = b"agentguard/dpop-nonce/v1:"


class NonceSource:
    """Issues and checks server nonces: ``HMAC-SHA256(secret, time step)``, base64url.

    Args:
        secret: at least 32 random bytes, shared by every instance that must agree.
        clock: the time source that defines the steps.
        step: step length in seconds; a nonce lives between ``step`` and ``2 * step`` seconds.
    """

    __slots__ = ("_clock", "_secret", "_step")

    def __init__(self, secret: bytes, clock: Clock, *, step: int = 300) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the nonce secret must be at least {MIN_SECRET_BYTES} bytes")
        if step < 1:
            raise ValueError("the nonce step must be at least one second")
        self._secret = bytes(secret)
        self._clock = clock
        self._step = step

    def __repr__(self) -> str:
        return f"NonceSource(step={self._step})"

    def _counter(self) -> int:
        return math.floor(self._clock.now().timestamp() / self._step)

    def _nonce(self, counter: int) -> bytes:
        message = _CONTEXT + counter.to_bytes(8, "big", signed=True)
        return b64url_encode(hmac.new(self._secret, message, hashlib.sha256).digest()).encode()

    def current(self) -> str:
        """The nonce for the current time step."""
        return self._nonce(self._counter()).decode("ascii")

    def is_valid(self, nonce: str) -> bool:
        """Whether ``nonce`` belongs to the current or the previous step (constant time)."""
        counter = self._counter()
        given = nonce.encode("utf-8", "surrogatepass")
        current = hmac.compare_digest(given, self._nonce(counter))
        previous = hmac.compare_digest(given, self._nonce(counter - 1))
        return current | previous
