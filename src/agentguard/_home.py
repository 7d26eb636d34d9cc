"""``~`` and ``~user`` in the paths people write, expanded, or refused with an error that says so.

``Path.expanduser`` raises a bare ``RuntimeError("Could not determine home directory.")`` for
``~name`` when there is no user ``name`` (and for ``~`` without a home directory), which reads
as an internal failure wherever a path came from a settings file, a command line or a caller.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["expand_home"]


def expand_home(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, as ``Path.expanduser`` does.

    Raises :class:`ValueError` naming the path when it cannot be expanded.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:  # pathlib: no such user, or no home directory for "~"
        raise ValueError(
            f"cannot expand {os.fspath(path)!r}: no such user, or no home directory for '~'"
        ) from None
