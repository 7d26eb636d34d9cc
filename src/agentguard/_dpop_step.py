"""Step 4 of the pipeline: the DPoP proof, its binding to the key, then its ``jti`` burnt.

Also the token endpoint's own proof check (RFC 9449 §5), with its separate nonce secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentguard.errors import ConfigurationError, InvalidRequest, InvalidToken, Reason
from agentguard.storage._outage import shield_store
from agentguard.storage._protocols import ReplayCache

if TYPE_CHECKING:
    from agentguard._clock import Clock
    from agentguard._request import Credentials, GuardRequest
    from agentguard.dpop import DPoPVerifier, VerifiedProof
    from agentguard.dpop._policy import DPoPPolicy

__all__ = ["DPoPStep"]


class DPoPStep:
    """DPoP for one guard: ``policy`` ``None`` accepts bearer keys only."""

    __slots__ = ("_policy", "_token_verifier", "_verifier", "replay_cache")

    def __init__(self, policy: DPoPPolicy | None, replay: object, clock: Clock) -> None:
        self._policy = policy
        self.replay_cache: ReplayCache | None = None
        self._verifier: DPoPVerifier | None = None
        self._token_verifier: DPoPVerifier | None = None
        if policy is None:
            return
        from agentguard.dpop import DPoPVerifier, NonceSource

        if not isinstance(replay, ReplayCache):
            raise ConfigurationError(
                "DPoP needs a replay cache shared by every instance; pass replay_cache=..."
            )
        self.replay_cache = replay
        shielded = shield_store(replay, "replay cache")

        def verifier(secret: bytes | None) -> DPoPVerifier:
            nonces = None if secret is None else NonceSource(secret, clock, step=policy.nonce_step)
            return DPoPVerifier(
                shielded,
                clock,
                algorithms=policy.algorithms,
                iat_window=policy.iat_window,
                max_proof_bytes=policy.max_proof_bytes,
                nonces=nonces,
            )

        self._verifier = verifier(policy.nonce_secret)
        self._token_verifier = verifier(policy.token_nonce_secret)

    async def check(
        self, request: GuardRequest, credentials: Credentials, key_jkt: str | None
    ) -> None:
        """RFC 9449 §7: a bound key needs the DPoP scheme and a proof from its key."""
        policy = self._policy
        if credentials.scheme == "bearer":
            if policy is not None and policy.required:
                raise InvalidToken(reason=Reason.DPOP_REQUIRED)
            if key_jkt is not None:
                raise InvalidToken(
                    "this key is DPoP-bound: send 'Authorization: DPoP <key>' with a DPoP proof",
                    reason=Reason.DPOP_BINDING_MISMATCH,
                )
            return
        if policy is None or self._verifier is None:  # pragma: no cover - scheme refused
            raise InvalidRequest(reason=Reason.UNSUPPORTED_SCHEME)
        if key_jkt is None:
            raise InvalidToken(
                "this key is not DPoP-bound: send it as 'Authorization: Bearer <key>'",
                reason=Reason.DPOP_BINDING_MISMATCH,
            )
        proofs = [value.decode("latin-1") for value in request.header_values(b"dpop")]
        await self._verifier.verify(
            proofs,
            method=request.method,
            url=policy.url(request),
            access_key=credentials.key,
            expected_jkt=key_jkt,
        )

    async def token_proof(self, request: GuardRequest) -> VerifiedProof | None:
        """The token request's proof, or ``None`` when there is none and DPoP is optional."""
        proofs = [value.decode("latin-1") for value in request.header_values(b"dpop")]
        if self._policy is None or self._token_verifier is None:
            if proofs:
                raise InvalidRequest("this server does not accept DPoP proofs")
            return None
        if not proofs and not self._policy.required:
            return None
        return await self._token_verifier.verify(
            proofs, method=request.method, url=self._policy.url(request)
        )
