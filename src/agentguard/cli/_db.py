"""``agentguard db upgrade``: create or upgrade the store's schema.

Exit codes: 0 done, 2 usage or environment (an unsupported URL, an unreachable database, a
schema from a newer agentguard).
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

from agentguard.cli._errors import CommandError
from agentguard.cli._operator import one_line, settings_for, store_url
from agentguard.cli._output import emit_json
from agentguard.errors import ConfigurationError
from agentguard.storage._protocols import StorageError

__all__ = ["run"]


async def _sqlite(url: str) -> int:
    from agentguard.storage._sqlite import SQLiteStore
    from agentguard.storage._sqlite.schema import SCHEMA_VERSION

    rest = url.partition("://")[2]
    if not rest.startswith("/") or rest == "/":
        raise CommandError(
            "a SQLite URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    async with SQLiteStore(rest[1:]) as store:
        await store.initialize()
    return SCHEMA_VERSION


async def _postgres(url: str) -> tuple[int, str]:
    from agentguard.storage._postgres.schema import DEFAULT_SCHEMA, upgrade

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    dsn = urlunsplit(parts._replace(query=urlencode([(n, v) for n, v in query if n != "schema"])))
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    return await upgrade(dsn, schema=schema), schema


def _upgrade(args: argparse.Namespace) -> int:
    url = store_url(args, settings_for(args))
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        version, where = anyio.run(_sqlite, url), url
    elif scheme in ("postgresql", "postgres"):
        version, schema = anyio.run(_postgres, url)
        where = f"PostgreSQL schema {schema}"
    else:
        raise CommandError(f"no schema to upgrade for {scheme}:// stores")
    if args.json:
        emit_json({"store": scheme, "version": version})
    else:
        print(f"{where}: schema at version {version}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``db`` subcommand."""
    try:
        return _upgrade(args)
    except (CommandError, ConfigurationError, StorageError, OSError, ValueError) as error:
        print(f"agentguard db: {one_line(error)}", file=sys.stderr)
        return 2
