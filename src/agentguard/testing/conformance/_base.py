"""What every contract class shares: the fake clock and the async runner."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agentguard.keys.format import generate_key, hash_key, new_id
from agentguard.model import Grants, KeyKind, KeyRecord
from agentguard.testing.fakes import FakeClock

__all__ = ["ContractBase", "key_record"]


class ContractBase:
    """Base of the contracts. Subclasses provide a ``store`` fixture built with ``clock``.

    Every test is async and runs on anyio's pytest plugin (asyncio by default; override the
    ``anyio_backend`` fixture to run on trio if your backend supports it).
    """

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()


def key_record(
    clock: FakeClock,
    *,
    kind: KeyKind = KeyKind.ACCESS,
    user_id: str = "u1",
    workspace_id: str = "w1",
    account_id: str = "a1",
    family_id: str | None = None,
    ttl: timedelta = timedelta(hours=1),
    scope: Grants | None = None,
) -> KeyRecord:
    """A fresh key record with a random hash, for store tests."""
    now = clock.now()
    return KeyRecord(
        id=new_id("key"),
        kind=kind,
        key_hash=hash_key(generate_key(kind).reveal()),
        family_id=family_id or new_id("fam"),
        user_id=user_id,
        workspace_id=workspace_id,
        account_id=account_id,
        created_at=now,
        expires_at=now + ttl,
        scope=scope,
    )
