"""No two contracts define a test of one name: a backend's test class inherits many contracts,
and with a shared name Python's method resolution would run only one of the two tests."""

from __future__ import annotations

from agentguard.testing import conformance


def test_every_contract_test_name_is_defined_once() -> None:
    owners: dict[str, set[str]] = {}
    for name in conformance.__all__:
        contract = getattr(conformance, name)
        if not isinstance(contract, type) or not name.endswith("Contract"):
            continue
        for klass in contract.__mro__:
            for attribute in vars(klass):
                if attribute.startswith("test_"):
                    owners.setdefault(attribute, set()).add(klass.__qualname__)
    shared = {test: sorted(classes) for test, classes in owners.items() if len(classes) > 1}
    assert shared == {}
