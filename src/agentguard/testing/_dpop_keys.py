"""A DPoP key whose proofs are dated by an injected clock (a ``FakeClock`` in tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from agentguard._clock import Clock, SystemClock
from agentguard.dpop._proof import SIGNING_ALGORITHMS, DPoPKey

if TYPE_CHECKING:
    from agentguard.dpop._algorithms import PrivateKey

__all__ = ["ClockedDPoPKey"]


class ClockedDPoPKey(DPoPKey):
    """A :class:`~agentguard.dpop.DPoPKey` whose ``proof()`` takes ``iat`` from ``clock``.

    A server under test reads time from a ``FakeClock`` (which starts on 2026-01-01), so a proof
    dated by the real clock would fall outside its ``iat`` window. This key defaults ``iat`` to
    the clock's current whole second; an explicit ``iat=`` still wins. It is a ``DPoPKey`` in
    every other way, so anything that takes one (``AgentAuth`` among them) takes this one.
    """

    __slots__ = ("clock",)

    def __init__(self, key: PrivateKey, alg: str, clock: Clock | None = None) -> None:
        super().__init__(key, alg)
        self.clock: Clock = clock or SystemClock()

    @classmethod
    def on_clock(cls, clock: Clock, alg: str = "ES256") -> ClockedDPoPKey:
        """A new random key for ``alg`` (``ES256`` or ``EdDSA``/``Ed25519``) dated by ``clock``."""
        private: PrivateKey
        if alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        elif alg in ("EdDSA", "Ed25519"):
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"DPoPKey signs with one of {list(SIGNING_ALGORITHMS)}")
        return cls(private, alg, clock)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_key: str | None = None,
        nonce: str | None = None,
        iat: float | None = None,
        jti: str | None = None,
    ) -> str:
        """A proof as :meth:`DPoPKey.proof` signs it, ``iat`` defaulting to the clock's now."""
        when = iat if iat is not None else int(self.clock.now().timestamp())
        return super().proof(method, url, access_key=access_key, nonce=nonce, iat=when, jti=jti)
