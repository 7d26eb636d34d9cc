"""``agentguard serve`` as the first attack's fixture starts it, plus a crm route whose GETs
are held for approval and cost 5 (``/crm/exports``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.gates.attack.conftest as first_attack
from tests.gates.attack.conftest import Gateway

EXPORTS = (
    '[[services.routes]]\npath = "/exports"\napproval = ["GET"]\ncost = {{ GET = 5 }}\n\n'
    '[[services.routes]]\npath = "/costly"'
)


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    routes = first_attack.ROUTES.replace('[[services.routes]]\npath = "/costly"', EXPORTS, 1)
    assert routes != first_attack.ROUTES
    monkeypatch.setattr(first_attack, "ROUTES", routes)
    yield from first_attack._start_gateway(tmp_path, "sqlite")


@pytest.fixture(autouse=True)
def _quiet_request_logs() -> Iterator[None]:
    """These attacks put the agent's own key in a query string on purpose: the HTTP client's
    and the test servers' request lines would log it (the secrets canary counts log records).
    agentguard itself never logs a query string."""
    import logging

    names = ("httpx", "werkzeug", "uvicorn.access")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
