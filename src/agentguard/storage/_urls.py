"""Opening a store from a URL.

``sqlite:///path/to.db``, ``postgresql://user@host/db?schema=agentguard``, ``memory://``, or a
third-party scheme.

Third-party backends register a scheme under the ``agentguard.storage`` entry-point group; the
entry point is a callable ``(url: str, clock: Clock | None) -> store``.

``read_only=True`` is for commands that only look (``agentguard audit verify``, ``tail``,
``export``, ``prove``, ``checkpoint``): they must never create a store, because a mistyped URL
would otherwise become a fresh, empty, "valid" log. A SQLite file must already exist and hold the
agentguard schema (it is opened with ``mode=ro``); a PostgreSQL schema must already exist at the
current version (it is never created or migrated). Third-party backends are opened as usual.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from agentguard._clock import Clock
from agentguard.errors import ConfigurationError

__all__ = ["describe_store", "has_password", "open_store", "scrub_password"]


def _sqlite_path(rest: str) -> str:
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(
            "a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return rest[1:]


def open_store(url: str, *, clock: Clock | None = None, read_only: bool = False) -> Any:
    """A store for ``url``. Raises :class:`ConfigurationError` for an unknown or bad URL.

    With ``read_only``, a SQLite file that does not exist is refused here (naming its path)
    rather than created; see the module docstring for what else read-only opening promises.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError("a store URL looks like sqlite:///path/to/agentguard.db")
    scheme = scheme.lower()
    if scheme == "memory":
        from agentguard.storage._memory import MemoryStore

        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        path = _sqlite_path(rest)
        from agentguard.storage._sqlite import SQLiteStore

        if read_only:
            from agentguard.storage._sqlite.schema import open_read_only

            open_read_only(path, timeout=0).close()  # fail now, naming the path
        return SQLiteStore(path, clock=clock, read_only=read_only)
    if scheme in ("postgresql", "postgres"):
        from agentguard.storage._postgres import PostgresStore

        store = PostgresStore.from_url(url, clock=clock)
        if read_only:
            store.auto_upgrade = False  # a missing schema is refused, never created
        return store
    for entry in entry_points(group="agentguard.storage"):
        if entry.name == scheme:
            factory = entry.load()
            return factory(url, clock)
    raise ConfigurationError(f"no storage backend for the {scheme!r} scheme")


def describe_store(url: str) -> str:
    """``url`` safe to print: no password, no query parameters other than ``schema``."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "(not a store URL)"
    if scheme.lower() in ("sqlite", "memory"):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    user = f"{parts.username}@" if parts.username else ""
    schema = [value for name, value in parse_qsl(parts.query) if name == "schema"]
    query = f"?schema={schema[-1]}" if schema else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}{query}"


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password (which :func:`describe_store` leaves out)."""
    return _password(url) is not None


def scrub_password(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (as written and percent-decoded) replaced by ``***``.

    For messages of a database driver, which may quote the connection string it was given.
    """
    password = _password(url)
    if password is None:
        return text
    for form in sorted({password, unquote(password)}, key=len, reverse=True):
        text = text.replace(form, "***")
    return text
