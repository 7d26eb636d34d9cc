"""The storage conformance suite: every backend, ours or yours, inherits these tests.

Prove a backend with a few lines::

    import pytest
    from agentguard.testing.conformance import KeyStoreContract, ReplayCacheContract

    class TestMyStore(KeyStoreContract, ReplayCacheContract):
        @pytest.fixture
        def store(self, clock):
            return MyStore(clock=clock)   # fresh and empty for each test

``clock`` is a :class:`~agentguard.testing.FakeClock` the contract moves; build the store on it.
"""

from agentguard.testing.conformance._base import key_record
from agentguard.testing.conformance.audit import AuditStoreContract
from agentguard.testing.conformance.credentials import CredentialStoreContract
from agentguard.testing.conformance.directory import DirectoryStoreContract, seed_directory
from agentguard.testing.conformance.keys import KeyStoreContract
from agentguard.testing.conformance.replay import ReplayCacheContract

__all__ = [
    "AuditStoreContract",
    "CredentialStoreContract",
    "DirectoryStoreContract",
    "KeyStoreContract",
    "ReplayCacheContract",
    "key_record",
    "seed_directory",
]
