"""Finding the PostgreSQL and Redis servers the backend tests run against.

``AGENTGUARD_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/test``, then the
same with user ``root``) and ``AGENTGUARD_TEST_REDIS`` (default ``redis://127.0.0.1:6379/15``)
name them. A test that needs an unreachable server is skipped with the reason, unless
``AGENTGUARD_REQUIRE_SERVICES=1`` (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import pytest

__all__ = [
    "chromium_path",
    "postgres_dsn",
    "random_name",
    "redis_url",
    "temporary_schema",
]

_DEFAULT_POSTGRES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
_DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

_found: dict[str, str] = {}
_missing: dict[str, str] = {}


def _unavailable(service: str, reason: str) -> NoReturn:
    message = f"{service} is not reachable: {reason}"
    if os.environ.get("AGENTGUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (AGENTGUARD_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(f"{message}; set AGENTGUARD_TEST_{service.upper()} to point at one")


def random_name(prefix: str) -> str:
    """A fresh lower-case identifier such as ``agentguard_test_3f9a...``."""
    return f"{prefix}_{secrets.token_hex(6)}"


async def postgres_dsn() -> str:
    """A DSN that connects, or a skip (a failure under ``AGENTGUARD_REQUIRE_SERVICES=1``)."""
    if "postgres" in _found:
        return _found["postgres"]
    if "postgres" not in _missing:
        import asyncpg

        configured = os.environ.get("AGENTGUARD_TEST_POSTGRES")
        candidates = (configured,) if configured else _DEFAULT_POSTGRES
        errors: list[str] = []
        for dsn in candidates:
            try:
                connection = await asyncpg.connect(dsn, timeout=3)
            except Exception as exc:
                errors.append(f"{dsn}: {type(exc).__name__}: {exc}")
                continue
            await connection.close()
            _found["postgres"] = dsn
            return dsn
        _missing["postgres"] = "; ".join(errors)
    _unavailable("postgres", _missing["postgres"])


async def redis_url() -> str:
    """A Redis URL that answers PING, or a skip (a failure when services are required)."""
    if "redis" in _found:
        return _found["redis"]
    if "redis" not in _missing:
        import redis.asyncio

        url = os.environ.get("AGENTGUARD_TEST_REDIS", _DEFAULT_REDIS)
        client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=3)
        try:
            await client.ping()
        except Exception as exc:
            _missing["redis"] = f"{url}: {type(exc).__name__}: {exc}"
        else:
            _found["redis"] = url
            return url
        finally:
            await client.aclose()
    _unavailable("redis", _missing["redis"])


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (a test's own, randomly named schema)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@asynccontextmanager
async def temporary_schema() -> AsyncIterator[tuple[str, str]]:
    """``(dsn, schema)`` for a fresh schema name, dropped afterwards."""
    dsn = await postgres_dsn()
    schema = random_name("agentguard_test")
    try:
        yield dsn, schema
    finally:
        await drop_schema(dsn, schema)


def chromium_path() -> str:
    """The system Chromium (Debian's ``chromium`` package; ``AGENTGUARD_TEST_CHROMIUM``
    overrides), or a skip (a failure under ``AGENTGUARD_REQUIRE_SERVICES=1``)."""
    candidates = [os.environ.get("AGENTGUARD_TEST_CHROMIUM", ""), *_CHROMIUM]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    _unavailable("chromium", "no chromium executable (apt-get install chromium)")
