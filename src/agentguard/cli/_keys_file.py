"""Writing the credentials file ``agentguard keys issue --out`` creates.

The rule, and why (docs/configuration.md, "Credentials files", says the same):

- The file is created with mode 0600: it holds both keys and the DPoP private key, so only its
  owner may read it. Nothing else protects its contents.
- Its directory must belong to the user and must not be writable by group or others. Whoever
  can write to a directory can rename, delete or replace the entries in it: they could swap in
  a credentials file of their own (the agent would then act with keys they chose, and send its
  requests, with their bodies, wherever that file's ``token_url`` points) or plant a symlink.
- A directory that others may only *read* (the usual 0755 of a home or checkout directory) is
  accepted: listing the directory shows the file's name, but the 0600 mode keeps its content
  private, and nobody else can change the entry.
- A directory that does not exist is created 0700.

The file is written to a temporary file in the same directory, flushed, then linked into place
(or, with ``--force``, renamed over the old file), so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from agentguard.client._errors import CredentialsFileError

__all__ = ["check_directory", "precheck", "write_new"]

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
# a shared directory (sticky, like /tmp, or another user's) must never be chmod-ed: name another
_OWN_DIRECTORY = "name a directory of your own (e.g. ~/.config/agentguard; it is created 0700)"


def check_directory(directory: Path) -> None:
    """Refuse a directory of another user, or one that group or others can write to."""
    try:
        info = directory.stat()
    except OSError as error:
        raise CredentialsFileError(f"cannot use {directory}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CredentialsFileError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise CredentialsFileError(
            f"{directory} belongs to another user, who could replace the credentials file; "
            f"{_OWN_DIRECTORY}"
        )
    if info.st_mode & _OTHERS_WRITE and info.st_mode & stat.S_ISVTX:
        raise CredentialsFileError(
            f"{directory} is a shared directory other users can write to, so they could "
            f"plant or swap files in it; {_OWN_DIRECTORY}"
        )
    if info.st_mode & _OTHERS_WRITE:
        raise CredentialsFileError(
            f"{directory} is writable by other users, who could replace the credentials file "
            f"(a readable 0755 directory is fine); run: chmod go-w {directory}, or name a new "
            "directory (it is created 0700)"
        )


def precheck(path: Path) -> None:
    """Refuse now a directory :func:`write_new` would refuse (before any key is issued)."""
    if path.parent.exists():
        check_directory(path.parent)


def _prepare(directory: Path) -> None:
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for parent in reversed(missing):  # each one 0700, not only the last
        try:
            parent.mkdir(mode=0o700)
            os.chmod(parent, 0o700)
        except OSError as error:
            raise CredentialsFileError(f"cannot create {parent}: {error.strerror}") from None
    check_directory(directory)


def _sync_directory(directory: Path) -> None:
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_new(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` (mode 0600); refuse an existing file unless ``overwrite``."""
    directory = path.parent
    _prepare(directory)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise CredentialsFileError(f"{path} exists; pass --force to replace it")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if the file appeared meanwhile: never clobbered
    except FileExistsError:
        raise CredentialsFileError(f"{path} exists; pass --force to replace it") from None
    except OSError as error:
        raise CredentialsFileError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_directory(directory)
