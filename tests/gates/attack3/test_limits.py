"""Budgets and rate limits on the shared stores: Redis under a burst, and costs no backend may
turn into an outage. Real PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379, db 12)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agentguard import RouteRule
from agentguard.errors import UsageError
from agentguard.limits import Budget
from agentguard.storage import Charge, MemoryStore, PostgresStore, RedisLimitStore
from tests.backends.services import temporary_schema

pytestmark = pytest.mark.anyio

REDIS = "redis://127.0.0.1:6379/12"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _prefix() -> str:
    return f"attack3:{secrets.token_hex(4)}:"


async def test_a_redis_limit_store_takes_a_burst_of_concurrent_calls() -> None:
    """A store built from a URL (as ``[limits] store`` builds it) inherits redis-py's pool of
    at most 100 connections, which raises MaxConnectionsError instead of waiting: past 100
    calls in flight every further one is a StorageError, i.e. 503 for every tenant of the
    gateway. One agent sending a burst makes everybody's calls fail."""
    now = datetime.now(timezone.utc)
    ends = now + timedelta(minutes=5)
    async with RedisLimitStore(REDIS, prefix=_prefix()) as store:
        takes = [
            store.take(f"rate:r:user:u{i}", interval=1.0, burst=5, now=now) for i in range(300)
        ]
        charges = [
            store.charge(f"budget:b:user:u{i}", cost=1, limit=5, expires_at=ends)
            for i in range(300)
        ]
        results = await asyncio.gather(*takes, *charges, return_exceptions=True)
    failed = [type(result).__name__ for result in results if isinstance(result, BaseException)]
    assert failed == [], f"{len(failed)} of {len(results)} failed: {sorted(set(failed))}"


def _stores() -> list[Any]:
    return [MemoryStore(), RedisLimitStore(REDIS, prefix=_prefix())]


async def test_every_store_refuses_units_it_cannot_hold_exactly() -> None:
    """A cost or limit of 2**53 or more (a bigint overflow on PostgreSQL, an inexact Lua
    double on Redis: 503 on every call before) is a ``ValueError`` on every backend; the
    configuration refuses such costs and limits before any store sees them."""
    ends = datetime.now(timezone.utc) + timedelta(minutes=5)
    async with temporary_schema() as (dsn, schema), PostgresStore(dsn, schema=schema) as pg:
        for store in [pg, *_stores()]:
            for cost, limit in ((2**63, 10), (10**17, 2**62), (1, 2**53)):
                with pytest.raises(ValueError, match="2\\*\\*53"):
                    await store.charge("budget:huge", cost=cost, limit=limit, expires_at=ends)
            near = await store.charge(
                "budget:near", cost=2**53 - 1, limit=2**53 - 1, expires_at=ends
            )
            assert near == Charge(True, 2**53 - 1)
            if isinstance(store, RedisLimitStore):
                await store.close()
    with pytest.raises(ValueError, match="cost"):
        RouteRule("/crm", "crm", cost=2**41)
    with pytest.raises(UsageError):
        Budget("b", 2**53, timedelta(days=1))
