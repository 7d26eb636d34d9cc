"""Offline inclusion proofs: one event, its audit path, and the signed checkpoint it is under.

``agentguard audit prove SEQ`` hands an auditor a JSON document::

    {"format": "agentguard.audit.proof/v1", "seq": 41233, "size": 1048576,
     "event": "{...the exact canonical event line...}",
     "proof": ["base64 hash", ...], "root": "base64 root",
     "checkpoint": "origin\\n1048576\\nbase64 root\\n\\n— origin base64sig\\n"}

:func:`verify_proof` checks it with nothing but ``hashlib``, ``base64``, ``json`` and
``cryptography``, and no access to the log. :func:`tlog_proof` renders the same proof as a
``c2sp.org/tlog-proof@v1`` text (https://c2sp.org/tlog-proof), which generic transparency-log
tooling reads; :func:`read_tlog_proof` parses one strictly and :func:`verify_tlog_proof` checks
one against the event's exact bytes, the log's origin, its trusted keys and, optionally, a quorum
of witness cosignatures.

The event travels *alongside* the tlog-proof, not in its ``extra`` line: the spec treats a
proof as a detached signature over data the verifier already holds, and keeps ``extra`` for
unauthenticated context or for data needed to rebuild the record hash beyond the record itself
(its example: a VRF proof). Our record hash needs nothing but the event bytes
(``SHA-256(0x00 || event)``), so ``prove --tlog --out DIR`` writes ``SEQ.tlog-proof`` and the
event's bytes as ``SEQ.event``, the pair a third party verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentguard.audit._chain import AuditEntry, leaf_hash
from agentguard.audit._checkpoints import (
    MAX_NOTE_BYTES,
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    _is_u64,
    _split_note,
    open_checkpoint,
)
from agentguard.audit._cosignatures import WitnessKey, count_cosignatures
from agentguard.audit._merkle import HASH_SIZE, inclusion_proof, root, verify_inclusion

__all__ = [
    "PROOF_FORMAT",
    "TLOG_PROOF_HEADER",
    "MalformedProof",
    "TlogProof",
    "prove",
    "prove_entry",
    "read_tlog_proof",
    "tlog_proof",
    "verify_proof",
    "verify_tlog_proof",
]

PROOF_FORMAT = "agentguard.audit.proof/v1"
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
# A tree of fewer than 2**64 leaves has audit paths of at most 64 hashes.
_MAX_PROOF_HASHES = 64
_MAX_EXTRA_BYTES = 1 << 16
_MAX_TLOG_PROOF_CHARS = MAX_NOTE_BYTES + 4 * _MAX_EXTRA_BYTES // 3 + 8192


class MalformedProof(CheckpointError):
    """The text is not a well-formed ``c2sp.org/tlog-proof@v1`` proof.

    Catch it as :class:`~agentguard.audit.CheckpointError` (or ``ValueError``).
    """


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A parsed ``c2sp.org/tlog-proof@v1`` text: not yet verified, only well formed.

    ``checkpoint`` is the signed note, verbatim; ``size`` and ``root`` are read from its text
    and mean nothing until :func:`verify_tlog_proof` (or the reader's own check) has verified
    the note's signature with a trusted key. ``extra`` is the spec's opaque, unauthenticated
    extra data (``None`` when the line is absent; agentguard writes none).
    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    size: int
    root: bytes
    extra: bytes | None = None


def prove(leaves: Sequence[bytes], event: bytes, seq: int, checkpoint: str) -> dict[str, object]:
    """The proof document that ``event`` (at ``seq``) is in the log under ``checkpoint``.

    ``leaves`` are the log's leaf hashes from seq 0, at least the checkpoint's size of them;
    ``checkpoint`` is the signed note text. Raises ``ValueError`` if the event is not the leaf at
    ``seq`` or the checkpoint's root is not the root of ``leaves`` at its size.
    """
    text = checkpoint[: checkpoint.rfind("\n\n") + 1].encode()
    head = Checkpoint.parse(text)
    if not 0 <= seq < head.size <= len(leaves):
        raise ValueError(f"seq {seq} is not under a checkpoint of size {head.size}")
    if leaf_hash(event) != leaves[seq]:
        raise ValueError(f"the event is not the leaf at seq {seq}")
    if root(leaves[: head.size]) != head.root:
        raise ValueError("the checkpoint's root is not the log's root at its size")
    path = inclusion_proof(leaves, seq, head.size)
    return {
        "format": PROOF_FORMAT,
        "seq": seq,
        "size": head.size,
        "event": event.decode("utf-8"),
        "proof": [base64.b64encode(h).decode() for h in path],
        "root": base64.b64encode(head.root).decode(),
        "checkpoint": checkpoint,
    }


def prove_entry(entries: Sequence[AuditEntry], seq: int, checkpoint: str) -> dict[str, object]:
    """:func:`prove` for entries read from a store (``await store.read(0, size)``)."""
    return prove([e.hash for e in entries], entries[seq].body, seq, checkpoint)


def _canonical_b64(text: str, what: str) -> bytes:
    """Strict RFC 4648 §4 base64: the alphabet, padding, and the one canonical encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedProof(f"{what} is not base64") from None
    if base64.b64encode(raw).decode() != text:
        raise MalformedProof(f"{what} is not in canonical base64")
    return raw


def _proof_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def tlog_proof(document: Mapping[str, object], *, extra: bytes | None = None) -> str:
    """The ``c2sp.org/tlog-proof@v1`` text of a :func:`prove` document.

    The lines: the header, an ``extra`` line only when ``extra`` is given, ``index N``, the
    audit path (one base64 hash a line, leaf's sibling first), a blank line, then the signed
    checkpoint note verbatim. The event is not in it: it goes alongside (see the module's
    docstring). Raises ``MalformedProof`` (a :class:`~agentguard.audit.CheckpointError`) if the
    document cannot make a well-formed proof.
    """
    seq, hashes, note = document.get("seq"), document.get("proof"), document.get("checkpoint")
    if type(seq) is not int or not isinstance(hashes, list) or not isinstance(note, str):
        raise MalformedProof("the proof document needs an integer seq, proof hashes and a note")
    lines = [TLOG_PROOF_HEADER]
    if extra is not None:
        lines.append("extra " + base64.b64encode(extra).decode())
    lines.append(f"index {seq}")
    lines.extend(str(item) for item in hashes)
    text = "\n".join(lines) + "\n\n" + note
    read_tlog_proof(text)  # never hand out a proof our own strict reader refuses
    return text


def read_tlog_proof(text: str | bytes) -> TlogProof:
    """Parse a ``c2sp.org/tlog-proof@v1`` text strictly.

    Raises :class:`~agentguard.audit.CheckpointError` (its subclass ``MalformedProof``).

    Refused: a wrong header; an ``extra`` line that is empty or not canonical base64; an index
    with a sign, leading zeros or non-ASCII digits; a hash line that is not the canonical
    base64 of 32 bytes; no blank line before the note; a note that is not a well-formed signed
    checkpoint; an index not below the checkpoint's size; and an audit path whose length is not
    exactly the one RFC 6962 gives for that index and size. Signatures are not checked here.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedProof("a tlog-proof is UTF-8 text") from None
    if not isinstance(text, str) or len(text) > _MAX_TLOG_PROOF_CHARS:
        raise MalformedProof("not a tlog-proof text of a sane size")
    header, _, rest = text.partition("\n")
    if header != TLOG_PROOF_HEADER:
        raise MalformedProof(f"the first line must be {TLOG_PROOF_HEADER}")
    line, _, rest = rest.partition("\n")
    extra = None
    if line.startswith("extra "):
        extra = _canonical_b64(line[len("extra ") :], "the extra data")
        if not extra or len(extra) > _MAX_EXTRA_BYTES:
            raise MalformedProof("the extra line must carry 1 to 65536 bytes")
        line, _, rest = rest.partition("\n")
    number = line.removeprefix("index ")
    if number == line or not _is_u64(number):
        raise MalformedProof("expected 'index N', N a decimal below 2**64 without leading zeros")
    index = int(number)
    hashes: list[bytes] = []
    while True:
        line, newline, rest = rest.partition("\n")
        if not newline:
            raise MalformedProof("no blank line between the audit path and the checkpoint")
        if not line:
            break
        if len(hashes) == _MAX_PROOF_HASHES:
            raise MalformedProof("the audit path is longer than any tree allows")
        digest = _canonical_b64(line, "an audit path line")
        if len(digest) != HASH_SIZE:
            raise MalformedProof("an audit path line is not a 32-byte hash")
        hashes.append(digest)
    try:
        body, _ = _split_note(rest)
        head = Checkpoint.parse(body)
    except CheckpointError as error:
        raise MalformedProof(f"the checkpoint is not a signed checkpoint note: {error}") from None
    if index >= head.size:
        raise MalformedProof(f"index {index} is not below the checkpoint's size {head.size}")
    if len(hashes) != _proof_length(index, head.size):
        raise MalformedProof(
            f"an audit path for index {index} in a tree of {head.size} has exactly "
            f"{_proof_length(index, head.size)} hashes, not {len(hashes)}"
        )
    return TlogProof(index, tuple(hashes), rest, head.size, head.root, extra)


def _typed(value: object, types: tuple[type, ...], what: str) -> None:
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise TypeError(f"{what} must be {names}, not {type(value).__name__}")


def _keys(value: object, item: tuple[type, ...], what: str) -> Sequence[object]:
    """``value`` as a sequence of ``item``s; a bare string is one key, not a list of letters."""
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a list of keys, not {type(value).__name__}")
    for key in value:
        _typed(key, item, f"each of {what}")
    return value


def verify_tlog_proof(
    text: str | bytes,
    event: bytes | str,
    vkeys: Sequence[str | NoteVerifier],
    *,
    origin: str,
    witnesses: Sequence[str | WitnessKey] = (),
    quorum: int | None = None,
) -> bool:
    """Whether ``text`` proves that ``event`` is in the log ``origin``, as a trusted key signed it.

    Each must hold: the text is a well-formed tlog-proof (:func:`read_tlog_proof`); its note
    carries a valid signature by one of ``vkeys``, no trusted key's signature on it fails and no
    trusted key signs it twice; its origin line is exactly ``origin`` (one key may sign the
    checkpoints of several logs, staging and prod say: a proof from another log must not
    count); the audit path, of exactly the expected length, hashes ``SHA-256(0x00 || event)`` at
    the proof's index up to the checkpoint's root (RFC 9162 §2.1.3.2); the event is agentguard
    JSON whose ``seq`` is that index; and, with ``witnesses`` (``cosignature/v1`` vkeys), at
    least ``quorum`` of them (default 1) validly cosigned the note, none of their lines fails to
    verify and none repeats. Cosignature timestamps are not checked for freshness: use
    ``aics-tlog --max-age`` for that.

    A proof that fails any of these, or is junk, gives ``False``, never an exception. Wrong
    *arguments* are the caller's error and raise: ``TypeError`` for a wrong type (an event that
    is not ``bytes``/``str``, ``vkeys`` given as one string rather than a list, a missing or
    non-string ``origin``), :class:`MalformedNote` for a malformed vkey or witness vkey, and
    ``ValueError`` for an empty ``origin`` or a ``quorum`` that is not between 0 and the number
    of distinct witness keys.
    """
    _typed(text, (str, bytes), "the proof text")
    _typed(event, (bytes, str), "the event")
    _typed(origin, (str,), "origin")
    if not origin:
        raise ValueError("origin is the log's origin line; it cannot be empty")
    verifiers = [
        v if isinstance(v, NoteVerifier) else NoteVerifier.from_vkey(str(v))
        for v in _keys(vkeys, (str, NoteVerifier), "vkeys")
    ]
    keys = [
        w if isinstance(w, WitnessKey) else WitnessKey.from_vkey(str(w))
        for w in _keys(witnesses, (str, WitnessKey), "witnesses")
    ]
    distinct = len({key.public_key for key in keys})
    if quorum is not None and (type(quorum) is not int):
        raise TypeError(f"quorum must be int, not {type(quorum).__name__}")
    required = (1 if keys else 0) if quorum is None else quorum
    if not 0 <= required <= distinct:
        raise ValueError(
            f"a witness quorum of {required} needs that many distinct witness keys "
            f"({distinct} given)"
        )
    data = event.encode("utf-8") if isinstance(event, str) else event
    try:
        proof = read_tlog_proof(text)
        head = open_checkpoint(proof.checkpoint, verifiers)
        if head.origin != origin or _repeats(proof.checkpoint, keys):
            return False
        if required and not count_cosignatures([proof.checkpoint], keys).meets(required):
            return False
    except CheckpointError:
        return False
    if not verify_inclusion(leaf_hash(data), proof.index, head.size, proof.hashes, head.root):
        return False
    try:  # only now, for bytes the log holds: the event names the index it is at
        seq = json.loads(data).get("seq")
    except (AttributeError, ValueError, RecursionError):
        return False
    return type(seq) is int and seq == proof.index


def _repeats(note: str, witnesses: Sequence[WitnessKey]) -> bool:
    """Whether two signature lines of ``note`` are under one of the given witness keys."""
    known = {(w.name, w.key_id) for w in witnesses}
    _, signatures = _split_note(note)
    lines = [(name, ident) for name, ident, _ in signatures if (name, ident) in known]
    return len(lines) != len(set(lines))


def verify_proof(document: Mapping[str, object], vkeys: Sequence[str]) -> bool:
    """Whether ``document`` proves its event is in a log whose checkpoint a trusted key signed.

    Standalone on purpose: an auditor can copy this function (plus its three imports:
    ``base64``, ``hashlib``, ``json``, and ``cryptography``'s Ed25519) and run it without
    agentguard. The steps, each of which must hold:

    1. The checkpoint note carries a valid Ed25519 signature by one of ``vkeys``
       (``name+hexid+base64(0x01 || key)``), and no known key's signature on it fails.
    2. Its text is ``origin``, ``size``, ``base64(root)``; size and root equal the document's.
    3. The event's ``seq`` field equals the document's ``seq``; its leaf hash is
       ``SHA-256(0x00 || event bytes)``.
    4. The audit path has exactly the expected length and, hashed up per RFC 9162 §2.1.3.2 with
       ``SHA-256(0x01 || left || right)``, gives the root.
    """
    h = hashlib.sha256
    try:
        note, seq, size = str(document["checkpoint"]), document["seq"], document["size"]
        text, _, sigs = note.rpartition("\n\n")
        text, ok = text + "\n", False
        for vkey in vkeys:
            name, kid, key = vkey.split("+", 2)
            raw = base64.b64decode(key, validate=True)
            if raw[0] != 1 or h(name.encode() + b"\n" + raw).digest()[:4].hex() != kid:
                return False
            for line in sigs.rstrip("\n").split("\n"):
                signer, _, blob = line.removeprefix("\u2014 ").partition(" ")
                sig = base64.b64decode(blob, validate=True)
                if signer == name and sig[:4].hex() == kid:
                    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig[4:], text.encode())
                    ok = True
        lines = text.split("\n")
        root = base64.b64decode(lines[2], validate=True)
        if not ok or lines[1] != str(size) or document["root"] != lines[2] or len(root) != 32:
            return False
        event = str(document["event"]).encode()
        if type(seq) is not int or type(size) is not int or json.loads(event)["seq"] != seq:
            return False
        hashes = document["proof"]
        if not isinstance(hashes, list):
            return False
        proof = [base64.b64decode(p, validate=True) for p in hashes]
        inner = (seq ^ (size - 1)).bit_length()
        if not 0 <= seq < size or len(proof) != inner + bin(seq >> inner).count("1"):
            return False
        fn, sn, r = seq, size - 1, h(b"\x00" + event).digest()
        for p in proof:
            if len(p) != 32:
                return False
            if fn & 1 or fn == sn:
                r = h(b"\x01" + p + r).digest()
                while not fn & 1 and fn:
                    fn, sn = fn >> 1, sn >> 1
            else:
                r = h(b"\x01" + r + p).digest()
            fn, sn = fn >> 1, sn >> 1
        return sn == 0 and r == root
    except (KeyError, IndexError, TypeError, ValueError, InvalidSignature):
        return False
