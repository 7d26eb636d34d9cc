"""Offline inclusion proofs: one event, its audit path, and the signed checkpoint it is under.

``agentguard audit prove SEQ`` hands an auditor a JSON document::

    {"format": "agentguard.audit.proof/v1", "seq": 41233, "size": 1048576,
     "event": "{...the exact canonical event line...}",
     "proof": ["base64 hash", ...], "root": "base64 root",
     "checkpoint": "origin\\n1048576\\nbase64 root\\n\\n— origin base64sig\\n"}

:func:`verify_proof` checks it with nothing but ``hashlib``, ``base64``, ``json`` and
``cryptography``, and no access to the log; :func:`tlog_proof` renders the same proof as a
``c2sp.org/tlog-proof@v1`` text for generic transparency-log tooling (leaf data = event line).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentguard.audit._chain import AuditEntry, leaf_hash
from agentguard.audit._checkpoints import Checkpoint
from agentguard.audit._merkle import inclusion_proof, root

__all__ = ["PROOF_FORMAT", "prove", "prove_entry", "tlog_proof", "verify_proof"]

PROOF_FORMAT = "agentguard.audit.proof/v1"


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


def tlog_proof(document: Mapping[str, object]) -> str:
    """The ``c2sp.org/tlog-proof@v1`` text of a proof document (the event line goes alongside)."""
    hashes = document["proof"]
    if not isinstance(hashes, list):
        raise ValueError("the proof document has no proof hashes")
    lines = ["c2sp.org/tlog-proof@v1", f"index {document['seq']}", *map(str, hashes), ""]
    return "\n".join(lines) + "\n" + str(document["checkpoint"])


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
