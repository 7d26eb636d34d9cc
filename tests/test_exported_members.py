"""``__all__`` is the public promise: it lists exactly the public names, sorted."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "agentguard",
    "agentguard.asgi",
    "agentguard.audit",
    "agentguard.client",
    "agentguard.credentials",
    "agentguard.dpop",
    "agentguard.errors",
    "agentguard._keys",
    "agentguard._model",
    "agentguard.resolvers",
    "agentguard.review",
    "agentguard.storage",
    "agentguard.testing",
    "agentguard.testing.conformance",
    "agentguard.wsgi",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported)
    # isort style, as ruff's RUF022 keeps it: CONSTANTS first, then everything else by code point
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    for member in exported:
        assert getattr(module, member) is not None


@pytest.mark.parametrize("name", MODULES)
def test_public_names_are_all_exported(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and getattr(value, "__module__", "").startswith("agentguard")
        and not isinstance(value, type(module))
    }
    assert public <= set(module.__all__), public - set(module.__all__)


def test_top_level_lazy_names_resolve() -> None:
    import agentguard

    for name in agentguard.__all__:
        value = getattr(agentguard, name)
        assert getattr(value, "__name__", name) in (name, "timedelta") or name.isupper(), name


@pytest.mark.parametrize(
    ("name", "home"),
    [("AgentGuardMiddleware", "agentguard.asgi"), ("InvalidToken", "agentguard.errors")],
)
def test_a_name_that_moved_says_where_it_lives(name: str, home: str) -> None:
    import agentguard

    with pytest.raises(AttributeError, match=f"from {home} import {name}"):
        getattr(agentguard, name)
