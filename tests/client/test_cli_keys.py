"""``agentguard keys``: issue a ready credentials file, list, revoke; exit codes; no key printed."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import anyio
import httpx
import pytest

from agentguard import Guard, RouteRule
from agentguard.cli import _keys_args as keys_args
from agentguard.cli._keys import run
from agentguard.client import AgentAuth, CredentialsFile
from agentguard.dpop import DPoPPolicy
from agentguard.storage import SQLiteStore
from agentguard.testing import make_user
from tests.asgi.conftest import build_app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agentguard")
    commands = parser.add_subparsers(dest="command")
    keys_args.add_parser(commands)
    return run(parser.parse_args(argv))


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    path = tmp_path / "agentguard.db"

    async def fill() -> None:
        async with SQLiteStore(path) as store:
            await make_user(store, grants="crm:write")

    anyio.run(fill)
    return f"sqlite:///{path}"


def issue(store_url: str, out: Path, *extra: str) -> int:
    return main(
        [
            "keys",
            "issue",
            "--store",
            store_url,
            "--user",
            "user-1",
            "--workspace",
            "ws-1",
            "--out",
            str(out),
            "--token-url",
            "https://api.example.com/oauth/token",
            *extra,
        ]
    )


def test_issue_writes_a_ready_dpop_bound_file(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent" / "credentials.json"
    assert issue(store_url, out, "--scope", "crm:read") == 0
    printed = capsys.readouterr().out
    credentials = CredentialsFile(out).load()
    assert credentials.access_key.reveal() not in printed
    assert credentials.refresh_key.reveal() not in printed
    assert "PRIVATE KEY" not in printed and str(out) in printed
    assert credentials.token_type == "DPoP" and credentials.dpop_key is not None
    assert credentials.dpop_key.thumbprint in printed
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    assert AgentAuth.from_file(out).credentials.access_key == credentials.access_key

    assert main(["keys", "list", "--store", store_url, "--user", "user-1"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("active") == 2 and "dpop" in listing
    assert credentials.access_key.reveal() not in listing


def test_issued_file_works_against_the_server(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "agent" / "credentials.json"
    assert issue(store_url, out) == 0

    async def call() -> tuple[int, bool, int]:
        async with SQLiteStore(store_url.removeprefix("sqlite:///")) as store:
            guard = Guard(
                store,
                rules=[RouteRule("/crm", service="crm")],
                dpop=DPoPPolicy(public_origin="https://api.example.com"),
            )
            transport = httpx.ASGITransport(app=build_app(guard))
            auth = AgentAuth.from_file(out, async_token_transport=transport)
            async with httpx.AsyncClient(
                transport=transport, base_url="https://api.example.com", auth=auth
            ) as client:
                first = (await client.get("/crm/contacts")).status_code
                renewed = await auth.arenew(fraction=0)
                second = (await client.get("/crm/contacts")).status_code
                return first, renewed, second

    assert anyio.run(call) == (200, True, 200)
    assert CredentialsFile(out).load().refresh_key.reveal().startswith("ag_rt_")


def test_bearer_and_refusals(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent" / "credentials.json"
    assert issue(store_url, out, "--bearer") == 0
    assert CredentialsFile(out).load().dpop_key is None
    capsys.readouterr()

    assert issue(store_url, out) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert issue(store_url, out, "--force") == 0
    capsys.readouterr()

    other = tmp_path / "agent" / "other.json"
    refused = main(
        [
            "keys",
            "issue",
            "--store",
            store_url,
            "--user",
            "nobody",
            "--workspace",
            "ws-1",
            "--out",
            str(other),
            "--token-url",
            "https://api.example.com/oauth/token",
        ]
    )
    assert refused == 1
    assert capsys.readouterr().err.strip() == "agentguard keys: no such user"
    assert not other.exists()

    assert issue("nosuchscheme://x", other) == 2
    assert issue(store_url, other, "--scope", "crm") == 2
    bad_url = issue(store_url, tmp_path / "agent" / "x.json", "--token-url", "ftp://x")
    assert bad_url == 2


def test_revoke_by_family_and_user(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert issue(store_url, tmp_path / "a" / "one.json") == 0
    assert issue(store_url, tmp_path / "a" / "two.json") == 0
    capsys.readouterr()
    main(["keys", "list", "--store", store_url, "--user", "user-1", "--json"])

    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    assert main(["keys", "revoke", "--store", store_url, "--family", rows[0]["family_id"]]) == 0
    assert capsys.readouterr().out.strip() == "revoked 2 keys"
    assert main(["keys", "revoke", "--store", store_url, "--user", "user-1"]) == 0
    assert capsys.readouterr().out.strip() == "revoked 2 keys"
    main(["keys", "list", "--store", store_url, "--user", "user-1"])
    assert capsys.readouterr().out.count("  revoked (") == 4


def test_an_out_path_under_an_unknown_home_is_a_usage_error(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert issue(store_url, Path("~agentguard-no-such-user-7f3a/credentials.json")) == 2
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    assert "--out: cannot expand '~agentguard-no-such-user-7f3a/credentials.json'" in printed.err


def test_a_credentials_file_under_an_unknown_home_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"cannot expand '~agentguard-no-such-user-7f3a/c\.json'"):
        CredentialsFile("~agentguard-no-such-user-7f3a/c.json")
