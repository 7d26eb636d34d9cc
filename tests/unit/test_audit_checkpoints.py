"""Checkpoints as C2SP signed notes: Go sumdb/note known answers, round trips and rejections."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agentguard.audit._checkpoints import (
    BadSignature,
    Checkpoint,
    CheckpointError,
    Ed25519Signer,
    MalformedNote,
    NoteVerifier,
    Signer,
    UnknownKey,
    key_id,
    open_checkpoint,
    open_note,
    sign_checkpoint,
)

# golang.org/x/mod/sumdb/note's documented example: its signer key, verifier key and note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
    "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ORIGIN = "audit.example.com/agentguard/test"
ROOT = bytes(range(32))


def go_signer() -> Ed25519Signer:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return Ed25519Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_vkey_and_key_id_match_go_sumdb_note() -> None:
    signer = go_signer()
    assert signer.vkey() == GO_VKEY
    assert signer.key_id.hex() == "c74f20a3"
    assert key_id("PeterNeumann", 1, signer.public_key) == bytes.fromhex("c74f20a3")


def test_note_signature_matches_go_sumdb_note_byte_for_byte() -> None:
    signer = go_signer()
    signature = base64.b64encode(signer.key_id + signer.sign(GO_TEXT.encode())).decode()
    assert GO_TEXT + "\n— PeterNeumann " + signature + "\n" == GO_NOTE
    assert open_note(GO_NOTE, [NoteVerifier.from_vkey(GO_VKEY)]) == GO_TEXT.encode()


def test_go_note_with_one_changed_byte_is_rejected() -> None:
    with pytest.raises(BadSignature):
        open_note(
            GO_NOTE.replace("cryptography", "cryptographY"), [NoteVerifier.from_vkey(GO_VKEY)]
        )


def test_checkpoint_body_is_the_tlog_checkpoint_text() -> None:
    checkpoint = Checkpoint(ORIGIN, 1048576, ROOT)
    assert checkpoint.body() == (f"{ORIGIN}\n1048576\n{base64.b64encode(ROOT).decode()}\n".encode())
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


def test_signed_checkpoint_opens_with_its_vkey() -> None:
    signer = Ed25519Signer.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), [signer])
    text, _, signatures = note.rpartition("\n\n")
    assert text + "\n" == Checkpoint(ORIGIN, 7, ROOT).body().decode()
    assert signatures.startswith(f"— {ORIGIN} ") and note.endswith("\n")
    assert open_checkpoint(note, [signer.vkey()]) == Checkpoint(ORIGIN, 7, ROOT)
    assert isinstance(signer, Signer)


def test_unknown_signatures_are_ignored_and_any_trusted_one_suffices() -> None:
    old, new, witness = (Ed25519Signer.generate(n) for n in (ORIGIN, ORIGIN, "witness.example"))
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [old, new, witness])
    assert open_checkpoint(note, [new.vkey()]).size == 3
    assert open_checkpoint(note, [old.vkey()]).size == 3


def test_note_without_a_trusted_signature_is_refused() -> None:
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [Ed25519Signer.generate(ORIGIN)])
    with pytest.raises(UnknownKey):
        open_checkpoint(note, [Ed25519Signer.generate(ORIGIN).vkey()])


def test_altered_checkpoint_fails_its_signature() -> None:
    signer = Ed25519Signer.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [signer])
    with pytest.raises(BadSignature):
        open_checkpoint(note.replace("\n3\n", "\n4\n"), [signer.vkey()])


def test_one_failing_trusted_signature_rejects_the_whole_note() -> None:
    good, forged = Ed25519Signer.generate(ORIGIN), Ed25519Signer.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), [good])
    # A second line with the trusted key's name and ID, signed by another key.
    wrong = base64.b64encode(good.key_id + forged.sign(Checkpoint(ORIGIN, 3, ROOT).body()))
    with pytest.raises(BadSignature):
        open_checkpoint(f"{note}— {ORIGIN} {wrong.decode()}\n", [good.vkey()])


@pytest.mark.parametrize(
    "note",
    [
        "",
        "no blank line\n— a b\n",
        f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n\n",
        f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n\n- {ORIGIN} AAAAAAA=\n",
        f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n\n— {ORIGIN} not*base64\n",
        f"{ORIGIN}\r\n3\n{base64.b64encode(ROOT).decode()}\n\n— {ORIGIN} AAAAAAA=\n",
        f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n\n— {ORIGIN} AAAA\n",
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(MalformedNote):
        open_checkpoint(note, [GO_VKEY])


@pytest.mark.parametrize(
    "text",
    [
        b"origin\n03\n" + base64.b64encode(ROOT) + b"\n",
        b"origin\n-3\n" + base64.b64encode(ROOT) + b"\n",
        b"origin\n3\n" + base64.b64encode(ROOT[:31]) + b"\n",
        b"origin\n3\n" + base64.b64encode(ROOT),
        b"\n3\n" + base64.b64encode(ROOT) + b"\n",
        b"origin\n3\n",
        b"origin\n3\n" + base64.b64encode(ROOT) + b"\n\nextension\n",
    ],
)
def test_malformed_checkpoint_texts_are_refused(text: bytes) -> None:
    with pytest.raises(MalformedNote):
        Checkpoint.parse(text)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_vkeys_are_refused(vkey: str) -> None:
    with pytest.raises(MalformedNote):
        NoteVerifier.from_vkey(vkey)


def test_signer_round_trips_through_pem() -> None:
    signer = Ed25519Signer.generate(ORIGIN)
    assert Ed25519Signer.from_pem(ORIGIN, signer.private_pem()).vkey() == signer.vkey()
    locked = signer.private_pem(b"pw")
    assert b"ENCRYPTED" in locked
    assert Ed25519Signer.from_pem(ORIGIN, locked, b"pw").vkey() == signer.vkey()
    assert "PRIVATE" not in repr(signer)


@given(st.text(max_size=300))
def test_opening_arbitrary_text_raises_only_checkpoint_errors(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_checkpoint(note, [GO_VKEY])


@given(st.binary(max_size=200))
def test_parsing_arbitrary_bytes_never_crashes(text: bytes) -> None:
    try:
        checkpoint = Checkpoint.parse(text)
    except MalformedNote:
        return
    assert checkpoint.body() == text
