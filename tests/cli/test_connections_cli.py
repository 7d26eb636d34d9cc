"""``agentguard connections`` on a SQLite store, through the real CLI entry: a one-time link on
stdout (a warning that it is a secret on stderr, never the link), listing without tokens,
disconnect revoked at a fake vendor on loopback; refusals one line with exit code 1, usage and
environment errors exit code 2; every link and disconnect audited with the operator's name."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from agentguard._model import ConnectedAccount
from agentguard.config import load_settings
from agentguard.connect._flow_errors import ConnectRefused
from agentguard.connect._vendor import VendorClient
from agentguard.gateway._connect import connect_flows, connected_accounts
from agentguard.storage import SQLiteStore
from agentguard.testing._oauth_vendor import FakeOAuthVendor
from tests.cli.conftest import RunCLI
from tests.connect.gateway_support import CRM_SERVICE
from tests.support.servers import LoopbackServer

ORIGIN = "http://127.0.0.1:8080"  # what agentguard init writes
REDIRECT = f"{ORIGIN}/connect/crm/callback"

SERVICES = (
    CRM_SERVICE
    + """
[[services]]
name = "billing"
base_url = "https://billing.example"
"""
)


@pytest.fixture
def vendor() -> Iterator[FakeOAuthVendor]:
    served = FakeOAuthVendor(users=("alice-v", "bob-v"), auto_approve="alice-v")
    with LoopbackServer(served) as server:
        served.bind(server.url)
        yield served


@pytest.fixture
def ready(
    cli: RunCLI, clean_env: Path, vendor: FakeOAuthVendor, monkeypatch: pytest.MonkeyPatch
) -> RunCLI:
    assert cli("init").code == 0
    settings = clean_env / "agentguard.toml"
    settings.write_text(
        settings.read_text()
        + SERVICES.format(api=vendor.api_url, vendor=vendor.issuer, client_id=vendor.client_id)
    )
    monkeypatch.setenv("AGENTGUARD_OAUTH_CRM_CLIENT_SECRET", vendor.client_secret.reveal())
    assert cli("accounts", "add", "acme").code == 0
    assert cli("workspaces", "add", "sales", "--account", "acme").code == 0
    for user in ("alice", "bob", "eve"):
        added = cli("users", "add", user, "--account", "acme", "--workspace", "sales")
        assert added.code == 0, added.err
    assert cli("users", "disable", "eve").code == 0
    return cli


def _events(work: Path, action: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with SQLiteStore(work / "agentguard.db") as store:
            return [entry.event() for entry in await store.read()]

    return [event for event in anyio.run(read) if event["action"] == action]


def _connect(work: Path, vendor: FakeOAuthVendor, user_id: str) -> tuple[ConnectedAccount, str]:
    """Connect ``user_id`` as the gateway's callback would; the connection and its refresh
    token (to check the revocation at the vendor)."""

    async def run() -> tuple[ConnectedAccount, str]:
        settings = load_settings(work / "agentguard.toml")
        client = VendorClient(
            "crm",
            vendor.oauth_config(),
            client_secret=vendor.client_secret,
            transport=httpx.ASGITransport(app=vendor),
        )
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        url = await client.authorization_url(
            redirect_uri=REDIRECT, state="s-" + secrets.token_hex(8), code_challenge=challenge
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=vendor)) as browser:
            location = (await browser.get(url)).headers["location"]
        [code] = parse_qs(urlsplit(location).query)["code"]
        tokens = await client.exchange_code(code, redirect_uri=REDIRECT, code_verifier=verifier)
        await client.aclose()
        assert tokens.refresh_token is not None
        async with SQLiteStore(work / "agentguard.db") as store:
            accounts = connected_accounts(settings, store, {}, clock=None, audit=None)
            record = await accounts.connect("crm", user_id, tokens)
        return record, tokens.refresh_token.reveal()

    return anyio.run(run)


def test_link_prints_a_one_time_link_and_warns_it_is_a_secret(
    ready: RunCLI, clean_env: Path
) -> None:
    result = ready("connections", "link", "--service", "crm", "--user", "alice", "--as", "anna")
    assert result.code == 0, result.err
    url = result.out.strip()
    assert result.out == url + "\n"
    assert url.startswith(f"{ORIGIN}/connect/crm?ticket=ag_ct_")
    assert "one-time" in result.err and "secret" in result.err and "alice" in result.err
    assert "ag_ct_" not in result.err
    [event] = _events(clean_env, "connection.link")
    assert event["actor"]["user"] == "alice" and event["detail"]["by"] == "anna"
    assert "ag_ct_" not in json.dumps(event)

    [ticket] = parse_qs(urlsplit(url).query)["ticket"]

    async def redeem() -> str:
        settings = load_settings(clean_env / "agentguard.toml")
        async with SQLiteStore(clean_env / "agentguard.db") as store:
            flows = connect_flows(settings, store, clock=None, audit=None)
            flow = await flows.redeem_ticket(ticket, service="crm")
            with pytest.raises(ConnectRefused):
                await flows.redeem_ticket(ticket, service="crm")
            return flow.user_id

    assert anyio.run(redeem) == "alice"


def test_link_json_carries_the_url_and_expiry(ready: RunCLI) -> None:
    result = ready("connections", "link", "--service", "crm", "--user", "bob", "--json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert set(document) == {"url", "expires_at", "service", "user_id"}
    assert (document["service"], document["user_id"]) == ("crm", "bob")
    assert document["url"].startswith(f"{ORIGIN}/connect/crm?ticket=ag_ct_")


@pytest.mark.parametrize(
    ("service", "user", "says"),
    [
        ("crm", "nobody", "no user 'nobody'"),
        ("crm", "eve", "user 'eve' is disabled"),
        ("billing", "alice", "uses operator-set credentials"),
        ("mail", "alice", "no service named 'mail' (connected services: crm)"),
    ],
)
def test_link_refusals_are_one_line_exit_1(
    ready: RunCLI, clean_env: Path, service: str, user: str, says: str
) -> None:
    result = ready("connections", "link", "--service", service, "--user", user)
    line = result.one_line_error(1)
    assert line.startswith("agentguard connections: ") and says in line
    assert result.out == "" and _events(clean_env, "connection.link") == []


def test_list_shows_connections_without_tokens(
    ready: RunCLI, clean_env: Path, vendor: FakeOAuthVendor
) -> None:
    empty = ready("connections", "list")
    assert empty.code == 0 and empty.out == "no connections\n"
    assert json.loads(ready("connections", "list", "--json").out) == []
    record, refresh = _connect(clean_env, vendor, "alice")
    listing = ready("connections", "list")
    assert listing.code == 0, listing.err
    assert listing.out.startswith(
        "crm  alice  active  scopes contacts.read contacts.write  expires "
    )
    assert refresh not in listing.out
    [row] = json.loads(ready("connections", "list", "--json", "--user", "alice").out)
    assert row["id"] == record.id and row["status"] == "active"
    assert set(row) == {
        "id", "service", "user_id", "status", "scopes", "expires_at", "connected_at",
        "updated_at",
    }  # fmt: skip
    assert json.loads(ready("connections", "list", "--json", "--user", "bob").out) == []
    assert json.loads(ready("connections", "list", "--json", "--service", "billing").out) == []


def test_disconnect_revokes_at_the_vendor_and_is_audited(
    ready: RunCLI, clean_env: Path, vendor: FakeOAuthVendor
) -> None:
    _, refresh = _connect(clean_env, vendor, "alice")
    assert vendor.is_active(refresh)
    result = ready(
        "connections", "disconnect", "--service", "crm", "--user", "alice", "--as", "anna"
    )
    assert result.code == 0, result.err
    assert result.out == "disconnected alice from crm (by anna)\n" and result.err == ""
    assert not vendor.is_active(refresh)
    [event] = _events(clean_env, "connection.disconnect")
    assert event["actor"]["user"] == "alice" and event["detail"]["by"] == "anna"
    again = ready("connections", "disconnect", "--service", "crm", "--user", "alice")
    assert again.one_line_error(1) == (
        "agentguard connections: user 'alice' has no connection to 'crm'"
    )
    assert ready("connections", "list").out == "no connections\n"


def test_disconnect_without_the_client_secret_names_the_variable(
    ready: RunCLI, clean_env: Path, vendor: FakeOAuthVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connect(clean_env, vendor, "alice")
    monkeypatch.delenv("AGENTGUARD_OAUTH_CRM_CLIENT_SECRET")
    result = ready("connections", "disconnect", "--service", "crm", "--user", "alice")
    line = result.one_line_error(2)
    assert (
        "AGENTGUARD_OAUTH_CRM_CLIENT_SECRET" in line and vendor.client_secret.reveal() not in line
    )
    assert len(json.loads(ready("connections", "list", "--json").out)) == 1  # still there
    # a link needs no vendor, so no client secret
    assert ready("connections", "link", "--service", "crm", "--user", "bob").code == 0


def test_link_needs_the_settings_file(ready: RunCLI, clean_env: Path) -> None:
    (clean_env / "agentguard.toml").rename(clean_env / "elsewhere.toml")
    store = f"sqlite:///{clean_env / 'agentguard.db'}"
    result = ready("connections", "link", "--service", "crm", "--user", "alice", "--store", store)
    assert "no settings file" in result.one_line_error(2)
    listing = ready("connections", "list", "--store", store)
    assert listing.code == 0 and listing.out == "no connections\n"


def test_the_commented_example_in_the_init_file_is_valid(cli: RunCLI, clean_env: Path) -> None:
    assert cli("init").code == 0
    path = clean_env / "agentguard.toml"
    text = path.read_text()
    start = text.index('# [[services]]\n# name = "mail"')
    example = [line.removeprefix("# ").removeprefix("#") for line in text[start:].splitlines()]
    path.write_text(text[:start] + "\n".join(example) + "\n")
    settings = load_settings(path, environ={})
    [mail] = settings.connected_services()
    assert mail.name == "mail" and mail.oauth is not None
    assert mail.oauth.scopes == ("mail.read",)
    assert (settings.connect.ticket_ttl, settings.connect.state_ttl) == (900, 600)


def test_serve_check_needs_the_client_secret_of_a_connected_service(
    ready: RunCLI, monkeypatch: pytest.MonkeyPatch, vendor: FakeOAuthVendor
) -> None:
    checked = ready("serve", "--check")
    assert checked.code == 0, checked.err
    assert checked.out == "settings OK; services: billing, crm\n"
    monkeypatch.delenv("AGENTGUARD_OAUTH_CRM_CLIENT_SECRET")
    refused = ready("serve", "--check")
    line = refused.one_line_error(2)
    assert line.startswith("agentguard serve: AGENTGUARD_OAUTH_CRM_CLIENT_SECRET: service crm: ")
    assert vendor.client_secret.reveal() not in line
