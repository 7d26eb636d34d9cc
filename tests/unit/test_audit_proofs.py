"""Offline proofs: prove() output verifies with the standalone verify_proof(); tampering fails."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from agentguard.audit import (
    Action,
    AuditEntry,
    AuditEvent,
    Checkpoint,
    Ed25519Signer,
    sign_checkpoint,
)
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.audit._merkle import root
from agentguard.audit._proofs import PROOF_FORMAT, prove, prove_entry, tlog_proof, verify_proof

ORIGIN = "audit.example.com/agentguard/test"
SIGNER = Ed25519Signer.generate(ORIGIN)


def build(n: int) -> list[AuditEntry]:
    log: list[AuditEntry] = []
    for i in range(n):
        event = AuditEvent(
            Action.KEY_ISSUE, datetime(2026, 1, 1, tzinfo=timezone.utc), key_id=f"k{i}"
        )
        log.append(seal(event, i, log[-1].hash if log else GENESIS_PREV))
    return log


def checkpoint(log: list[AuditEntry], size: int, signer: Ed25519Signer = SIGNER) -> str:
    return sign_checkpoint(Checkpoint(ORIGIN, size, root([e.hash for e in log[:size]])), [signer])


@pytest.mark.parametrize(("seq", "size"), [(0, 1), (0, 13), (6, 13), (12, 13), (5, 8)])
def test_proof_verifies_offline(seq: int, size: int) -> None:
    log = build(13)
    document = prove_entry(log, seq, checkpoint(log, size))
    assert document["format"] == PROOF_FORMAT
    assert verify_proof(json.loads(json.dumps(document)), [SIGNER.vkey()])


def test_proof_needs_a_trusted_key() -> None:
    log = build(5)
    document = prove_entry(log, 2, checkpoint(log, 5))
    assert not verify_proof(document, [Ed25519Signer.generate(ORIGIN).vkey()])
    assert not verify_proof(document, [])


@pytest.mark.parametrize(
    "field",
    ["seq", "size", "event", "proof-hash", "proof-length", "root", "checkpoint-size", "signature"],
)
def test_tampered_proof_fails(field: str) -> None:
    log = build(13)
    document = prove_entry(log, 6, checkpoint(log, 13))
    tampered = dict(document)
    hashes = list(document["proof"])  # type: ignore[call-overload]
    if field == "seq":
        tampered["seq"] = 7
    elif field == "size":
        tampered["size"] = 14
    elif field == "event":
        tampered["event"] = str(document["event"]).replace('"k6"', '"k7"')
    elif field == "proof-hash":
        hashes[1] = base64.b64encode(bytes(32)).decode()
        tampered["proof"] = hashes
    elif field == "proof-length":
        tampered["proof"] = [*hashes, hashes[0]]
    elif field == "root":
        tampered["root"] = base64.b64encode(bytes(32)).decode()
    elif field == "checkpoint-size":
        tampered["checkpoint"] = str(document["checkpoint"]).replace("\n13\n", "\n14\n")
    else:
        text, _, line = str(document["checkpoint"]).rstrip("\n").rpartition("\n")
        name, blob = line.rsplit(" ", 1)
        raw = bytearray(base64.b64decode(blob))
        raw[-1] ^= 1
        tampered["checkpoint"] = f"{text}\n{name} {base64.b64encode(bytes(raw)).decode()}\n"
    assert not verify_proof(tampered, [SIGNER.vkey()])


def test_prove_refuses_a_checkpoint_that_is_not_the_logs() -> None:
    log, other = build(6), build(7)
    with pytest.raises(ValueError, match="root"):
        prove_entry(log, 2, checkpoint(other[1:], 6))
    with pytest.raises(ValueError, match="seq"):
        prove_entry(log, 5, checkpoint(log, 5))
    with pytest.raises(ValueError, match="leaf"):
        prove([e.hash for e in log], log[3].body, 2, checkpoint(log, 6))


def test_tlog_proof_text_follows_c2sp() -> None:
    log = build(6)
    note = checkpoint(log, 6)
    document = prove_entry(log, 4, note)
    text = tlog_proof(document)
    lines = text.split("\n")
    assert lines[:2] == ["c2sp.org/tlog-proof@v1", "index 4"]
    assert lines[2 : 2 + len(document["proof"])] == document["proof"]  # type: ignore[arg-type]
    assert text.endswith("\n\n" + note)


def test_verify_proof_never_raises_on_junk() -> None:
    assert not verify_proof({}, [SIGNER.vkey()])
    assert not verify_proof({"checkpoint": 5, "seq": "x", "size": None}, ["junk"])
