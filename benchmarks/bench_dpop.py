"""How much DPoP verification costs on top of the signature check it cannot avoid.

Run ``python benchmarks/bench_dpop.py``. It times :meth:`DPoPVerifier.verify` on fresh ES256
proofs (a new ``jti`` each call, so every call burns a replay slot in a ``MemoryStore``; ``ath``
and ``jkt`` checked too) and, in the same run, the bare ``cryptography`` ES256 check of the same
signing input, and prints the medians and their ratio. Proofs are generated before timing.

The bare check is timed twice: in a tight loop of its own (the best case OpenSSL reaches, with its
tables hot in the CPU cache) and interleaved one-for-one with ``verify`` calls (the conditions the
check inside ``verify`` meets, where Python work between two checks evicts those tables).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from report import Row, record

from agentguard import SystemClock
from agentguard.dpop import DPoPKey, DPoPVerifier
from agentguard.dpop._jose import b64url_decode
from agentguard.storage import MemoryStore

URL = "https://api.example.test/v1/tools/search"
ACCESS_KEY = "ag_at_" + "A" * 49
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _bare_input(proof: str) -> tuple[bytes, bytes]:
    signing_input, _, signature_part = proof.rpartition(".")
    raw = b64url_decode(signature_part)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return signing_input.encode("ascii"), der


async def _time_interleaved(
    verifier: DPoPVerifier,
    public_key: ec.EllipticCurvePublicKey,
    proofs: list[tuple[str, bytes, bytes]],
    jkt: str,
) -> tuple[list[int], list[int]]:
    verify_ns: list[int] = []
    bare_ns: list[int] = []
    for proof, message, der in proofs:
        start = time.perf_counter_ns()
        public_key.verify(der, message, ECDSA_SHA256)
        bare_ns.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        await verifier.verify(
            [proof], method="POST", url=URL, access_key=ACCESS_KEY, expected_jkt=jkt
        )
        verify_ns.append(time.perf_counter_ns() - start)
    return verify_ns, bare_ns


def _time_tight(
    public_key: ec.EllipticCurvePublicKey, inputs: list[tuple[bytes, bytes]]
) -> list[int]:
    samples: list[int] = []
    for message, der in inputs:
        start = time.perf_counter_ns()
        public_key.verify(der, message, ECDSA_SHA256)
        samples.append(time.perf_counter_ns() - start)
    return samples


def _row(label: str, micros: float, calls: int, baseline: float) -> str:
    return f"{label:<46}{micros:>10.1f}{calls:>8}{micros / baseline:>9.2f}x"


def main() -> None:
    """Time the paths in rounds (so drift affects them alike) and print a table."""
    parser = argparse.ArgumentParser(description="DPoP verification cost vs a bare ES256 check")
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    dpop_key = DPoPKey.generate("ES256")
    jwk = dpop_key.public_jwk
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + b64url_decode(jwk["x"]) + b64url_decode(jwk["y"])
    )
    clock = SystemClock()
    verify_ns: list[int] = []
    interleaved_ns: list[int] = []
    tight_ns: list[int] = []
    per_round = max(1, args.iterations // args.rounds)
    for _ in range(args.rounds):
        proofs = [dpop_key.proof("POST", URL, access_key=ACCESS_KEY) for _ in range(per_round)]
        inputs = [_bare_input(proof) for proof in proofs]
        rows = [(proof, *pair) for proof, pair in zip(proofs, inputs, strict=True)]
        # A fresh store per round: MemoryStore sweeps its whole replay dict on every insert once
        # it holds more than 4096 live entries, which would time the sweep, not the verifier.
        verifier = DPoPVerifier(MemoryStore(clock=clock), clock)
        timed = asyncio.run(_time_interleaved(verifier, public_key, rows, dpop_key.thumbprint))
        verify_ns += timed[0]
        interleaved_ns += timed[1]
        tight_ns += _time_tight(public_key, inputs)

    tight = statistics.median(tight_ns) / 1000
    interleaved = statistics.median(interleaved_ns) / 1000
    verify = statistics.median(verify_ns) / 1000
    print(f"{'median of':<46}{'µs':>10}{'calls':>8}{'vs tight':>10}")
    print(_row("cryptography ES256 verify, tight loop", tight, len(tight_ns), tight))
    print(_row("cryptography ES256 verify, interleaved", interleaved, len(interleaved_ns), tight))
    print(_row("DPoPVerifier.verify (ES256, ath, jkt, jti)", verify, len(verify_ns), tight))
    print(f"verify / interleaved bare check: {verify / interleaved:.2f}x")
    print(f"verify overhead beyond the interleaved check: {verify - interleaved:.1f} µs")
    bare = "cryptography ES256 verify (tight loop)"
    record(
        [
            Row(
                "dpop",
                "DPoPVerifier.verify (ES256, ath, jkt, jti)",
                verify,
                "µs",
                bare,
                tight,
                True,
            ),
            Row(
                "dpop",
                "ES256 verify interleaved with verifier",
                interleaved,
                "µs",
                bare,
                tight,
                True,
            ),
        ]
    )


if __name__ == "__main__":
    main()
