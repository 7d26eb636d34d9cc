"""DPoP (RFC 9449): proof-of-possession for agentguard keys.

Server side, :class:`DPoPVerifier` checks the ``DPoP`` header of a request and burns its ``jti``
in a shared :class:`~agentguard.storage.protocols.ReplayCache`; :class:`NonceSource` issues
stateless server nonces. Client side, :class:`DPoPKey` holds the agent's key and signs proofs.
"""

from __future__ import annotations

from agentguard.dpop.algorithms import DEFAULT_ALGORITHMS
from agentguard.dpop.claims import access_key_hash
from agentguard.dpop.htu import normalize_htu
from agentguard.dpop.jwk import jwk_thumbprint
from agentguard.dpop.nonces import NonceSource
from agentguard.dpop.policy import DPoPPolicy
from agentguard.dpop.proof import DPoPKey
from agentguard.dpop.verifier import REPLAY_SKEW_SECONDS, DPoPVerifier, VerifiedProof

__all__ = [
    "DEFAULT_ALGORITHMS",
    "REPLAY_SKEW_SECONDS",
    "DPoPKey",
    "DPoPPolicy",
    "DPoPVerifier",
    "NonceSource",
    "VerifiedProof",
    "access_key_hash",
    "jwk_thumbprint",
    "normalize_htu",
]
