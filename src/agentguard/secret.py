"""A wrapper that keeps a secret string out of reprs, logs and tracebacks."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NoReturn, final

__all__ = ["Secret"]


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
