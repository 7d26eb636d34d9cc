"""c2sp.org/tlog-proof@v1: our writer's exact layout, our strict reader, our verifier.

Generated logs and indices; every tamper (a flipped bit in any hash, another index, another
event, another key, a hash dropped or added, any one-character edit of the text) is refused;
junk never raises anything but :class:`MalformedProof` and is never accepted.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard.audit import (
    MalformedNote,
    TlogProof,
    prove_entry,
    read_tlog_proof,
    tlog_proof,
    verify_tlog_proof,
)
from agentguard.audit._proofs import MalformedProof
from tests.audit._tlog_logs import ORIGIN, SIGNER, STRANGER, log, note, proof_text

VKEYS = [SIGNER.vkey()]
GOOD = proof_text(5, 13)
HASH = GOOD.split("\n")[2]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def positions(draw: st.DrawFn, largest: int = 600) -> tuple[int, int]:
    size = draw(st.one_of(st.integers(1, 17), st.integers(1, largest)))
    return draw(st.integers(0, size - 1)), size


@SETTINGS
@given(positions())
def test_the_text_has_exactly_the_specs_lines(position: tuple[int, int]) -> None:
    index, size = position
    document = prove_entry(log(size), index, note(size))
    text = tlog_proof(document)
    hashes: list[str] = document["proof"]  # type: ignore[assignment]
    head = f"c2sp.org/tlog-proof@v1\nindex {index}\n" + "".join(h + "\n" for h in hashes)
    assert text == head + "\n" + note(size)
    parsed = read_tlog_proof(text)
    assert parsed == TlogProof(
        index=index,
        hashes=tuple(base64.b64decode(h) for h in hashes),
        checkpoint=note(size),
        size=size,
        root=base64.b64decode(str(document["root"])),
    )
    assert verify_tlog_proof(text, log(size)[index].body, VKEYS, origin=ORIGIN)
    assert verify_tlog_proof(text.encode(), log(size)[index].body.decode(), VKEYS, origin=ORIGIN)


@SETTINGS
@given(positions(), st.data())
def test_every_tamper_is_refused(position: tuple[int, int], data: st.DataObject) -> None:
    index, size = position
    text, event = proof_text(index, size), log(size)[index].body
    proof = read_tlog_proof(text)
    header = text.partition(f"index {index}\n")[0]
    if proof.hashes:  # a flipped bit in any hash of the path
        which = data.draw(st.integers(0, len(proof.hashes) - 1))
        bit = data.draw(st.integers(0, 255))
        hashes = list(proof.hashes)
        flipped = bytearray(hashes[which])
        flipped[bit // 8] ^= 1 << (bit % 8)
        hashes[which] = bytes(flipped)
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in hashes)
        tampered = f"{header}index {index}\n{lines}\n{proof.checkpoint}"
        assert not verify_tlog_proof(tampered, event, VKEYS, origin=ORIGIN)
    if size > 1:  # another index, same path and event
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        assert not verify_tlog_proof(
            text.replace(f"index {index}\n", f"index {other}\n"), event, VKEYS, origin=ORIGIN
        )
        assert not verify_tlog_proof(
            text, log(size)[other].body, VKEYS, origin=ORIGIN
        )  # another event
    assert not verify_tlog_proof(text, event + b" ", VKEYS, origin=ORIGIN)
    assert not verify_tlog_proof(text, event, [STRANGER.vkey()], origin=ORIGIN)  # another key
    assert not verify_tlog_proof(text, event, [], origin=ORIGIN)
    assert not verify_tlog_proof(proof_text(index, size, STRANGER), event, VKEYS, origin=ORIGIN)


@SETTINGS
@given(positions(64), st.data())
def test_any_one_character_edit_is_refused(position: tuple[int, int], data: st.DataObject) -> None:
    index, size = position
    text, event = proof_text(index, size), log(size)[index].body
    at = data.draw(st.integers(0, len(text) - 1))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    char = data.draw(st.characters(codec="utf-8") | st.sampled_from("\n =+/A0\r\u2014"))
    if edit == "replace":
        edited = text[:at] + char + text[at + 1 :]
    elif edit == "insert":
        edited = text[:at] + char + text[at:]
    else:
        edited = text[:at] + text[at + 1 :]
    if edited != text:
        assert not verify_tlog_proof(edited, event, VKEYS, origin=ORIGIN)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(), st.binary(), st.builds(lambda t: "c2sp.org/tlog-proof@v1\n" + t, st.text())
    )
)
def test_junk_is_malformed_never_a_crash(junk: str | bytes) -> None:
    with pytest.raises(MalformedProof):
        read_tlog_proof(junk)
    assert not verify_tlog_proof(junk, b'{"seq":0}', VKEYS, origin=ORIGIN)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["", "index 0", "index 1", "extra QQ==", HASH, "\u2014 x AAAA"])
        | st.text(max_size=48),
        max_size=12,
    ),
    positions(8),
)
def test_spliced_lines_never_verify(lines: list[str], position: tuple[int, int]) -> None:
    index, size = position
    text = "c2sp.org/tlog-proof@v1\n" + "\n".join(lines) + "\n" + note(size)
    if text != proof_text(index, size):
        assert not verify_tlog_proof(text, log(size)[index].body, VKEYS, origin=ORIGIN)


def _swap(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (_swap(GOOD, "c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"), "first line"),
        (_swap(GOOD, "index 5", "index 05"), "leading zeros"),
        (_swap(GOOD, "index 5", "index +5"), "leading zeros"),
        (_swap(GOOD, "index 5", "index  5"), "leading zeros"),
        (_swap(GOOD, "index 5", "index \u0665"), "leading zeros"),
        (_swap(GOOD, "index 5", "Index 5"), "expected 'index N'"),
        (_swap(GOOD, "index 5", "index 13"), "not below"),
        (_swap(GOOD, "index 5\n", "extra \nindex 5\n"), "extra"),
        (_swap(GOOD, "index 5\n", "extra QQ\nindex 5\n"), "base64"),
        (_swap(GOOD, "index 5\n", "extra QR==\nindex 5\n"), "canonical"),
        (_swap(GOOD, HASH + "\n", ""), "exactly 4 hashes, not 3"),
        (_swap(GOOD, HASH + "\n", HASH + "\n" + HASH + "\n"), "exactly 4 hashes, not 5"),
        (_swap(GOOD, HASH, HASH[:-3] + "A=="), "32-byte"),
        (_swap(GOOD, HASH, HASH[:-2] + "B="), "canonical"),
        (_swap(GOOD, HASH, "0" * 64), "32-byte"),
        (_swap(GOOD, HASH, "!" * 44), "not base64"),
        (GOOD.replace("\n", "\r\n"), "first line"),
        (_swap(GOOD, "\n\naudit", "\naudit"), "not base64"),
        (GOOD + "trailing", "checkpoint"),
        (GOOD + "\n", "checkpoint"),
        (GOOD[: GOOD.index("\n\n") + 2], "checkpoint"),
        ("c2sp.org/tlog-proof@v1\nindex 0\n" + "\n" * 3, "checkpoint"),
        ("c2sp.org/tlog-proof@v1\nindex 0\n" + (HASH + "\n") * 65 + "\n", "longer than any"),
        ("c2sp.org/tlog-proof@v1\nindex 0", "blank line"),
        (b"c2sp.org/tlog-proof@v1\n\xff", "UTF-8"),
    ],
)
def test_malformed_proofs_are_refused_with_a_reason(text: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedProof, match=reason):
        read_tlog_proof(text)
    assert not verify_tlog_proof(text, log(13)[5].body, VKEYS, origin=ORIGIN)


def test_extra_data_round_trips_and_is_not_trusted() -> None:
    document = prove_entry(log(13), 5, note(13))
    text = tlog_proof(document, extra=b"context the verifier ignores")
    assert (
        text.split("\n")[1] == "extra " + base64.b64encode(b"context the verifier ignores").decode()
    )
    assert read_tlog_proof(text).extra == b"context the verifier ignores"
    assert verify_tlog_proof(text, log(13)[5].body, VKEYS, origin=ORIGIN)


def test_the_writer_refuses_a_document_that_would_not_read_back() -> None:
    document = prove_entry(log(13), 5, note(13))
    with pytest.raises(MalformedProof):
        tlog_proof({**document, "proof": document["proof"][1:]})  # type: ignore[index]
    with pytest.raises(MalformedProof):
        tlog_proof({**document, "seq": "5"})
    with pytest.raises(MalformedProof):
        tlog_proof(document, extra=b"")


def test_an_event_at_its_index_must_name_that_seq() -> None:
    # a leaf whose bytes are in the log but do not say which seq they are is no agentguard event
    text = proof_text(0, 1)
    assert verify_tlog_proof(text, log(1)[0].body, VKEYS, origin=ORIGIN)
    assert b'"seq":0' in log(1)[0].body


def test_a_malformed_vkey_is_the_callers_error() -> None:
    with pytest.raises(MalformedNote):
        verify_tlog_proof(GOOD, log(13)[5].body, ["not a vkey"], origin=ORIGIN)
