"""The storage conformance suite: every backend, ours or yours, inherits these tests.

Prove a backend with a few lines::

    import pytest
    from agentguard.testing.conformance import KeyStoreContract, ReplayCacheContract

    class TestMyStore(KeyStoreContract, ReplayCacheContract):
        store_type = MyStore   # mypy --strict checks MyStore against KeyStore and ReplayCache

        @pytest.fixture
        def store(self, clock):
            return MyStore(clock=clock)   # fresh and empty for each test

``clock`` is a :class:`~agentguard.testing.FakeClock` the contract moves; build the store on it.

The liveness, multi-instance and stateful contracts also need ``other_store``: a second
instance over the same backend as ``store`` (same database or schema, its own connections and
caches) on the same clock. Without it they fail, saying so::

        @pytest.fixture
        def other_store(self, store, clock):
            return MyStore(clock=clock, url=store.url)   # a second instance, one backend

The gates' contracts (``ApprovalContract``, ``OperatorContract``, ``LimitContract``) test
their one-winner and never-overspend guarantees across ``store`` and ``other_store``, so they
always need both; so does ``ConnectionContract`` (connected accounts: compare-and-set updates,
single-use connect flows, leases).

``FailureContract`` needs ``async def break_store(self, store)``, which makes the store's driver
fail behind its back (every method must then raise ``StorageError``); ``OtherLoopContract``
needs the class attribute ``loop_bound``: whether the store needs one instance per event loop.
"""

from typing import TYPE_CHECKING

from agentguard._extras import missing_extra as _missing_extra

try:
    from agentguard.testing.conformance._approvals import ApprovalContract
    from agentguard.testing.conformance._archive import AuditArchiveContract
    from agentguard.testing.conformance._audit import AuditCheckpointContract, AuditStoreContract
    from agentguard.testing.conformance._base import key_record
    from agentguard.testing.conformance._connections import ConnectionContract
    from agentguard.testing.conformance._credentials import CredentialStoreContract
    from agentguard.testing.conformance._directory import DirectoryStoreContract, seed_directory
    from agentguard.testing.conformance._failure import FailureContract
    from agentguard.testing.conformance._instances import (
        MultiInstanceAuditContract,
        MultiInstanceContract,
        MultiInstanceKeyStoreContract,
        MultiInstanceReplayContract,
        SharedBackend,
    )
    from agentguard.testing.conformance._keys import KeyStoreContract
    from agentguard.testing.conformance._limits import LimitContract
    from agentguard.testing.conformance._liveness import (
        CredentialLivenessContract,
        LivenessContract,
    )
    from agentguard.testing.conformance._loops import OtherLoopContract
    from agentguard.testing.conformance._operators import OperatorContract
    from agentguard.testing.conformance._replay import ReplayCacheContract
except ImportError as error:  # pytest (or hypothesis) missing: say which extra brings it
    raise _missing_extra(error) from None

if TYPE_CHECKING:
    from agentguard.testing.conformance._stateful import StatefulContract


__all__ = [
    "ApprovalContract",
    "AuditArchiveContract",
    "AuditCheckpointContract",
    "AuditStoreContract",
    "ConnectionContract",
    "CredentialLivenessContract",
    "CredentialStoreContract",
    "DirectoryStoreContract",
    "FailureContract",
    "KeyStoreContract",
    "LimitContract",
    "LivenessContract",
    "MultiInstanceAuditContract",
    "MultiInstanceContract",
    "MultiInstanceKeyStoreContract",
    "MultiInstanceReplayContract",
    "OperatorContract",
    "OtherLoopContract",
    "ReplayCacheContract",
    "SharedBackend",
    "StatefulContract",
    "key_record",
    "seed_directory",
]


def __getattr__(name: str) -> object:
    """``StatefulContract`` needs hypothesis; import it only when asked for."""
    if name == "StatefulContract":
        try:
            from agentguard.testing.conformance import _stateful as stateful
        except ImportError as exc:  # pragma: no cover - hypothesis is in the testing extra
            raise ImportError(
                "StatefulContract needs hypothesis: pip install 'agentguard[testing]' "
                "(from a checkout: pip install -e '.[testing]')"
            ) from exc
        return stateful.StatefulContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
