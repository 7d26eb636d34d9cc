"""``agentguard serve`` and ``serve --check`` refuse, on one line with exit code 2, a store that
cannot open and a missing server driver; the ``gateway started`` line names the services."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import anyio
import pytest

from agentguard.config import Settings, StoreSettings
from agentguard.gateway import build_gateway
from tests.cli.conftest import RunCLI, RunProcess
from tests.support.servers import free_port

PASSWORD = "s3cret-pw-do-not-print"


def _closed_port_url() -> str:
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/test?schema=x"


def test_serve_with_an_unreachable_store_is_one_line_naming_it(
    subprocess_cli: RunProcess,
) -> None:
    assert subprocess_cli("init", "--no-kek").code == 0
    url = _closed_port_url()
    result = subprocess_cli("serve", "--store", url, "--port", str(free_port()), "--no-operator")
    line = result.one_line_error(2)
    assert line.startswith("agentguard serve: cannot reach the store at postgresql://postgres@")
    assert PASSWORD not in result.err and "startup failed" not in result.err


@pytest.mark.parametrize("store", ["sqlite:///missing.db", "postgres"])
def test_serve_check_opens_the_store_and_never_creates_it(
    cli: RunCLI, clean_env: Path, store: str
) -> None:
    assert cli("init", "--no-kek").code == 0
    url = _closed_port_url() if store == "postgres" else store
    result = cli("serve", "--check", "--store", url)
    line = result.one_line_error(2)
    assert "settings OK" not in result.out and PASSWORD not in line
    assert "missing.db" in line or "cannot reach the store at postgresql://" in line
    assert not (clean_env / "missing.db").exists()


def test_serve_check_passes_on_an_existing_store(cli: RunCLI) -> None:
    assert cli("init", "--no-kek").code == 0
    result = cli("serve", "--check")
    assert result.code == 0 and result.out == "settings OK; services: none\n"


def test_serve_check_needs_the_server_driver(subprocess_cli: RunProcess) -> None:
    assert subprocess_cli("init", "--no-kek").code == 0
    line = subprocess_cli("serve", "--check", blocked=("uvicorn",)).one_line_error(2)
    assert "agentguard serve needs uvicorn" in line and "pip install 'agentguard[server]'" in line


def test_serve_help_says_what_check_checks(cli: RunCLI) -> None:
    text = " ".join(cli("serve", "--help").out.split())
    assert "the store opens" in text and "server driver (uvicorn)" in text


def test_a_port_in_use_exits_2(subprocess_cli: RunProcess) -> None:
    assert subprocess_cli("init", "--no-kek").code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess_cli(
            "serve", "--host", "127.0.0.1", "--port", str(port), "--no-operator"
        )
    assert result.code == 2, result.err
    assert "Traceback" not in result.err


def test_gateway_started_names_the_services_or_none(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(store=StoreSettings(url="memory://"), public_origin="https://gw.example")
    gateway = build_gateway(settings)

    async def start_and_stop() -> None:
        async with gateway._lifespan(gateway.app.app):  # type: ignore[arg-type]
            pass

    with caplog.at_level(logging.INFO, logger="agentguard.gateway"):
        anyio.run(start_and_stop)
    started = [r for r in caplog.records if r.getMessage().startswith("gateway started")]
    assert [r.getMessage() for r in started] == ["gateway started; services: none"]
    assert not hasattr(started[0], "service")


def test_serve_check_gives_up_on_a_silent_store(
    cli: RunCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("init", "--no-kek").code == 0
    monkeypatch.setattr("agentguard.cli._serve.CHECK_TIMEOUT", 0.5)
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/test"
        line = cli("serve", "--check", "--store", url).one_line_error(2)
    assert line == (
        f"agentguard serve: the store at postgresql://postgres@127.0.0.1:{port}/test "
        "did not answer within 0.5 seconds"
    )
