"""The agent's credentials file: both keys, their expiry, the DPoP key and the token endpoint.

The file is what lets the runtime, not the model, hold the keys. It is created with mode 0600
(a directory it has to create is made 0700). Reading or writing refuses a file that anyone but
its owner can access, and a directory that belongs to another user or that others can write to:
whoever can write to the directory can replace the file, and a replaced file could point the
runtime's refresh at their own token URL. A directory others can only read and enter (a normal
0755 home or checkout) is accepted: it shows the file's name, and the file's own mode guards
what is in it. Writes go to a
temporary file in the same directory, are flushed to disk, and replace the old file with
``os.replace`` (then the directory is synced), so a crash mid-write leaves the previous keys
intact. Processes of one agent that share the file serialise read-modify-write on an exclusive
``flock`` of a sidecar ``<name>.lock`` file.

What the file does not do: it is not encrypted. Anything that runs as the agent's user can read
it, including a tool the model can drive to read files or run code. See
``docs/how-to/agent-runtime.md``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    model_validator,
)

from agentguard._clock import utc
from agentguard._home import expand_home
from agentguard._secret import Secret
from agentguard.client._errors import CredentialsFileError
from agentguard.dpop import DPoPKey

__all__ = [
    "BEARER",
    "DPOP",
    "FORMAT_VERSION",
    "AgentCredentials",
    "CredentialsFile",
    "FileLock",
    "TokenType",
    "dump_credentials",
    "parse_credentials",
]

FORMAT_VERSION: Literal[1] = 1
DPOP: Literal["DPoP"] = "DPoP"
BEARER: Literal["Bearer"] = "Bearer"
TokenType = Literal["DPoP", "Bearer"]
MAX_FILE_BYTES = 64 * 1024

_KeyText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~+/-]{8,512}=*$", strict=True)]


def _check_url(value: str) -> str:
    if len(value) > 2048 or any(not ("!" <= ch <= "~") for ch in value):
        raise ValueError("a URL is printable ASCII without spaces, at most 2048 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("an http(s) URL with a host is required")
    return value


_URL = Annotated[str, StringConstraints(strict=True), AfterValidator(_check_url)]


def _iso_text(value: object) -> object:
    # The file holds ISO 8601 text, as dump_credentials writes it; a number would otherwise be
    # read as Unix seconds (pydantic's lax mode), a second reading of the same field. A datetime
    # comes only from dump_credentials, never from JSON.
    if not isinstance(value, (str, datetime)):
        raise ValueError("a timestamp is ISO 8601 text, e.g. 2026-01-01T00:00:00Z")
    return value


_UTC = Annotated[AwareDatetime, BeforeValidator(_iso_text), AfterValidator(utc)]


class _Document(BaseModel):
    """The JSON schema of the file (version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    token_url: _URL
    resource_url: _URL | None = None
    token_type: Literal["DPoP", "Bearer"]
    access_key: _KeyText
    refresh_key: _KeyText
    issued_at: _UTC
    expires_at: _UTC
    dpop_key: Annotated[str, StringConstraints(max_length=8192, strict=True)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _Document:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        if self.token_type == DPOP and self.dpop_key is None:
            raise ValueError("DPoP-bound keys need the dpop_key they are bound to")
        return self


@dataclass(frozen=True, eq=False)
class AgentCredentials:
    """What the runtime holds: both keys, the access key's lifetime, and where to renew.

    Attributes:
        access_key / refresh_key: the agent's keys (``repr`` hides them).
        issued_at / expires_at: the access key's lifetime, by the agent's clock.
        token_url: the token endpoint, e.g. ``https://api.example.com/oauth/token``.
        token_type: ``"DPoP"`` when the keys are bound to ``dpop_key``, else ``"Bearer"``.
        dpop_key: the DPoP signing key; ``None`` for Bearer keys.
        resource_url: when set, keys are only sent to URLs under this base.
    """

    access_key: Secret
    refresh_key: Secret
    issued_at: datetime
    expires_at: datetime
    token_url: str
    token_type: TokenType = BEARER
    dpop_key: DPoPKey | None = None
    resource_url: str | None = None

    def __post_init__(self) -> None:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        if self.token_type == DPOP and self.dpop_key is None:
            raise ValueError("DPoP-bound keys need their dpop_key")

    @property
    def lifetime(self) -> timedelta:
        return self.expires_at - self.issued_at

    def renew_point(self, fraction: float) -> datetime:
        """When the access key has used ``fraction`` of its life."""
        return self.issued_at + self.lifetime * fraction

    def with_keys(
        self,
        access_key: Secret,
        refresh_key: Secret,
        *,
        issued_at: datetime,
        expires_at: datetime,
        token_type: TokenType,
    ) -> AgentCredentials:
        """A copy holding a freshly rotated pair."""
        return replace(
            self,
            access_key=access_key,
            refresh_key=refresh_key,
            issued_at=issued_at,
            expires_at=expires_at,
            token_type=token_type,
        )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"duplicate member {name!r}")
        document[name] = value
    return document


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_credentials(data: bytes, *, source: str = "credentials") -> AgentCredentials:
    """Validate a credentials document; anything wrong raises :class:`CredentialsFileError`."""
    if len(data) > MAX_FILE_BYTES:
        raise CredentialsFileError(f"{source} is larger than {MAX_FILE_BYTES} bytes")
    try:
        raw = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
        document = _Document.model_validate(raw)
    except ValidationError as error:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "document" for e in error.errors()})
        raise CredentialsFileError(
            f"{source} is not a valid version-{FORMAT_VERSION} credentials file "
            f"(bad fields: {', '.join(fields)[:200]}); re-create it with 'agentguard keys issue'"
        ) from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise CredentialsFileError(
            f"{source} is not a JSON credentials document; re-create it with "
            "'agentguard keys issue'"
        ) from None
    dpop_key: DPoPKey | None = None
    if document.dpop_key is not None:
        try:
            dpop_key = DPoPKey.from_pem(document.dpop_key.encode("utf-8"))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CredentialsFileError(
                f"{source}: dpop_key is not an unencrypted PKCS#8 P-256 or Ed25519 private key"
            ) from None
    return AgentCredentials(
        access_key=Secret(document.access_key),
        refresh_key=Secret(document.refresh_key),
        issued_at=document.issued_at,
        expires_at=document.expires_at,
        token_url=document.token_url,
        token_type=document.token_type,
        dpop_key=dpop_key,
        resource_url=document.resource_url,
    )


def dump_credentials(credentials: AgentCredentials) -> bytes:
    """The JSON document for ``credentials`` (it contains every secret: write it privately)."""
    dpop_pem = credentials.dpop_key.to_pem().decode("ascii") if credentials.dpop_key else None
    try:
        document = _Document(
            version=FORMAT_VERSION,
            token_url=credentials.token_url,
            resource_url=credentials.resource_url,
            token_type=credentials.token_type,
            access_key=credentials.access_key.reveal(),
            refresh_key=credentials.refresh_key.reveal(),
            issued_at=utc(credentials.issued_at),
            expires_at=utc(credentials.expires_at),
            dpop_key=dpop_pem,
        )
    except ValidationError as error:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "document" for e in error.errors()})
        raise CredentialsFileError(
            f"these credentials cannot be written (bad fields: {', '.join(fields)})"
        ) from None
    return (json.dumps(document.model_dump(mode="json"), indent=2) + "\n").encode("utf-8")


def _private_mode(mode: int) -> bool:
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)


def _others_can_write(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


class FileLock:
    """An exclusive ``flock`` on a sidecar file, shared by every process of one agent.

    It is an inter-process lock held by at most one thread of each process (the one doing a
    read-modify-write or a refresh); it is never taken by requests that only read keys.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class CredentialsFile:
    """Reads and writes one agent's credentials file.

    Args:
        path: the file, e.g. ``~/.agentguard/credentials.json`` (``~`` is expanded).

    Raises:
        ValueError: ``path`` starts with ``~user`` for no such user (or ``~`` without a home
            directory).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = expand_home(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"CredentialsFile({str(self.path)!r})"

    def lock(self) -> FileLock:
        """An (unacquired) exclusive lock; ``with file.lock(): ...`` around read-modify-write."""
        self._check_directory(create=True)
        return FileLock(self.lock_path)

    def exists(self) -> bool:
        return self.path.exists()

    def _check_directory(self, *, create: bool) -> None:
        directory = self.path.parent
        if create and not directory.exists():
            try:
                directory.mkdir(mode=0o700, parents=True)
                os.chmod(directory, 0o700)
            except OSError as error:
                raise CredentialsFileError(f"cannot create {directory}: {error.strerror}") from None
        try:
            info = directory.stat()
        except OSError as error:
            raise CredentialsFileError(f"cannot read {directory}: {error.strerror}") from None
        own = "use a directory of your own (e.g. ~/.config/agentguard)"
        if info.st_uid != os.geteuid():
            raise CredentialsFileError(f"{directory} belongs to another user; {own}")
        if _others_can_write(info.st_mode) and info.st_mode & stat.S_ISVTX:
            raise CredentialsFileError(  # never advise chmod on a shared directory such as /tmp
                f"{directory} is a shared directory other users can write to, who could "
                f"replace the credentials file; {own}"
            )
        if _others_can_write(info.st_mode):
            raise CredentialsFileError(
                f"{directory} is writable by other users, who could replace the credentials "
                f"file; run: chmod go-w {directory} (or use a private directory)"
            )

    def load(self) -> AgentCredentials:
        """Read and validate the file; refuse it when others can read it or write its directory."""
        self._check_directory(create=False)
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise CredentialsFileError(
                f"no credentials file at {self.path}; create one with 'agentguard keys issue'"
            ) from None
        except OSError as error:
            raise CredentialsFileError(f"cannot read {self.path}: {error.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise CredentialsFileError(f"{self.path} is not a regular file")
            if info.st_uid != os.geteuid():
                raise CredentialsFileError(f"{self.path} belongs to another user")
            if not _private_mode(info.st_mode):
                raise CredentialsFileError(
                    f"{self.path} is readable by other users; run: chmod 600 {self.path}"
                )
            data = handle.read(MAX_FILE_BYTES + 1)
        return parse_credentials(data, source=str(self.path))

    def save(self, credentials: AgentCredentials) -> None:
        """Replace the file atomically. Hold :meth:`lock` when this is read-modify-write."""
        self._check_directory(create=True)
        data = dump_credentials(credentials)
        directory = self.path.parent
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException as error:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            if isinstance(error, OSError):
                raise CredentialsFileError(
                    f"cannot write {self.path} ({error.strerror or error}); the previous "
                    "credentials are unchanged"
                ) from error
            raise
        _sync_directory(directory)

    def create(self, credentials: AgentCredentials, *, overwrite: bool = False) -> None:
        """Write a new file; refuse to replace an existing one unless ``overwrite``."""
        with self.lock():
            if not overwrite and self.path.exists():
                raise CredentialsFileError(
                    f"{self.path} exists; refusing to overwrite an agent's keys"
                )
            self.save(credentials)

    def update(self, change: Callable[[AgentCredentials], AgentCredentials]) -> AgentCredentials:
        """Read, ``change`` and write back under the lock; returns what was written."""
        with self.lock():
            updated = change(self.load())
            self.save(updated)
            return updated


def _sync_directory(directory: Path) -> None:
    """Make the rename durable: fsync the directory entry (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        # some filesystems cannot fsync a directory; the rename itself is still atomic
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
