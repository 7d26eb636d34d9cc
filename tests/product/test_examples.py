"""The examples run as documented: the three-service gateway and the agent script."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentguard.asgi._types import ASGIApp, Receive, Scope, Send
from agentguard.config import load_settings
from agentguard.gateway import build_gateway
from agentguard.testing import FakeTokenExchange, FakeUpstream
from examples import agent_script
from examples.gateway import fake_vendors
from tests.product.conftest import RunCLI
from tests.support.servers import LoopbackServer

EXAMPLE = Path(__file__).parents[2] / "examples" / "gateway" / "agentguard.toml"


class Late:
    """An ASGI app whose target is set once the server's port is known."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


def test_gateway_example_with_the_agent_script(
    cli: RunCLI,
    clean_env: Path,
    kek: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = f"sqlite:///{clean_env / 'gateway.db'}"
    monkeypatch.setenv("AGENTGUARD_STORE", store)
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales",
         "--grants", "crm:read automations:write projects:read"),
    ):  # fmt: skip
        assert cli(*argv, "--config", str(EXAMPLE)).code == 0
    for service, owner, secret in (
        ("crm", ("--user", "alice"), fake_vendors.CRM_KEY),
        ("automations", ("--user", "alice"), fake_vendors.AUTOMATIONS_KEY),
        ("projects", ("--account", "acme"), fake_vendors.PROJECTS_ADMIN_KEY),
    ):
        result = cli("credentials", "set", service, *owner, "--config", str(EXAMPLE), stdin=secret)
        assert result.code == 0, result.err

    fakes = fake_vendors.vendors()
    late = Late()
    server = LoopbackServer(late, lifespan="on")
    monkeypatch.setenv("AGENTGUARD_PUBLIC_ORIGIN", server.url)
    settings = load_settings(EXAMPLE)
    exchange = fakes["token"]
    assert isinstance(exchange, FakeTokenExchange)
    gateway = build_gateway(
        settings,
        transports={
            name: httpx.ASGITransport(app=fakes[name])
            for name in ("crm", "automations", "projects")
        },
        token_clients={"projects": httpx.AsyncClient(transport=httpx.ASGITransport(app=exchange))},
    )
    late.app = gateway.app
    with server:
        credentials = clean_env / "credentials.json"
        issued = cli(
            "keys", "issue", "--store", store, "--user", "alice", "--workspace", "sales",
            "--out", str(credentials), "--token-url", f"{server.url}/oauth/token",
            "--resource-url", server.url,
        )  # fmt: skip
        assert issued.code == 0, issued.err
        capsys.readouterr()
        code = agent_script.main(["--credentials", str(credentials), "--gateway", server.url])
        printed = capsys.readouterr().out
    assert code == 0, printed
    assert "crm: 200" in printed and "after renewal: 200" in printed
    crm, projects = fakes["crm"], fakes["projects"]
    assert isinstance(crm, FakeUpstream) and isinstance(projects, FakeUpstream)
    assert crm.requests[0].header("x-api-key") == fake_vendors.CRM_KEY
    assert projects.requests[0].header("authorization") == "Bearer minted-alice-1"
    assert fake_vendors.PROJECTS_ADMIN_KEY not in "".join(r.raw for r in projects.requests)
    assert len(exchange.calls) == 1  # minted once, cached for the second call


def test_fake_vendors_listen_on_the_ports_the_example_names() -> None:
    settings = load_settings(EXAMPLE, environ={"AGENTGUARD_STORE": "memory://"})
    ports = {
        service.name: int(service.base_url.split(":")[2].split("/")[0])
        for service in settings.services
    }
    assert ports == {name: fake_vendors.PORTS[name] for name in ports}
    assert settings.minters["projects"].token_url.startswith(
        f"http://127.0.0.1:{fake_vendors.PORTS['token']}"
    )
