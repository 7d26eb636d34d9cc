"""One storage error for every driver failure: what our backends raise when their driver fails.

The storage contract (:mod:`agentguard.storage._protocols`) promises that a backend whose driver
fails (a lost connection, a closed pool, a timeout, a locked or unreadable file) raises
:class:`~agentguard.storage.StorageError` from every Protocol method, never the driver's own
exception. :func:`driver_errors` is that translation for our backends. The new error names the
backend and the driver exception's type, never its message (a driver message can quote query
parameters: key hashes, ciphertext); the driver's exception stays attached as ``__cause__``.

Left alone: :class:`StorageError` itself (``IntegrityError``, a closed store), exceptions that
mean the calling code is wrong rather than the backend down (``TypeError``, ...: the guard's
outage boundary logs those as suspected bugs), and ``BaseException`` (cancellation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agentguard.storage._outage import PROGRAMMING_ERRORS
from agentguard.storage._protocols import StorageError

__all__ = ["driver_errors", "driver_failure"]


def driver_failure(backend: str, error: Exception) -> StorageError:
    """The :class:`StorageError` that stands for ``error``, a failure of ``backend``'s driver."""
    kind = type(error)
    name = (
        kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    )
    return StorageError(f"{backend} is unavailable ({name})")


@contextmanager
def driver_errors(backend: str) -> Iterator[None]:
    """Re-raise a driver failure inside the block as :class:`StorageError` (see the module doc)."""
    try:
        yield
    except StorageError:
        raise
    except PROGRAMMING_ERRORS:  # a bug, not an outage: the guard logs it as one
        raise
    except Exception as error:
        raise driver_failure(backend, error) from error
