"""Helpers for your own test suites: a fake clock, builders, and the pytest plugin.

The plugin (registered as a ``pytest11`` entry point) gives these fixtures, all synchronous so
they work with any async test runner: ``agentguard_clock``, ``agentguard_store``,
``agentguard_grants``, ``agentguard_user``, ``agentguard_rules``, ``agentguard_guard``,
``agentguard_keys``, ``agentguard_dpop_key``, ``agentguard_app`` and ``agentguard_client``.
Override any of them in your own ``conftest.py`` (for example ``agentguard_grants`` to give the
user other permissions).

The names below are imported on first use, so loading the plugin (which imports this package)
costs nothing until a test asks for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentguard.testing._dpop_keys import ClockedDPoPKey
    from agentguard.testing._factories import issue_keys, make_user
    from agentguard.testing._fakes import FakeClock
    from agentguard.testing._faults import FaultyStore
    from agentguard.testing._oauth_vendor import FakeOAuthVendor
    from agentguard.testing._upstreams import FakeTokenExchange, FakeUpstream, RecordedRequest

__all__ = [
    "ClockedDPoPKey",
    "FakeClock",
    "FakeOAuthVendor",
    "FakeTokenExchange",
    "FakeUpstream",
    "FaultyStore",
    "RecordedRequest",
    "issue_keys",
    "make_user",
]

_LAZY = {
    "FaultyStore": "agentguard.testing._faults",
    "ClockedDPoPKey": "agentguard.testing._dpop_keys",
    "FakeClock": "agentguard.testing._fakes",
    "FakeOAuthVendor": "agentguard.testing._oauth_vendor",
    "FakeTokenExchange": "agentguard.testing._upstreams",
    "FakeUpstream": "agentguard.testing._upstreams",
    "RecordedRequest": "agentguard.testing._upstreams",
    "issue_keys": "agentguard.testing._factories",
    "make_user": "agentguard.testing._factories",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
