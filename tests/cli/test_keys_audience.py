"""`agentguard keys issue --audience`: keys for one resource (RFC 8707), in `keys list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import RunCLI
from tests.cli.test_config_resolution import _setup

TOKEN_URL = "https://gw.example.com/oauth/token"


def _issue(cli: RunCLI, *extra: str) -> tuple[int, str, str]:
    result = cli(
        "keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "alice.json",
        "--token-url", TOKEN_URL, "--bearer", *extra,
    )  # fmt: skip
    return result.code, result.out, result.err


def test_keys_issued_for_a_resource_carry_it(cli: RunCLI, clean_env: Path) -> None:
    _setup(cli, "agentguard.toml")
    code, out, err = _issue(cli, "--audience", "https://API.example.com/mcp")
    assert code == 0, err
    assert "audience:       https://api.example.com/mcp" in out  # stored normalised
    credentials = json.loads((clean_env / "alice.json").read_text())
    assert credentials["resource_url"] == "https://API.example.com/mcp"  # defaults to it
    listed = json.loads(cli("keys", "list", "--user", "alice", "--json").out)
    assert {row["audience"] for row in listed} == {"https://api.example.com/mcp"}
    table = cli("keys", "list", "--user", "alice").out.splitlines()
    assert len(table) == 2
    assert all(line.endswith("  for https://api.example.com/mcp") for line in table), table


def test_keys_without_an_audience_are_for_any_resource(cli: RunCLI, clean_env: Path) -> None:
    _setup(cli, "agentguard.toml")
    code, out, err = _issue(cli)
    assert code == 0, err
    assert "audience:       any resource" in out
    listed = json.loads(cli("keys", "list", "--user", "alice", "--json").out)
    assert {row["audience"] for row in listed} == {None}


@pytest.mark.parametrize(
    "audience",
    ["api.example.com", "ftp://api.example.com", "https://api.example.com/mcp?x=1",
     "https://api.example.com/#f", "https://user:pw@api.example.com/"],
)  # fmt: skip
def test_a_malformed_audience_is_refused_before_anything_is_issued(
    cli: RunCLI, clean_env: Path, audience: str
) -> None:
    _setup(cli, "agentguard.toml")
    code, _, err = _issue(cli, "--audience", audience)
    assert code != 0
    assert "--audience must be an http(s) URL without query or fragment" in err
    assert "pw" not in err and "Traceback" not in err
    assert not (clean_env / "alice.json").exists()
    assert json.loads(cli("keys", "list", "--user", "alice", "--json").out) == []
