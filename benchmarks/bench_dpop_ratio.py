"""DPoP verification against the bare ES256 check, in wall time and in CPU instructions.

Issue 17's target: :meth:`DPoPVerifier.verify` (ES256, ``ath``, ``jkt``, replay write) costs at
most 1.3x the bare ``cryptography`` ES256 check of the same signing input.

``--wall`` (default)
    Many rounds; in each, the bare check in a tight loop, then verify and the bare check
    interleaved one for one, on fresh proofs (generated before timing). Prints the median of
    the per-round medians and the ratios, as ``bench_dpop.py`` does, but per round so a
    loaded machine's drift shows up as spread rather than bias.
``--callgrind``
    Counts instructions under ``valgrind --tool=callgrind``, collection switched on only inside
    the counted loop (run inside ``operator.call``, on which callgrind toggles), so imports,
    key generation and proof signing are excluded. Repeatable to a fraction of a percent under
    any load; the Python work verify adds shows up as the instruction difference.

    python benchmarks/bench_dpop_ratio.py [--rounds 20] [--per-round 400] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

from callgrind import counted_call, instructions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agentguard import SystemClock
from agentguard.dpop import DPoPKey, DPoPVerifier
from agentguard.dpop._jose import b64url_decode
from agentguard.storage import MemoryStore

URL = "https://api.example.test/v1/tools/search"
ACCESS_KEY = "ag_at_" + "A" * 49
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
TARGET = 1.3


class Setup:
    """One key, its public key for the bare check, and a supply of fresh proofs."""

    def __init__(self) -> None:
        self.key = DPoPKey.generate("ES256")
        jwk = self.key.public_jwk
        point = b"\x04" + b64url_decode(jwk["x"]) + b64url_decode(jwk["y"])
        self.public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        self.clock = SystemClock()

    def proofs(self, count: int) -> list[tuple[str, bytes, bytes]]:
        rows = []
        for _ in range(count):
            proof = self.key.proof("POST", URL, access_key=ACCESS_KEY)
            signing_input, _, signature = proof.rpartition(".")
            raw = b64url_decode(signature)
            der = encode_dss_signature(
                int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            )
            rows.append((proof, signing_input.encode("ascii"), der))
        return rows

    def verifier(self) -> DPoPVerifier:
        # A fresh store per round keeps MemoryStore's replay sweep (over 4096 entries) out.
        return DPoPVerifier(MemoryStore(clock=self.clock), self.clock)


async def _verify(setup: Setup, verifier: DPoPVerifier, proof: str) -> None:
    await verifier.verify(
        [proof], method="POST", url=URL, access_key=ACCESS_KEY, expected_jkt=setup.key.thumbprint
    )


async def _interleaved(
    setup: Setup, verifier: DPoPVerifier, rows: list[tuple[str, bytes, bytes]]
) -> tuple[list[int], list[int]]:
    """The bare check and verify, one for one, inside one coroutine (no loop entry per call)."""
    interleaved, verify = [], []
    for proof, message, der in rows:
        started = time.perf_counter_ns()
        setup.public.verify(der, message, ECDSA_SHA256)
        interleaved.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        await _verify(setup, verifier, proof)
        verify.append(time.perf_counter_ns() - started)
    return interleaved, verify


def wall(rounds: int, per_round: int) -> dict[str, float]:
    setup = Setup()
    medians: dict[str, list[float]] = {"tight": [], "interleaved": [], "verify": []}
    loop = asyncio.new_event_loop()
    for _ in range(rounds):
        rows = setup.proofs(per_round)
        verifier = setup.verifier()
        loop.run_until_complete(_verify(setup, verifier, setup.proofs(1)[0][0]))  # warm up
        gc.collect()
        tight = []
        for _, message, der in rows:
            started = time.perf_counter_ns()
            setup.public.verify(der, message, ECDSA_SHA256)
            tight.append(time.perf_counter_ns() - started)
        interleaved, verify = loop.run_until_complete(_interleaved(setup, verifier, rows))
        for name, samples in (("tight", tight), ("interleaved", interleaved), ("verify", verify)):
            medians[name].append(statistics.median(samples) / 1000)
    loop.close()
    return {name: statistics.median(values) for name, values in medians.items()}


def run_for_callgrind(what: str, count: int) -> None:
    """Body of one callgrind child: the counted loop runs inside ``operator.call``."""
    setup = Setup()
    rows = setup.proofs(count + 20)
    verifier = setup.verifier()
    loop = asyncio.new_event_loop()
    for proof, message, der in rows[:20]:  # warm up, outside the count
        setup.public.verify(der, message, ECDSA_SHA256)
        loop.run_until_complete(_verify(setup, verifier, proof))
    counted = rows[20:]

    def bare() -> None:
        for _, message, der in counted:
            setup.public.verify(der, message, ECDSA_SHA256)

    async def verify_all() -> None:
        for proof, _, _ in counted:
            await _verify(setup, verifier, proof)

    gc.collect()
    gc.disable()
    if what == "bare":
        counted_call()(bare)
    else:
        counted_call()(loop.run_until_complete, verify_all())


def callgrind(what: str, count: int) -> int:
    """Instructions for ``count`` operations of ``what``, counted in a child process."""
    return instructions(__file__, what, "--per-round", count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=400)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    parser.add_argument("--no-wall", action="store_true", help="skip the wall-time rounds")
    parser.add_argument("--child", choices=("bare", "verify"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_for_callgrind(args.child, args.per_round)
        return
    if not args.no_wall:
        found = wall(args.rounds, args.per_round)
        tight, interleaved, verify = found["tight"], found["interleaved"], found["verify"]
        verdict = "ok" if verify / tight <= TARGET else "MISS"
        print(f"wall time, {args.rounds} rounds x {args.per_round} proofs (median of medians)")
        print(f"  ES256 verify, tight loop        {tight:8.1f} µs   1.00x")
        share = interleaved / tight
        print(f"  ES256 verify, interleaved       {interleaved:8.1f} µs   {share:.2f}x")
        print(f"  DPoPVerifier.verify             {verify:8.1f} µs   {verify / tight:.2f}x"
              f"  (target <= {TARGET}x) {verdict}")  # fmt: skip
        print(f"  verify / interleaved check      {verify / interleaved:.2f}x")
    if args.callgrind:
        count = 300
        bare = callgrind("bare", count) / count
        verify_ir = callgrind("verify", count) / count
        print(f"callgrind, {count} operations each (instructions per operation)")
        print(f"  ES256 verify                    {bare:10.0f}")
        print(f"  DPoPVerifier.verify             {verify_ir:10.0f}   {verify_ir / bare:.3f}x")
        print(f"  verify adds                     {verify_ir - bare:+10.0f}")


if __name__ == "__main__":
    main()
