"""MemoryStore passes every storage contract, the multi-instance ones on a shared backing."""

from __future__ import annotations

import pytest

from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from agentguard.testing.conformance import (
    ApprovalContract,
    AuditStoreContract,
    ConnectionContract,
    CredentialLivenessContract,
    CredentialStoreContract,
    DirectoryStoreContract,
    KeyStoreContract,
    LimitContract,
    LivenessContract,
    MultiInstanceContract,
    OperatorContract,
    OtherLoopContract,
    ReplayCacheContract,
    StatefulContract,
)


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
    ApprovalContract,
    OperatorContract,
    LimitContract,
    ConnectionContract,
):
    store_type = MemoryStore
    # A thread lock and no awaiting inside it: any loop, several at once. No driver, so no
    # FailureContract: a dict cannot lose its connection.
    loop_bound = False

    @pytest.fixture
    def store(self, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock)

    @pytest.fixture
    def other_store(self, store: MemoryStore, clock: FakeClock) -> MemoryStore:
        return MemoryStore(clock=clock, shared_with=store)
