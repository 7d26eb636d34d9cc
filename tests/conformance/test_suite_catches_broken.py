"""The conformance suite proves itself: it fails every deliberately broken backend.

For each backend in ``broken.py`` a small test module is written and run with pytester (in
process): one class subclasses the contracts that should catch the bug over the broken store,
another the same contracts over the unbroken reference. The reference must pass every test; the
broken store must fail at least one test, and one of those failures must come from the contract
named for the bug (so it is caught for the right reason, not by accident).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agentguard.testing import conformance

pytest_plugins = ["pytester"]


@dataclass(frozen=True)
class Case:
    store: str
    """A class in ``tests.conformance.broken``."""
    contracts: tuple[str, ...]
    """The contract classes run against it and against the reference."""
    catcher: str
    """The contract a failure must come from."""
    reference: str = "memory"


CASES: dict[str, Case] = {
    "caching lookup": Case("CachingLookupStore", ("LivenessContract",), "LivenessContract"),
    "no family revoke": Case("NoFamilyRevokeStore", ("KeyStoreContract",), "KeyStoreContract"),
    "non-atomic rotate": Case("NonAtomicRotateStore", ("KeyStoreContract",), "KeyStoreContract"),
    "unlocked append across instances": Case(
        "UnlockedAppendStore",
        ("AuditStoreContract", "MultiInstanceAuditContract"),
        "MultiInstanceAuditContract",
    ),
    "replay entries never expiring": Case(
        "ReplayNeverExpiresStore", ("ReplayCacheContract",), "ReplayCacheContract"
    ),
    "grant updates dropped": Case(
        "GrantUpdatesDroppedStore",
        ("DirectoryStoreContract", "LivenessContract"),
        "DirectoryStoreContract",
    ),
    "revocation racing rotation": Case(
        "RevocationMarksPerInstanceStore",
        ("KeyStoreContract", "MultiInstanceKeyStoreContract"),
        "MultiInstanceKeyStoreContract",
    ),
    "member of any workspace": Case(
        "MemberAnyWorkspaceStore", ("KeyStoreContract",), "KeyStoreContract"
    ),
    "list_keys newest first": Case("NewestFirstStore", ("KeyStoreContract",), "KeyStoreContract"),
    "one-loop lock declared loop-free (deadlocks)": Case(
        "LoopLockedStore", ("OtherLoopContract",), "OtherLoopContract"
    ),
    "non-atomic charge": Case("NonAtomicChargeStore", ("LimitContract",), "LimitContract"),
    "non-atomic take": Case("NonAtomicTakeStore", ("LimitContract",), "LimitContract"),
    "retry_after in whole seconds": Case(
        "RetryAfterWholeSecondsStore", ("LimitContract",), "LimitContract"
    ),
    "approval reusable": Case("ApprovalReusableStore", ("ApprovalContract",), "ApprovalContract"),
    "non-atomic consume": Case("NonAtomicConsumeStore", ("ApprovalContract",), "ApprovalContract"),
    "non-atomic decide": Case("NonAtomicDecideStore", ("ApprovalContract",), "ApprovalContract"),
    "non-atomic connection update": Case(
        "NonAtomicConnectionUpdateStore", ("ConnectionContract",), "ConnectionContract"
    ),
    "non-atomic flow take": Case(
        "NonAtomicFlowTakeStore", ("ConnectionContract",), "ConnectFlowContract"
    ),
    "flow of any kind": Case("FlowOfAnyKindStore", ("ConnectionContract",), "ConnectFlowContract"),
    "peek takes the flow": Case(
        "PeekTakesFlowStore", ("ConnectionContract",), "ConnectFlowContract"
    ),
    "lease released by anyone": Case(
        "LeaseReleasedByAnyoneStore", ("ConnectionContract",), "ConnectFlowContract"
    ),
    "errors not mapped": Case(
        "UnmappedErrorsSQLiteStore", ("FailureContract",), "FailureContract", "sqlite"
    ),
}

MEMORY_FIXTURES = """
    store_type = {store}
    loop_bound = False
    loops_deadline = 5.0

    @pytest.fixture
    def store(self, clock):
        return {store}(clock=clock)

    @pytest.fixture
    def other_store(self, store, clock):
        return {store}(clock=clock, shared_with=store)
"""

SQLITE_FIXTURES = """
    store_type = {store}
    loop_bound = False
    loops_deadline = 5.0

    @pytest.fixture
    async def store(self, clock, tmp_path):
        async with {store}(tmp_path / "agentguard.db", clock=clock) as store:
            yield store

    async def break_store(self, store):
        await break_sqlite(store)
"""

MODULE = """
import pytest

from agentguard.storage import MemoryStore
from agentguard.storage import SQLiteStore
from agentguard.testing.conformance import {contracts}
from tests.conformance.broken import {broken}
from tests.conformance.test_sqlite import break_sqlite


class TestBroken({contracts}):
{broken_fixtures}

class TestReference({contracts}):
{reference_fixtures}
"""


def _owner(test_name: str, contract: type) -> str:
    """The name of the class in ``contract``'s MRO that defines the test ``test_name``."""
    return next((k.__name__ for k in contract.__mro__ if test_name in vars(k)), "")


def _run(pytester: pytest.Pytester, case: Case) -> tuple[list[str], list[str], int]:
    """Failed test names of TestBroken and of TestReference, and how many tests ran."""
    fixtures = MEMORY_FIXTURES if case.reference == "memory" else SQLITE_FIXTURES
    reference = "MemoryStore" if case.reference == "memory" else "SQLiteStore"
    pytester.makepyfile(
        test_case=MODULE.format(
            contracts=", ".join(case.contracts),
            broken=case.store,
            broken_fixtures=fixtures.format(store=case.store),
            reference_fixtures=fixtures.format(store=reference),
        )
    )
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-p", "anyio", "-q")
    passed, _skipped, failed = recorder.listoutcomes()
    failures: dict[str, list[str]] = {"TestBroken": [], "TestReference": []}
    for report in failed:
        klass, test = report.nodeid.split("::")[1:3]
        failures[klass].append(test.split("[")[0])
    return failures["TestBroken"], failures["TestReference"], len(passed) + len(failed)


@pytest.mark.parametrize("bug", list(CASES))
def test_suite_fails_the_broken_backend_and_passes_the_reference(
    pytester: pytest.Pytester, bug: str
) -> None:
    case = CASES[bug]
    broken, reference, ran = _run(pytester, case)
    assert ran > 0, "the generated module ran no test"
    assert reference == [], f"the unbroken reference failed {reference}"
    assert broken, f"{bug}: the suite ({', '.join(case.contracts)}) passed {case.store}"
    catchers = {
        _owner(test, getattr(conformance, contract))
        for test in broken
        for contract in case.contracts
        if hasattr(getattr(conformance, contract), test)
    }
    assert case.catcher in catchers, f"{bug}: caught only by {sorted(catchers)} ({broken})"
