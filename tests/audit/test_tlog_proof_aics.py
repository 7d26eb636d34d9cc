"""Differential: aics-tlog, a verifier we did not write, checks our c2sp.org/tlog-proof texts.

A tiny parser written here, inside the aics venv (not ours), splits each proof; aics_tlog's own
``parse_note``/``verify_checkpoint`` check the note with our vkey and its ``verify_inclusion``
the path. Over seeded random log sizes and indices it must accept every proof we make and
refuse every tampered one (a flipped hash, another index, another event, another key, another
origin under the same key, a repeated signature line, an unmet or repeated witness quorum), and our
:func:`verify_tlog_proof` must give the same answer on every case.
"""

from __future__ import annotations

import base64
import json
import random

from agentguard.audit import (
    Checkpoint,
    prove_entry,
    read_tlog_proof,
    sign_checkpoint,
    tlog_proof,
    verify_tlog_proof,
)
from agentguard.audit._cosignatures import CosignatureSigner
from agentguard.audit._merkle import root
from tests.audit._tlog_logs import ORIGIN, SIGNER, STRANGER, log, note, proof_text
from tests.support.aics import tlog_script

W1, W2 = CosignatureSigner.generate("w1.example"), CosignatureSigner.generate("w2.example")

# Runs in the aics venv: stdin is a JSON list of cases, stdout one verdict per case.
VERIFY = r"""
import base64, json, sys
from aics_tlog import leaf_hash, parse_note, parse_vkey, verify_checkpoint, verify_inclusion

def split(text):
    head, blank, note = text.partition("\n\n")
    lines = head.split("\n")
    if not blank or lines[0] != "c2sp.org/tlog-proof@v1":
        raise ValueError("not a tlog-proof")
    at = 2 if lines[1].startswith("extra ") else 1
    word, _, number = lines[at].partition(" ")
    if word != "index" or not number.isdigit() or number != str(int(number)):
        raise ValueError("bad index line")
    return int(number), [base64.b64decode(h, validate=True) for h in lines[at + 1:]], note

verdicts = []
for case in json.load(sys.stdin):
    try:
        index, proof, note = split(case["proof"])
        witnesses = [parse_vkey(w) for w in case.get("witnesses", [])]
        head = verify_checkpoint(
            parse_note(note), parse_vkey(case["vkey"]), witnesses, case.get("quorum", 0),
            expected_origin=case["origin"],
        )
        leaf = leaf_hash(base64.b64decode(case["event"]))
        verdicts.append(
            head.ok and all(len(h) == 32 for h in proof)
            and verify_inclusion(leaf, index, head.size, proof, head.root)
        )
    except ValueError:
        verdicts.append(False)
print(json.dumps(verdicts))
"""


def _case(text: str, event: bytes, vkey: str, label: str, **policy: object) -> dict[str, object]:
    return {
        "proof": text,
        "event": base64.b64encode(event).decode(),
        "vkey": vkey,
        "label": label,
        "origin": ORIGIN,
        **policy,
    }


def _policy_cases() -> list[dict[str, object]]:
    """Another origin under the same key, a repeated log line, and witness quorums."""
    size, index = 13, 5
    event, vkey = log(size)[index].body, SIGNER.vkey()
    staging = sign_checkpoint(
        Checkpoint(ORIGIN + "-staging", size, root([e.hash for e in log(size)])), [SIGNER]
    )
    plain = note(size)
    body = plain[: plain.index("\n\n") + 1].encode()
    one, two = W1.line(body, 1_700_000_000), W2.line(body, 1_700_000_001)
    both = [W1.vkey(), W2.vkey()]

    def under(checkpoint: str) -> str:
        return tlog_proof(prove_entry(log(size), index, checkpoint))

    log_line = plain[plain.index("\n\n") + 2 :]
    return [
        _case(under(staging), event, vkey, "other origin"),
        _case(under(plain + log_line), event, vkey, "repeated log line"),
        _case(under(plain + one + two), event, vkey, "good", witnesses=both, quorum=2),
        _case(under(plain + one), event, vkey, "quorum unmet", witnesses=both, quorum=2),
        _case(under(plain + one + one), event, vkey, "repeated witness", witnesses=both, quorum=1),
    ]


def _flip(text: str, which: int) -> str:
    lines = text.split("\n")
    raw = bytearray(base64.b64decode(lines[2 + which]))
    raw[0] ^= 0x80
    lines[2 + which] = base64.b64encode(bytes(raw)).decode()
    return "\n".join(lines)


def _cases(seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    sizes = [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 2048] + [rng.randint(1, 2100) for _ in range(8)]
    cases, vkey = [], SIGNER.vkey()
    for size in sizes:
        for index in sorted({0, size - 1, rng.randrange(size)}):
            text, event = proof_text(index, size), log(size)[index].body
            cases.append(_case(text, event, vkey, "good"))
            hashes = len(read_tlog_proof(text).hashes)
            if hashes:
                cases.append(_case(_flip(text, rng.randrange(hashes)), event, vkey, "flipped hash"))
            if size > 1:
                other = rng.choice([i for i in (index - 1, index + 1) if 0 <= i < size])
                moved = text.replace(f"\nindex {index}\n", f"\nindex {other}\n")
                cases.append(_case(moved, event, vkey, "wrong index"))
                cases.append(_case(text, log(size)[other].body, vkey, "wrong event"))
            cases.append(_case(text, event, STRANGER.vkey(), "wrong key"))
            cases.append(_case(proof_text(index, size, STRANGER), event, vkey, "foreign log"))
    return cases


def test_aics_tlog_accepts_ours_and_refuses_every_tamper() -> None:
    cases = _cases(seed=22) + _policy_cases()
    verdicts = json.loads(tlog_script(VERIFY, stdin=json.dumps(cases)))
    assert len(verdicts) == len(cases)
    labels = {case["label"] for case in cases}
    assert labels == {
        "good",
        "flipped hash",
        "wrong index",
        "wrong event",
        "wrong key",
        "foreign log",
        "other origin",
        "repeated log line",
        "quorum unmet",
        "repeated witness",
    }
    for case, theirs in zip(cases, verdicts, strict=True):
        ours = verify_tlog_proof(
            str(case["proof"]),
            base64.b64decode(str(case["event"])),
            [str(case["vkey"])],
            origin=str(case["origin"]),
            witnesses=case.get("witnesses", ()),  # type: ignore[arg-type]
            quorum=case.get("quorum"),  # type: ignore[arg-type]
        )
        expected = case["label"] == "good"
        assert theirs is expected, (case["label"], str(case["proof"])[:80])
        assert ours is expected, (case["label"], str(case["proof"])[:80])


def test_the_oracle_can_fail() -> None:
    # the script itself refuses what is not a proof, so an "accept everything" oracle shows up
    junk = [_case("c2sp.org/tlog-proof@v1\nindex 01\n\nx\n", b"{}", SIGNER.vkey(), "junk")]
    assert json.loads(tlog_script(VERIFY, stdin=json.dumps(junk))) == [False]
