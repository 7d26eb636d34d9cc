"""A wrapper that keeps a secret string out of reprs, logs and tracebacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, NoReturn, final
from urllib.parse import quote

__all__ = ["FRAGMENT", "Secret", "encoded_forms"]

FRAGMENT = 12
"""How many leading or trailing characters of a long secret count as revealing it."""


def encoded_forms(secret: str) -> set[str]:
    """The strings whose presence reveals ``secret``.

    Raw, base64 (padded and not), base64url, hex in both cases, URL-encoded, JSON-escaped, and
    its first and last :data:`FRAGMENT` characters when it is at least twice that long. The one
    definition both the proxy's echo scanner and the secret-leak reviewer match against.
    """
    raw = secret.encode("utf-8", "surrogateescape")
    b64 = base64.b64encode(raw).decode()
    forms = {
        secret,
        b64,
        b64.rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
        quote(raw, safe=""),
        json.dumps(secret)[1:-1],
    }
    if len(secret) >= 2 * FRAGMENT:
        forms.add(secret[:FRAGMENT])
        forms.add(secret[-FRAGMENT:])
    return {form for form in forms if form}


@final
class Secret:
    """A secret string that only :meth:`reveal` gives back.

    ``repr()`` and ``str()`` show at most a recognised non-secret prefix (``ag_at_``/``ag_rt_``),
    equality is constant-time, and pickling is refused so a secret cannot leak through a cache
    or a multiprocessing queue by accident.
    """

    __slots__ = ("_value",)
    _KNOWN_PREFIXES = ("ag_at_", "ag_rt_")

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
