"""The public surface is a promise: one import path per name, and no change goes unnoticed.

Implementation modules are private (``_name.py``); each public package exports its names once in
``__all__``. Changing the surface (a name, a parameter, a base class) fails here until
``tests/data/public_surface.txt`` is regenerated with ``python -m tests.support.surface --write``
and the CHANGELOG says what changed.
"""

from __future__ import annotations

import difflib
import importlib

import pytest

from tests.support.surface import SNAPSHOT, homes, public_modules, surface

#: Public modules besides packages' ``__init__``: the optional integrations, each importable
#: on its own behind its extra, and two single-purpose modules.
PUBLIC_LEAF_MODULES = {
    "agentguard.config",
    "agentguard.errors",
    "agentguard.integrations.fastapi",
    "agentguard.integrations.flask",
    "agentguard.integrations.mcp",
    "agentguard.rls",
}


def test_the_surface_matches_the_snapshot() -> None:
    expected = SNAPSHOT.read_text(encoding="utf-8").splitlines()
    actual = surface()
    diff = "\n".join(difflib.unified_diff(expected, actual, "snapshot", "code", lineterm=""))
    assert actual == expected, (
        "the public surface changed; if that is deliberate, run "
        "`python -m tests.support.surface --write` and add a CHANGELOG entry:\n" + diff
    )


def test_every_public_name_has_one_home() -> None:
    shared = {name: modules for name, modules in homes().items() if len(modules) > 1}
    assert shared == {}


def test_implementation_modules_are_private() -> None:
    leaves = set()
    for name in public_modules():
        module = importlib.import_module(name)
        if not hasattr(module, "__path__"):  # a module, not a package
            leaves.add(name)
    assert leaves == PUBLIC_LEAF_MODULES


def test_the_surface_stays_small() -> None:
    # From 719 names over 144 public modules to this; growing it is a decision, not a drift.
    # 290 -> 330 and 22 -> 24 with approvals, budgets and rate limits (issue 20): the
    # agentguard.approvals and agentguard.limits packages, their storage Protocols, client
    # errors and settings. 330 -> 350 and 24 -> 25 with connected accounts (issue 21): the
    # agentguard.connect package (records, errors, the vendor client, flows, accounts), its two
    # storage Protocols and contract, ConnectApp, a client error and settings. 350 -> 360 with
    # observability (issue 22): agentguard.telemetry (Telemetry, PrometheusReader), the
    # tlog-proof parser and verifier (TlogProof, read_tlog_proof, verify_tlog_proof) and the
    # telemetry and witness settings.
    assert len(surface()) <= 360
    assert len(public_modules()) <= 25


@pytest.mark.parametrize("module_name", sorted(set(public_modules())))
def test_every_exported_name_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert missing == []
