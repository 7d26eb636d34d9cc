"""DPoP (RFC 9449): proof-of-possession for agentguard keys.

Server side, :class:`DPoPVerifier` checks the ``DPoP`` header of a request and burns its ``jti``
in a shared :class:`~agentguard.storage.ReplayCache`; :class:`NonceSource` issues
stateless server nonces. Client side, :class:`DPoPKey` holds the agent's key and signs proofs.
"""

from __future__ import annotations

from agentguard.dpop._algorithms import DEFAULT_ALGORITHMS
from agentguard.dpop._claims import access_key_hash
from agentguard.dpop._htu import normalize_htu
from agentguard.dpop._jwk import jwk_thumbprint
from agentguard.dpop._nonces import NonceSource
from agentguard.dpop._policy import DPoPPolicy
from agentguard.dpop._proof import DPoPKey
from agentguard.dpop._verifier import DPoPVerifier, VerifiedProof

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DPoPKey",
    "DPoPPolicy",
    "DPoPVerifier",
    "NonceSource",
    "VerifiedProof",
    "access_key_hash",
    "jwk_thumbprint",
    "normalize_htu",
]
