"""Helpers for your own test suites: a fake clock, builders, and the pytest plugin.

The plugin (registered as a ``pytest11`` entry point) gives these fixtures, all synchronous so
they work with any async test runner: ``agentguard_clock``, ``agentguard_store``,
``agentguard_grants``, ``agentguard_user``, ``agentguard_rules``, ``agentguard_guard``,
``agentguard_keys``, ``agentguard_app`` and ``agentguard_client``. Override any of them in your
own ``conftest.py`` (for example ``agentguard_grants`` to give the user other permissions).
"""

from agentguard.testing.factories import issue_keys, make_user
from agentguard.testing.fakes import FakeClock
from agentguard.testing.upstreams import FakeTokenExchange, FakeUpstream, RecordedRequest

__all__ = [
    "FakeClock",
    "FakeTokenExchange",
    "FakeUpstream",
    "RecordedRequest",
    "issue_keys",
    "make_user",
]
