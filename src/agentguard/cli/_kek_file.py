"""Key-encryption key files: made by ``agentguard init`` and ``agentguard credentials keygen``.

A file holds one line, ``id:base64url(32 random bytes)``, mode 0600 (the settings loader refuses
a file others can read). It is written to a temporary file and linked into place, so an
existing key is never overwritten and a crash never leaves half a key.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from contextlib import suppress
from pathlib import Path

from agentguard._config_source import read_private

__all__ = ["check_kek_file", "write_kek"]


def check_kek_file(path: Path) -> None:
    """Refuse a key file that is not private or does not hold ``id:base64key`` lines."""
    from agentguard.credentials import KeyRing

    text = read_private(path).decode("utf-8", "replace")  # SourceError names file and problem
    KeyRing.from_string(text.strip())


def write_kek(path: Path, key_id: str = "kek-1") -> None:
    """Create ``path`` (mode 0600) holding a new key; ``FileExistsError`` if it exists."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(f"{key_id}:{key}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
