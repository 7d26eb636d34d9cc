"""MemoryStore passes every storage contract, the multi-instance ones on a shared backing."""

from __future__ import annotations

import pytest

from agentguard.storage import MemoryStore
from agentguard.storage.protocols import (
    AuditStore,
    CredentialStore,
    DirectoryStore,
    KeyStore,
    ReplayCache,
)
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    AuditStoreContract,
    CredentialLivenessContract,
    CredentialStoreContract,
    DirectoryStoreContract,
    KeyStoreContract,
    LivenessContract,
    MultiInstanceContract,
    OtherLoopContract,
    ReplayCacheContract,
    StatefulContract,
)


def _implements(
    store: MemoryStore,
) -> tuple[DirectoryStore, KeyStore, ReplayCache, CredentialStore, AuditStore]:
    """Never called: ``mypy --strict`` checks the store against each Protocol tested below."""
    return (store, store, store, store, store)


class TestMemoryStore(
    DirectoryStoreContract,
    KeyStoreContract,
    ReplayCacheContract,
    CredentialStoreContract,
    AuditStoreContract,
    LivenessContract,
    CredentialLivenessContract,
    MultiInstanceContract,
    StatefulContract,
    OtherLoopContract,
):
    # A thread lock and no awaiting inside it: any loop, several at once. No driver, so no
    # FailureContract: a dict cannot lose its connection.
    loop_bound = False

    @pytest.fixture
    def store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock)

    @pytest.fixture
    def other_store(self, store: MemoryStore, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock, shared_with=store)
