"""Shared fixtures and the secrets canary (see ``tests/canary.py``).

``CANARY`` is a unique fake "real" credential the proxy tests configure as the CRM's key (every
real credential there contains it). Every secret the run creates is watched too: if any reaches
a log record, an audit event, an error body or an error message, the session fails.
"""

from __future__ import annotations

import logging
import secrets

import pytest
from hypothesis import settings

# Generated tests run without Hypothesis's per-example deadline (200 ms by default): on CI's two
# loaded cores an example can take longer without anything being wrong, and Hypothesis then
# fails the test as flaky. What a test asserts is unchanged; speed is measured in benchmarks/.
settings.register_profile("agentguard", deadline=None)
settings.load_profile("agentguard")

CANARY = "crm-live-" + secrets.token_urlsafe(24)


def pytest_configure(config: pytest.Config) -> None:
    from agentguard._secret import encoded_forms
    from tests import canary

    # The tests' own websocket client (the `websockets` package: agentguard's proxy talks to
    # vendors with aiohttp) logs its handshake headers at DEBUG, the agent key the test itself
    # sends included. Its server side, which uvicorn runs for the gateway, stays watched.
    logging.getLogger("websockets.client").setLevel(logging.INFO)

    canary.install(tuple(encoded_forms(CANARY)))


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    from tests import canary

    canary.running(nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests import canary

    problems = canary.findings()
    if problems:
        print("\nCANARY: secrets reached places they must never reach:")
        for problem in problems:
            print(f"  {problem}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        print(f"\ncanary: clean ({canary.counts()})")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
