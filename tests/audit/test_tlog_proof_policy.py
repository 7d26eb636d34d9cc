"""verify_tlog_proof's policy: the log's origin, witness quorums, duplicate lines, junk, types.

A proof is bound to one log: a checkpoint of another origin signed by the same key (staging and
prod sharing a key) never verifies. Witness cosignatures count toward a quorum only when valid,
once per key and never repeated. A size or index line too long for Python's int parser is junk
(``False``), not a ``ValueError``; arguments of the wrong type are the caller's ``TypeError``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    Checkpoint,
    MalformedNote,
    open_checkpoint,
    prove_entry,
    read_tlog_proof,
    sign_checkpoint,
    tlog_proof,
    verify_tlog_proof,
)
from agentguard.audit._cosignatures import CosignatureSigner
from agentguard.audit._merkle import root
from agentguard.audit._proofs import MalformedProof
from tests.audit._tlog_logs import ORIGIN, SIGNER, STRANGER, log, note, proof_text

VKEYS = [SIGNER.vkey()]
STAGING = "audit.example.com/agentguard/staging"
W1, W2 = CosignatureSigner.generate("w1.example"), CosignatureSigner.generate("w2.example")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _body(text: str) -> bytes:
    return text[: text.index("\n\n") + 1].encode()


def _proof_under(index: int, size: int, checkpoint: str) -> str:
    return tlog_proof(prove_entry(log(size), index, checkpoint))


def _cosigned(size: int, *lines: str) -> str:
    return note(size) + "".join(lines)


@st.composite
def positions(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, 300))
    return draw(st.integers(0, size - 1)), size


@SETTINGS
@given(positions())
def test_a_proof_of_another_origin_signed_by_the_same_key_fails(position: tuple[int, int]) -> None:
    index, size = position
    leaves = [e.hash for e in log(size)]
    staging = sign_checkpoint(Checkpoint(STAGING, size, root(leaves)), [SIGNER])
    text, event = _proof_under(index, size, staging), log(size)[index].body
    assert not verify_tlog_proof(text, event, VKEYS, origin=ORIGIN)
    assert verify_tlog_proof(text, event, VKEYS, origin=STAGING)
    assert verify_tlog_proof(proof_text(index, size), event, VKEYS, origin=ORIGIN)
    assert not verify_tlog_proof(proof_text(index, size), event, VKEYS, origin=STAGING)


def test_the_origin_is_required() -> None:
    text, event = proof_text(5, 13), log(13)[5].body
    with pytest.raises(TypeError, match="origin"):
        verify_tlog_proof(text, event, VKEYS)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="origin"):
        verify_tlog_proof(text, event, VKEYS, origin=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="origin"):
        verify_tlog_proof(text, event, VKEYS, origin="")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"event": None}, "the event must be"),
        ({"text": None}, "the proof text must be"),
        ({"vkeys": SIGNER.vkey()}, "vkeys must be a list"),
        ({"vkeys": SIGNER.vkey().encode()}, "vkeys must be a list"),
        ({"vkeys": None}, "vkeys must be a list"),
        ({"vkeys": [SIGNER.vkey().encode()]}, "each of vkeys"),
        ({"witnesses": W1.vkey()}, "witnesses must be a list"),
        ({"quorum": "1", "witnesses": [W1.vkey()]}, "quorum must be int"),
        ({"quorum": True, "witnesses": [W1.vkey()]}, "quorum must be int"),
    ],
)
def test_wrong_argument_types_are_a_type_error(changes: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {
        "text": proof_text(5, 13),
        "event": log(13)[5].body,
        "vkeys": VKEYS,
        "origin": ORIGIN,
    }
    arguments.update(changes)
    with pytest.raises(TypeError, match=match):
        verify_tlog_proof(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("digits", [21, 4301, 5000])
def test_a_huge_size_or_index_is_junk_not_a_value_error(digits: int) -> None:
    huge = "9" * digits
    signed = sign_checkpoint(Checkpoint(ORIGIN, 1, root([log(1)[0].hash])), [SIGNER])
    lines = signed.split("\n")
    lines[1] = huge
    bad_note = "\n".join(lines)
    for text in (
        f"c2sp.org/tlog-proof@v1\nindex 0\n\n{bad_note}",
        f"c2sp.org/tlog-proof@v1\nindex {huge}\n\n{signed}",
    ):
        with pytest.raises(MalformedProof):
            read_tlog_proof(text)
        assert verify_tlog_proof(text, log(1)[0].body, VKEYS, origin=ORIGIN) is False


@given(st.integers(min_value=0, max_value=2**70))
def test_checkpoint_sizes_are_u64(size: int) -> None:
    text = f"{ORIGIN}\n{size}\n{'A' * 43}=\n".encode()
    if size < 2**64:
        assert Checkpoint.parse(text).size == size
    else:
        with pytest.raises(MalformedNote, match="2\\*\\*64"):
            Checkpoint.parse(text)


def test_two_lines_of_one_trusted_key_are_refused() -> None:
    signed = note(13)
    line = signed[signed.index("\n\n") + 2 :]
    doubled = signed + line
    with pytest.raises(MalformedNote, match="duplicate signature line"):
        open_checkpoint(doubled, VKEYS)
    assert not verify_tlog_proof(
        _proof_under(5, 13, doubled), log(13)[5].body, VKEYS, origin=ORIGIN
    )
    # repeated lines of a key nobody trusts here are ignored, as a C2SP verifier does
    stranger = sign_checkpoint(Checkpoint(ORIGIN, 13, root([e.hash for e in log(13)])), [STRANGER])
    foreign = stranger[stranger.index("\n\n") + 2 :]
    assert open_checkpoint(signed + foreign + foreign, VKEYS).size == 13
    text = _proof_under(5, 13, signed + foreign + foreign)
    assert verify_tlog_proof(text, log(13)[5].body, VKEYS, origin=ORIGIN)


def test_a_witness_quorum_counts_valid_distinct_cosignatures() -> None:
    body = _body(note(13))
    one, two = W1.line(body, 1_700_000_000), W2.line(body, 1_700_000_001)
    event = log(13)[5].body
    both = _proof_under(5, 13, _cosigned(13, one, two))
    witnesses = [W1.vkey(), W2.vkey()]
    assert verify_tlog_proof(both, event, VKEYS, origin=ORIGIN, witnesses=witnesses, quorum=2)
    assert verify_tlog_proof(both, event, VKEYS, origin=ORIGIN, witnesses=witnesses)  # quorum 1
    single = _proof_under(5, 13, _cosigned(13, one))
    assert verify_tlog_proof(single, event, VKEYS, origin=ORIGIN, witnesses=witnesses)
    assert not verify_tlog_proof(single, event, VKEYS, origin=ORIGIN, witnesses=witnesses, quorum=2)
    plain = proof_text(5, 13)
    assert not verify_tlog_proof(plain, event, VKEYS, origin=ORIGIN, witnesses=[W1.vkey()])
    # the same witness twice (at two times) is one witness; a repeated line is refused outright
    twice = _proof_under(5, 13, _cosigned(13, one, W1.line(body, 1_700_000_009)))
    assert not verify_tlog_proof(twice, event, VKEYS, origin=ORIGIN, witnesses=witnesses, quorum=2)
    assert not verify_tlog_proof(twice, event, VKEYS, origin=ORIGIN, witnesses=[W1.vkey()])
    repeated = _proof_under(5, 13, _cosigned(13, one, one))
    assert not verify_tlog_proof(repeated, event, VKEYS, origin=ORIGIN, witnesses=[W1.vkey()])
    # a cosignature of another checkpoint under a configured key fails the note
    forged = W2.line(_body(note(12)), 1_700_000_001)
    bad = _proof_under(5, 13, _cosigned(13, one, forged))
    assert not verify_tlog_proof(bad, event, VKEYS, origin=ORIGIN, witnesses=witnesses)
    # the witnesses' lines never stand in for the log's own signature
    assert not verify_tlog_proof(both, event, [], origin=ORIGIN, witnesses=witnesses)


def test_a_quorum_the_witnesses_cannot_meet_is_the_callers_error() -> None:
    text, event = proof_text(5, 13), log(13)[5].body
    with pytest.raises(ValueError, match="quorum of 2"):
        verify_tlog_proof(text, event, VKEYS, origin=ORIGIN, witnesses=[W1.vkey()], quorum=2)
    with pytest.raises(ValueError, match="quorum of 2"):  # one key given twice is one witness
        verify_tlog_proof(
            text, event, VKEYS, origin=ORIGIN, witnesses=[W1.vkey(), W1.vkey()], quorum=2
        )
    with pytest.raises(ValueError, match="quorum of -1"):
        verify_tlog_proof(text, event, VKEYS, origin=ORIGIN, witnesses=[W1.vkey()], quorum=-1)
    with pytest.raises(MalformedNote):
        verify_tlog_proof(text, event, VKEYS, origin=ORIGIN, witnesses=[SIGNER.vkey()])
