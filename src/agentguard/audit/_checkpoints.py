"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, signed with Ed25519.

A checkpoint commits to the log's first ``size`` events by their Merkle root::

    audit.example.com/agentguard/prod
    1048576
    Fk3x…base64 root…=

    — audit.example.com/agentguard/prod a3F9…base64(key ID || signature)…=

A signature line carries the key name and ``base64(key ID || Ed25519 signature)`` over the text
above the blank line, including its final newline. The key ID is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``, and a verifier key ("vkey") is the text
``name+hex(key ID)+base64(0x01 || public key)``, as Go's ``golang.org/x/mod/sumdb/note`` and
every tlog witness print them, so their tools open our checkpoints and ours open theirs.

Verifiers are configured with vkeys out of band, never with keys read from the log. Signatures
by unknown keys are ignored (witness cosignatures, rotated keys); a signature by a known key
that fails rejects the whole note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentguard.errors import AgentGuardError, UsageError

__all__ = [
    "BadSignature",
    "Checkpoint",
    "CheckpointError",
    "Ed25519Signer",
    "MalformedNote",
    "NoteVerifier",
    "Signer",
    "UnknownKey",
    "key_id",
    "open_checkpoint",
    "sign_checkpoint",
]

ED25519 = 0x01
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100
_MAX_U64_DIGITS = 20
_DASH = "\u2014 "


class CheckpointError(AgentGuardError, ValueError):
    """A note could not be opened as a trusted checkpoint."""


class MalformedNote(CheckpointError):
    """The text is not a well-formed signed note or checkpoint (or a vkey is malformed)."""


class BadSignature(CheckpointError):
    """A signature by a trusted key does not verify: the note was altered or forged."""


class UnknownKey(CheckpointError):
    """No signature in the note comes from a trusted key."""


def key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """The 4-byte signed-note key ID: ``SHA-256(name || 0x0A || type || public key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name) or not name.isprintable():
        raise MalformedNote("a key name must be non-empty, with no spaces and no '+'")


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedNote("invalid base64") from None


@runtime_checkable
class Signer(Protocol):
    """Signs checkpoint notes; implement it for a KMS or HSM.

    ``name`` is the signed-note key name (conventionally the log's origin) and ``key_id`` the
    4-byte ID verifiers match on. ``sign`` returns a raw Ed25519 signature (64 bytes) over the
    exact message bytes. It must be safe to call from one thread at a time.
    """

    @property
    def name(self) -> str:
        """The key name printed on the signature line."""
        ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``."""
        ...


class Ed25519Signer:
    """A :class:`Signer` holding an Ed25519 private key in memory."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self._name = name
        self._key = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._key_id = key_id(name, ED25519, self._public)

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        """A signer with a fresh random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, name: str, pem: bytes, password: bytes | None = None) -> Ed25519Signer:
        """Load a PKCS#8 PEM Ed25519 key; raises ``ValueError`` for any other key type."""
        key = serialization.load_pem_private_key(pem, password=password)
        if not isinstance(key, Ed25519PrivateKey):
            raise UsageError("the checkpoint signing key must be an Ed25519 key")
        return cls(name, key)

    def private_pem(self, password: bytes | None = None) -> bytes:
        """The key as PKCS#8 PEM (store it with mode 0600), encrypted if ``password`` is set."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    def vkey(self) -> str:
        """The verifier key to hand to auditors: ``name+hexid+base64(0x01 || public key)``."""
        encoded = base64.b64encode(bytes([ED25519]) + self._public).decode()
        return f"{self._name}+{self._key_id.hex()}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature over ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Ed25519Signer(name={self._name!r}, key_id={self._key_id.hex()})"


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 key parsed from a vkey string."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexid+base64(0x01 || key)``; the ID must match the name and key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or len(parts[1]) != 8:
            raise MalformedNote("a vkey has the form name+hexid+base64key")
        name, hex_id, encoded = parts
        _check_name(name)
        try:
            ident = bytes.fromhex(hex_id)
        except ValueError:
            raise MalformedNote("the vkey's key ID is not hex") from None
        raw = _b64decode(encoded)
        if len(raw) != 33 or raw[0] != ED25519:
            raise MalformedNote("only Ed25519 (type 0x01) vkeys are supported")
        if key_id(name, ED25519, raw[1:]) != ident:
            raise MalformedNote("the vkey's key ID does not match its name and key")
        return cls(name=name, key_id=ident, public_key=raw[1:])

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: its origin, size and RFC 6962 root (the tlog-checkpoint note text)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` plus any extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        lines.extend(self.extensions)
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint's note text (without signatures); raises :class:`MalformedNote`."""
        try:
            lines = text.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise MalformedNote("a checkpoint must be UTF-8") from None
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise MalformedNote("a checkpoint has origin, size and root on non-empty lines")
        origin, size_text, root_text, *extensions = lines[:-1]
        if not _is_u64(size_text):
            raise MalformedNote(
                "the checkpoint size is not a decimal below 2**64 without leading zeros"
            )
        root = _b64decode(root_text)
        if len(root) != 32:
            raise MalformedNote("the checkpoint root is not a 32-byte hash")
        return cls(origin=origin, size=int(size_text), root=root, extensions=tuple(extensions))


def _is_u64(text: str) -> bool:
    """Whether ``text`` is a canonical decimal below 2**64 (checked before ``int`` sees it:
    Python refuses to parse more than 4300 digits with a plain ``ValueError``)."""
    return (
        0 < len(text) <= _MAX_U64_DIGITS
        and text.isascii()
        and text.isdigit()
        and text == str(int(text))
        and int(text) < 1 << 64
    )


def _sign_note(text: bytes, signers: Sequence[Signer]) -> str:
    if not signers:
        raise UsageError("a signed note needs at least one signer")
    lines: list[str] = []
    for signer in signers:
        _check_name(signer.name)
        signature = base64.b64encode(signer.key_id + signer.sign(text)).decode()
        lines.append(f"{_DASH}{signer.name} {signature}\n")
    return text.decode() + "\n" + "".join(lines)


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> str:
    """The signed note text for ``checkpoint``, one signature line per signer."""
    if checkpoint.size < 0 or len(checkpoint.root) != 32:
        raise UsageError("a checkpoint needs a size >= 0 and a 32-byte root")
    _check_name(checkpoint.origin)
    return _sign_note(checkpoint.body(), signers)


def _split_note(note: str) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """Split a signed note into its text and ``(name, key ID, signature)`` triples."""
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise MalformedNote("the note is too large")
    if any(ch < " " and ch != "\n" for ch in note):
        raise MalformedNote("a note may contain no control characters other than newline")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise MalformedNote("a note is text, a blank line, then signature lines")
    text, sig_block = note[: cut + 1], note[cut + 2 : -1]
    signatures: list[tuple[str, bytes, bytes]] = []
    for line in sig_block.split("\n"):
        if not line.startswith(_DASH):
            raise MalformedNote("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(_DASH) :].partition(" ")
        _check_name(name)
        raw = _b64decode(encoded)
        if len(raw) < 5:
            raise MalformedNote("a signature is a 4-byte key ID and the signature bytes")
        signatures.append((name, raw[:4], raw[4:]))
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedNote("the note has too many signatures")
    try:
        return text.encode("utf-8"), signatures
    except UnicodeEncodeError:
        raise MalformedNote("a note must be valid UTF-8") from None


def open_note(note: str, verifiers: Sequence[NoteVerifier]) -> bytes:
    """The text of ``note`` once a trusted key's signature on it verifies.

    Raises :class:`MalformedNote` (also for two signature lines under one trusted key, as
    C2SP signed-note verifiers such as aics-tlog refuse them; repeated lines under keys not
    trusted here, witness cosignatures among them, are ignored), :class:`BadSignature` (a
    trusted key's signature fails) or :class:`UnknownKey` (no signature from a trusted key).
    """
    text, signatures = _split_note(note)
    trusted = {(v.name, v.key_id): v for v in verifiers}
    verified = False
    seen: list[tuple[str, bytes]] = []
    for name, ident, signature in signatures:
        verifier = trusted.get((name, ident))
        if verifier is None:
            continue
        if not verifier.verify(text, signature):
            raise BadSignature(f"the signature by {name} does not verify")
        seen.append((name, ident))
        verified = True
    if len(seen) != len(set(seen)):
        name, ident = next(pair for pair in seen if seen.count(pair) > 1)
        raise MalformedNote(f"duplicate signature line for {name} {ident.hex()}")
    if not verified:
        raise UnknownKey("the note carries no signature from a trusted key")
    return text


def open_checkpoint(note: str, vkeys: Sequence[str | NoteVerifier]) -> Checkpoint:
    """Verify ``note`` against the trusted ``vkeys`` and parse its checkpoint.

    Raises a :class:`CheckpointError` subclass: :class:`MalformedNote`, :class:`BadSignature`
    or :class:`UnknownKey`.
    """
    verifiers = [v if isinstance(v, NoteVerifier) else NoteVerifier.from_vkey(v) for v in vkeys]
    return Checkpoint.parse(open_note(note, verifiers))
