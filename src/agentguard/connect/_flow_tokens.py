"""The random values of the connect flow: connect-link tickets, OAuth ``state``, PKCE verifiers.

Tickets have the shape of agent keys and operator tokens (:mod:`agentguard._keys._format`)::

    ag_ct_ 4Qh1...(43 base62 characters = 256 bits)... 0bX9Zq
    prefix  body                                        checksum (CRC32 of prefix+body, 6 base62)

so a secret scanner, a log reviewer or a person recognises a leaked connect link, and a link
cut short in an e-mail client fails on its checksum before any storage lookup.

``state`` is 256 random bits in base64url (43 characters) and the PKCE code verifier 512
(86 characters, inside the 43-128 of RFC 7636 §4.1, from its unreserved set). The server keeps
only the SHA-256 of a ticket or a state, and the verifier sealed under the key ring.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from agentguard._keys._format import (
    _MAX_BODY,
    BODY_LENGTH,
    CHECKSUM_LENGTH,
    PREFIX_LENGTH,
    _base62,
    _checksum,
)
from agentguard._secret import Secret

__all__ = [
    "STATE_LENGTH",
    "TICKET_LENGTH",
    "TICKET_PREFIX",
    "code_challenge",
    "generate_browser_secret",
    "generate_state",
    "generate_ticket",
    "generate_verifier",
    "is_state",
    "is_ticket",
    "token_hash",
]

TICKET_PREFIX = "ag_ct_"
TICKET_LENGTH = PREFIX_LENGTH + BODY_LENGTH + CHECKSUM_LENGTH
STATE_LENGTH = 43  # 32 bytes in unpadded base64url
_STATE = re.compile(r"[A-Za-z0-9_-]{43}\Z")


def generate_ticket() -> Secret:
    """A new connect-link ticket (256 bits from :mod:`secrets`)."""
    head = TICKET_PREFIX + _base62(secrets.randbits(256), BODY_LENGTH)
    return Secret(head + _checksum(head))


def is_ticket(value: object) -> bool:
    """Whether ``value`` has a ticket's shape and checksum (no storage lookup, no exception)."""
    if not isinstance(value, str) or len(value) != TICKET_LENGTH:
        return False
    if not value.startswith(TICKET_PREFIX):
        return False
    tail = value[PREFIX_LENGTH:]
    if not (tail.isascii() and tail.isalnum()):  # ASCII alphanumerics are exactly base62
        return False
    if tail[:BODY_LENGTH] > _MAX_BODY:  # the alphabet is in code-point order
        return False
    head, checksum = value[:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(_checksum(head), checksum)


def generate_state() -> Secret:
    """A new OAuth ``state``: 256 random bits, base64url."""
    return Secret(secrets.token_urlsafe(32))


def is_state(value: object) -> bool:
    """Whether ``value`` has the shape of a ``state`` this server issues."""
    return isinstance(value, str) and _STATE.match(value) is not None


def generate_verifier() -> Secret:
    """A new PKCE code verifier: 86 characters of ``[A-Za-z0-9_-]`` (RFC 7636 §4.1)."""
    return Secret(secrets.token_urlsafe(64))


def generate_browser_secret() -> Secret:
    """The value of the browser-binding cookie: 256 random bits, base64url."""
    return Secret(secrets.token_urlsafe(32))


def code_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: BASE64URL(SHA256(verifier)), unpadded (§4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_hash(value: str) -> bytes:
    """SHA-256 of a ticket, a ``state`` or a browser secret: the only form the server keeps."""
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()
