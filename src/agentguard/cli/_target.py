"""Which settings and which store a command works on, and how it may open the store.

Every command resolves them the same way (documented in docs/configuration.md):

- the settings file: ``--config``, else ``$AGENTGUARD_CONFIG``, else ``./agentguard.toml`` when
  it exists, else none;
- the store URL: ``--store``, else ``$AGENTGUARD_STORE``, else the file's ``store.url``, else
  ``sqlite:///agentguard.db``. (Flags beat variables, variables beat the file, the file beats
  the defaults.)

A command opens the store in one of three :class:`Access` modes. Only the commands that make a
store (``init``, ``db upgrade``, ``accounts add``, ``serve``) may create one; every other
command needs an existing, migrated store and says which command creates it, so a mistyped URL
or a forgotten ``--config`` is an error, never an empty store that answers "no such user" or
"OK: 0 events".
"""

from __future__ import annotations

import argparse
import enum
import os
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from agentguard.config import Settings, load_settings
from agentguard.errors import ConfigurationError
from agentguard.storage._protocols import StorageError
from agentguard.storage._revocation_feeds import announce_changes
from agentguard.storage._urls import describe_store, has_password, open_store, scrub_password

__all__ = [
    "DEFAULT_STORE",
    "Access",
    "StoreMissing",
    "check_store",
    "config_path",
    "creating_command",
    "open_target",
    "settings_for",
    "store_url",
]

DEFAULT_STORE = "sqlite:///agentguard.db"


class Access(enum.Enum):
    """How a command may open the store."""

    CREATE = "create"  # create it (and its schema) when it does not exist
    EXISTING = "existing"  # read and write an existing store; never create one
    READ_ONLY = "read-only"  # only read an existing store (SQLite mode=ro)


class StoreMissing(ConfigurationError):
    """The store does not exist or holds no agentguard schema (exit code 2)."""


def config_path(args: argparse.Namespace) -> Path | None:
    """``--config``, else ``$AGENTGUARD_CONFIG``, else ``./agentguard.toml`` if present."""
    given = getattr(args, "config", None) or os.environ.get("AGENTGUARD_CONFIG") or None
    if given is not None:
        return Path(given)
    default = Path("agentguard.toml")
    return default if default.is_file() else None


def settings_for(args: argparse.Namespace) -> Settings | None:
    """The settings of :func:`config_path` (with ``AGENTGUARD_*`` applied), or ``None``."""
    path = config_path(args)
    return load_settings(path) if path is not None else None


def store_url(args: argparse.Namespace, settings: Settings | None) -> str:
    """``--store``, else ``$AGENTGUARD_STORE``, else the settings' store, else the default."""
    given: str | None = getattr(args, "store", None)
    if given:
        return given
    if settings is not None:  # load_settings already let AGENTGUARD_STORE override the file
        return settings.store.url
    return os.environ.get("AGENTGUARD_STORE") or DEFAULT_STORE


def creating_command(args: argparse.Namespace) -> str:
    """The command that creates the store these arguments name (never with its password)."""
    if getattr(args, "store", None):
        command = f"agentguard db upgrade --store {shlex.quote(describe_store(args.store))}"
        return f"{command} (add the password)" if has_password(args.store) else command
    path = config_path(args)
    if path is not None:
        return f"agentguard db upgrade --config {path}"
    return "agentguard init (writes agentguard.toml and creates its store)"


def _driver_error(error: BaseException) -> bool:
    """An error of a database driver (asyncpg raises its own tree, not OSError)."""
    return type(error).__module__.partition(".")[0] in ("asyncpg", "sqlite3")


def _driver_message(error: BaseException, url: str) -> str:
    """The driver's error type and first line, any password of ``url`` scrubbed from it.

    The server's messages name a role or database (``role "x" does not exist``), never the
    password; the scrub guards against a client-side message that quotes the URL.
    """
    text = str(error).strip()
    name = type(error).__name__
    if not text:
        return name
    return scrub_password(f"{name}: {text.splitlines()[0]}", url)


async def _close(store: Any) -> None:
    closer = getattr(store, "close", None)
    if closer is not None:
        await closer()


async def _open(url: str, access: Access) -> Any:
    store = open_store(url, read_only=access is Access.READ_ONLY)
    try:
        initialize = getattr(store, "initialize", None)
        if initialize is not None:
            await initialize()
    except BaseException:
        await _close(store)
        raise
    return store


async def _probe(url: str) -> None:
    """Raise :class:`StorageError` unless ``url`` names an existing, current agentguard store."""
    await _close(await _open(url, Access.READ_ONLY))


@asynccontextmanager
async def open_target(
    args: argparse.Namespace, access: Access, settings: Settings | None = None
) -> AsyncIterator[tuple[Any, str]]:
    """Open the store the arguments name in ``access`` mode; yield it and its URL.

    Raises :class:`StoreMissing` (one line, naming :func:`creating_command`) when a command
    that must not create a store finds none, and :class:`ConfigurationError` for a store that
    cannot be reached.
    """
    url = store_url(args, settings)
    where = describe_store(url)
    try:
        if access is Access.EXISTING:
            await _probe(url)
        store = await _open(url, access)
    except StorageError as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        if access is Access.CREATE:
            raise ConfigurationError(f"cannot create the store at {where}: {text}") from None
        never = (
            "read-only commands never create a store"
            if access is Access.READ_ONLY
            else "this command never creates a store (init, db upgrade and accounts add do)"
        )
        raise StoreMissing(
            f"no usable agentguard store at {where} ({text}); {never}: create it with: "
            f"{creating_command(args)}"
        ) from None
    except OSError as error:
        raise ConfigurationError(
            f"cannot reach the store at {where}: {error.strerror or type(error).__name__}"
        ) from None
    except Exception as error:
        if not _driver_error(error):
            raise
        raise ConfigurationError(
            f"cannot open the store at {where}: {_driver_message(error, url)}"
        ) from None
    streams = settings.streams if settings is not None else None
    if streams is not None and streams.redis_url is not None and access is not Access.READ_ONLY:
        # [streams] events names a Redis bus: an operator's revoke or disable announces itself
        # there, so every gateway instance cuts the open streams it ends at once.
        store = announce_changes(store, streams.redis_url, channel=streams.channel)
    try:
        yield store, url
    finally:
        await _close(store)


async def check_store(
    args: argparse.Namespace, settings: Settings | None, access: Access, within: float
) -> None:
    """Open the store in ``access`` mode and close it, within ``within`` seconds.

    Raises what :func:`open_target` raises, or :class:`ConfigurationError` naming the store
    (never its password) when it does not answer in time.
    """
    try:
        with anyio.fail_after(within):
            async with open_target(args, access, settings):
                pass
    except TimeoutError:
        where = describe_store(store_url(args, settings))
        raise ConfigurationError(
            f"the store at {where} did not answer within {within:g} seconds"
        ) from None
