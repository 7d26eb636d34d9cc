"""A wrapper that keeps a secret string out of reprs, logs and tracebacks, and the forms of a
secret whose presence reveals it.

:func:`encoded_forms` is the one definition of "this text reveals the secret" that the proxy's
echo scanner, the secret-leak reviewer and the request key scanner share. The policy by length:

- every secret: its raw value;
- :data:`MIN_ENCODED` (8) characters or more: also base64 and base64url, each at all three
  alignments it can take inside a larger blob (the secret after 0, 1 or 2 other bytes: a Basic
  ``user:key`` value, a JWT claim) and with or without padding; hex in both cases;
  percent-encoding; JSON string escaping. Shorter secrets are matched raw only: their encoded
  forms are 4 to 10 characters, short enough to occur by chance in any base64 or hex data, and
  a credential that short is guessable whatever we do;
- :data:`MIN_FRAGMENT` (16) characters or more: also the first and last
  :func:`fragment_length` characters, half the secret up to :data:`FRAGMENT` (12): a vendor's
  "Incorrect API key provided: sk-abc...xyz" echoes pieces. Half or more means a secret cut in
  two (two headers, two JSON fields) is always found through its longer piece. Below 16, half
  a secret is at most 7 characters: common words and ids would match.

The matcher (:class:`agentguard._secret_match.SecretMatcher`) looks for these forms in the text
and in the text with JSON escapes, percent-encoding, interleaved NUL bytes and whitespace undone
(:mod:`agentguard._secret_views`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, NoReturn, final
from urllib.parse import quote

__all__ = [
    "FRAGMENT",
    "MIN_ENCODED",
    "MIN_FRAGMENT",
    "Secret",
    "base64_cores",
    "encoded_forms",
    "fragment_length",
]

FRAGMENT = 12
"""The most leading or trailing characters of a secret that count as revealing it."""

MIN_ENCODED = 8
"""Shortest secret whose encoded forms (base64, hex, percent, JSON) are searched."""

MIN_FRAGMENT = 16
"""Shortest secret whose leading and trailing characters count as revealing it."""

_URLSAFE = str.maketrans("+/", "-_")


def fragment_length(size: int) -> int | None:
    """How many leading (or trailing) characters reveal a secret of ``size`` characters.

    ``None`` below :data:`MIN_FRAGMENT`; half the secret from 16 to 23 characters (8 to 11);
    :data:`FRAGMENT` (12) from 24 on.
    """
    if size < MIN_FRAGMENT:
        return None
    return min(FRAGMENT, size // 2)


def base64_cores(raw: bytes) -> list[str]:
    """The base64 characters ``raw`` shows wherever it sits inside a larger base64 blob.

    One string per alignment (``raw`` preceded by 0, 1 or 2 other bytes): the characters whose
    six bits all come from ``raw``, without the one or two at each end that mix in bits of the
    neighbouring bytes (or of the padding). Each is a substring of the blob's base64, padded or
    not; translate ``+/`` to ``-_`` for base64url.
    """
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode("ascii")
        first = -(-8 * offset // 6)  # the first character whose bits all come from raw
        end = 8 * (offset + len(raw)) // 6  # the characters before this one end inside raw
        cores.append(encoded[first:end])
    return cores


def encoded_forms(secret: str) -> set[str]:
    """The strings whose presence reveals ``secret`` (the policy is in the module docstring).

    Raw; from :data:`MIN_ENCODED` characters base64 and base64url (whole, padded and not, and
    :func:`base64_cores` at each alignment), hex in both cases, percent-encoded (every byte
    but unreserved ASCII) and JSON-escaped (non-ASCII as ``\\u`` escapes and as it is); from
    :data:`MIN_FRAGMENT` characters its first and last :func:`fragment_length` characters.
    """
    forms = {secret}
    size = fragment_length(len(secret))
    if size is not None:
        forms.update((secret[:size], secret[-size:]))
    if len(secret) >= MIN_ENCODED:
        raw = secret.encode("utf-8", "surrogateescape")
        whole = base64.b64encode(raw).decode("ascii")
        for form in (whole, *base64_cores(raw)):
            forms.update((form, form.rstrip("="), form.translate(_URLSAFE)))
            forms.add(form.translate(_URLSAFE).rstrip("="))
        forms.update((raw.hex(), raw.hex().upper(), quote(raw, safe="")))
        forms.update((json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]))
    return {form for form in forms if form}


@final
class Secret:
    """A secret string that only :meth:`reveal` gives back.

    ``repr()`` and ``str()`` show at most a recognised non-secret prefix (``ag_at_``/``ag_rt_``),
    equality is constant-time, and pickling is refused so a secret cannot leak through a cache
    or a multiprocessing queue by accident.
    """

    __slots__ = ("_value",)
    _KNOWN_PREFIXES = ("ag_at_", "ag_rt_", "ag_op_", "ag_ct_")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Call it only where the value must leave the process."""
        return self._value

    def __repr__(self) -> str:
        prefix = next((p for p in self._KNOWN_PREFIXES if self._value.startswith(p)), "")
        return f"Secret('{prefix}********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self
