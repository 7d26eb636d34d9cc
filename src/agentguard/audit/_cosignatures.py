"""Witness cosignatures on checkpoints: C2SP tlog-cosignature ``cosignature/v1`` (Ed25519).

A witness that checked a checkpoint is consistent with every earlier one it saw adds a note
signature line under its own key::

    — witness.example/w1 base64(key ID || 8-byte big-endian timestamp || Ed25519 signature)

The key ID is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` (type ``0x04``), the vkey
``name+hex(key ID)+base64(0x04 || public key)``, and the signature covers::

    cosignature/v1
    time <timestamp, ASCII decimal>
    <the checkpoint body: origin, size, base64 root, any extension lines>

Verifiers are configured with witness vkeys out of band. Lines under other keys are ignored;
a line under a configured key that does not verify is a bad cosignature (the note was altered,
or someone forged it), never one more witness. A witness counts once however many lines or
names carry its public key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentguard.audit._checkpoints import MalformedNote, _split_note, key_id
from agentguard.errors import UsageError

__all__ = [
    "COSIGNATURE_TYPE",
    "MAX_TIMESTAMP",
    "CosignatureSigner",
    "WitnessKey",
    "WitnessTally",
    "add_cosignatures",
    "check_distinct",
    "cosignature_message",
    "count_cosignatures",
    "parse_signature_lines",
]

COSIGNATURE_TYPE = 0x04
_LABEL = b"cosignature/v1\n"
_DASH = "\u2014 "
_BLOB = 8 + 64
_MAX_LINES = 100
MAX_TIMESTAMP = 2**63 - 1
"""tlog-cosignature: a timestamp MUST NOT exceed 2^63-1; a larger one is refused."""
_P = 2**255 - 19
# y-coordinates (sign bit cleared) of the small-order points of edwards25519: under such a
# "key" signatures can be forged without any private key, so a vkey naming one is refused.
_SMALL_ORDER = frozenset(
    {
        0,
        1,
        _P - 1,
        *(
            int.from_bytes(bytes.fromhex(h), "little")
            for h in (
                "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
                "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            )
        ),
    }
)


def _check_name(name: str) -> None:
    if (
        not name
        or "+" in name
        or any(ch.isspace() for ch in name)
        or not name.isprintable()
        or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise MalformedNote("a key name is 1-255 bytes, with no spaces and no '+'")


def _b64(text: str) -> bytes:
    """Canonical, padded RFC 4648 base64 only (what tlog-witness requires)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedNote("invalid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNote("non-canonical base64")
    return raw


def cosignature_message(timestamp: int, body: bytes) -> bytes:
    """The bytes a ``cosignature/v1`` signs: label, ``time <timestamp>``, checkpoint body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is an integer from 0 to 2^63-1")
    return _LABEL + b"time %d\n" % timestamp + body


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A trusted witness's ``cosignature/v1`` key, parsed from its vkey."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> WitnessKey:
        """Parse ``name+hexid+base64(0x04 || key)``; raises :class:`MalformedNote`."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise MalformedNote("a witness vkey has the form name+hexid+base64key")
        name, hex_id, encoded = parts
        _check_name(name)
        try:
            ident = bytes.fromhex(hex_id)
        except ValueError:
            raise MalformedNote("the witness vkey's key ID is not hex") from None
        raw = _b64(encoded)
        if len(raw) != 33 or raw[0] != COSIGNATURE_TYPE:
            raise MalformedNote("a witness vkey is a cosignature/v1 (type 0x04) Ed25519 key")
        key = raw[1:]
        y = int.from_bytes(key, "little") & ((1 << 255) - 1)
        if y >= _P or y in _SMALL_ORDER:
            raise MalformedNote("the witness vkey is not a safe Ed25519 public key")
        if key_id(name, COSIGNATURE_TYPE, key) != ident:
            raise MalformedNote("the witness vkey's key ID does not match its name and key")
        return cls(name=name, key_id=ident, public_key=key)

    def vkey(self) -> str:
        """The vkey text again."""
        encoded = base64.b64encode(bytes([COSIGNATURE_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, body: bytes, blob: bytes) -> int | None:
        """The timestamp of ``blob`` (timestamp || signature) if it cosigns ``body``, else None."""
        if len(blob) != _BLOB:
            return None
        timestamp = int.from_bytes(blob[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return None
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                blob[8:], cosignature_message(timestamp, body)
            )
        except (InvalidSignature, ValueError):
            return None
        return timestamp


class CosignatureSigner:
    """Makes ``cosignature/v1`` lines with an in-memory key: for tests and test witnesses."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key = WitnessKey(name=name, key_id=key_id(name, COSIGNATURE_TYPE, raw), public_key=raw)

    @classmethod
    def generate(cls, name: str) -> CosignatureSigner:
        """A signer with a fresh random key."""
        return cls(name, Ed25519PrivateKey.generate())

    def vkey(self) -> str:
        """The witness vkey to configure verifiers with."""
        return self.key.vkey()

    def line(self, body: bytes, timestamp: int) -> str:
        """The signature line cosigning checkpoint ``body`` at ``timestamp``."""
        signature = self._key.sign(cosignature_message(timestamp, body))
        blob = self.key.key_id + timestamp.to_bytes(8, "big") + signature
        return f"{_DASH}{self.name} {base64.b64encode(blob).decode()}\n"

    def __repr__(self) -> str:
        return f"CosignatureSigner(name={self.name!r}, key_id={self.key.key_id.hex()})"


def parse_signature_lines(text: str) -> list[tuple[str, bytes, bytes]]:
    """Strictly parse signature lines (a tlog-witness 200 body): ``(name, key ID, signature)``.

    Every line must end in a newline, start with an em dash and a space, name a valid key and
    carry canonical base64 of more than four bytes. Raises :class:`MalformedNote`.
    """
    if not text or not text.endswith("\n"):
        raise MalformedNote("signature lines end with a newline")
    if any(ch < " " and ch != "\n" for ch in text):
        raise MalformedNote("signature lines contain no control characters")
    lines = text[:-1].split("\n")
    if len(lines) > _MAX_LINES:
        raise MalformedNote("too many signature lines")
    found: list[tuple[str, bytes, bytes]] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise MalformedNote("a signature line starts with an em dash and a space")
        name, space, encoded = line[len(_DASH) :].partition(" ")
        if not space or " " in encoded:
            raise MalformedNote("a signature line is a key name and one base64 blob")
        _check_name(name)
        raw = _b64(encoded)
        if len(raw) <= 4:
            raise MalformedNote("a signature is a 4-byte key ID and the signature bytes")
        found.append((name, raw[:4], raw[4:]))
    return found


@dataclass(frozen=True, slots=True)
class WitnessTally:
    """How many configured witnesses validly cosigned one checkpoint.

    A witness is one identity: configured keys that share a name or a public key count as one
    (named after the first of them), for the count, the invalid list and the timestamps alike.

    Attributes:
        valid: the names of the witnesses with a valid cosignature (each counted once).
        invalid: the names of configured witnesses with a line that does not verify.
        timestamps: each valid witness's newest valid cosignature timestamp, by name.
    """

    valid: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    timestamps: dict[str, int] = field(default_factory=dict)

    def count(self) -> int:
        """The number of distinct witnesses that validly cosigned."""
        return len(self.valid)

    def meets(self, quorum: int) -> bool:
        """At least ``quorum`` valid cosignatures and no invalid one."""
        return self.count() >= quorum and not self.invalid

    def reached_at(self, quorum: int, not_after: float | None = None) -> int | None:
        """The time since which ``quorum`` witnesses vouch for the checkpoint, else None.

        Each witness's newest valid cosignature counts; this is the ``quorum``-th newest of
        those timestamps (every one of ``quorum`` witnesses cosigned at or after it). With
        ``not_after``, cosignatures dated later than it (a witness's clock ahead of ours, or
        a lie) are valid but do not count here: they cannot make a checkpoint look fresh.
        """
        if quorum < 1 or not self.meets(quorum):
            return None
        stamps = sorted(
            (t for t in self.timestamps.values() if not_after is None or t <= not_after),
            reverse=True,
        )
        return stamps[quorum - 1] if len(stamps) >= quorum else None


def _identities(witnesses: Sequence[WitnessKey]) -> dict[tuple[str, bytes], str]:
    """``(name, key ID) -> identity``: keys sharing a name or a public key are one witness."""
    groups: list[tuple[set[str], set[bytes], str]] = []
    for witness in witnesses:
        joined = [g for g in groups if witness.name in g[0] or witness.public_key in g[1]]
        names = {witness.name}.union(*(g[0] for g in joined))
        keys = {witness.public_key}.union(*(g[1] for g in joined))
        label = joined[0][2] if joined else witness.name
        groups = [g for g in groups if g not in joined] + [(names, keys, label)]
    return {
        (w.name, w.key_id): label
        for w in witnesses
        for names, keys, label in groups
        if w.name in names
    }


def check_distinct(witnesses: Sequence[WitnessKey]) -> None:
    """Refuse two configured witnesses with one name or one public key (:class:`UsageError`).

    Two entries for one witness would look like two witnesses to a quorum.
    """
    names: set[str] = set()
    keys: set[bytes] = set()
    for witness in witnesses:
        if witness.name in names:
            raise UsageError(f"the witness {witness.name!r} is configured twice (one name)")
        if witness.public_key in keys:
            raise UsageError(
                f"the witness {witness.name!r} has the public key of another configured witness"
            )
        names.add(witness.name)
        keys.add(witness.public_key)


def count_cosignatures(
    notes: Iterable[str], witnesses: Sequence[WitnessKey], body: bytes | None = None
) -> WitnessTally:
    """Tally the configured ``witnesses`` that cosigned the checkpoint in ``notes``.

    ``notes`` are signed notes of one checkpoint (the same text; the log-signed note and its
    cosigned copies): notes with other text than ``body`` (or than the first note's, when
    ``body`` is None) are skipped. Raises :class:`MalformedNote` for a malformed note.
    """
    by_key = {(w.name, w.key_id): w for w in witnesses}
    identity = _identities(witnesses)
    stamps: dict[str, int] = {}
    invalid: set[str] = set()
    for note in notes:
        text, signatures = _split_note(note)
        if body is None:
            body = text
        if text != body:
            continue
        for name, ident, blob in signatures:
            witness = by_key.get((name, ident))
            if witness is None:
                continue
            who = identity[(name, ident)]
            timestamp = witness.verify(text, blob)
            if timestamp is None:
                invalid.add(who)
            else:
                stamps[who] = max(stamps.get(who, timestamp), timestamp)
    return WitnessTally(
        valid=tuple(sorted(stamps)), invalid=tuple(sorted(invalid)), timestamps=stamps
    )


def add_cosignatures(note: str, lines: Iterable[str]) -> str:
    """``note`` with the signature ``lines`` appended, each once (a cosigned note)."""
    present = set(note[note.rfind("\n\n") + 2 :].splitlines(keepends=True))
    extra = [line for line in dict.fromkeys(lines) if line not in present]
    return note + "".join(extra)
