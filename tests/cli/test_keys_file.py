"""Where ``agentguard keys issue --out`` may write: a normal 0755 directory yes, a shared one no."""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agentguard import Secret
from agentguard.client import CredentialsFileError
from agentguard.client._credentials_file import (
    AgentCredentials,
    CredentialsFile,
    parse_credentials,
)
from tests.cli.conftest import RunCLI

TOKEN_URL = "https://gw.example.com/oauth/token"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def ready(cli: RunCLI) -> RunCLI:
    assert cli("init").code == 0
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
    ):
        assert cli(*argv).code == 0
    return cli


def issue(cli: RunCLI, out: str, *extra: str) -> tuple[int, str]:
    result = cli(
        "keys", "issue", "--user", "alice", "--workspace", "sales", "--out", out,
        "--token-url", TOKEN_URL, *extra,
    )  # fmt: skip
    return result.code, result.err


def active_keys(cli: RunCLI) -> int:
    rows = json.loads(cli("keys", "list", "--user", "alice", "--json").out)
    return sum(row["state"] == "active" for row in rows)


def test_a_normal_0755_directory_is_accepted(ready: RunCLI, clean_env: Path) -> None:
    assert stat.S_IMODE(clean_env.stat().st_mode) == 0o755
    assert issue(ready, "./credentials.json") == (0, "")
    path = clean_env / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_credentials(path.read_bytes()).token_url == TOKEN_URL
    assert [p.name for p in clean_env.iterdir() if p.name.startswith(".")] == []  # no temp


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_directory_others_can_write_is_refused_before_any_key_is_issued(
    ready: RunCLI, clean_env: Path, mode: int
) -> None:
    shared = clean_env / "shared"
    shared.mkdir()
    shared.chmod(mode)
    code, err = issue(ready, "shared/credentials.json")
    assert code == 2 and err.count("\n") == 1
    assert "writable by other users" in err and "0755 directory is fine" in err
    assert "run: chmod go-w shared," in err
    assert list(shared.iterdir()) == []
    assert active_keys(ready) == 0


@pytest.mark.parametrize("mode", [0o1777, 0o1770])
def test_a_shared_sticky_directory_is_refused_without_chmod_advice(
    ready: RunCLI, clean_env: Path, mode: int
) -> None:
    shared = clean_env / "tmp"  # like /tmp: chmod-ing it would break everyone else
    shared.mkdir()
    shared.chmod(mode)
    code, err = issue(ready, "tmp/credentials.json")
    assert code == 2 and err.count("\n") == 1
    assert "chmod" not in err
    assert "shared directory" in err and "name a directory of your own" in err
    assert "~/.config/agentguard" in err
    assert list(shared.iterdir()) == []
    assert active_keys(ready) == 0


def test_the_loader_refuses_a_sticky_directory_without_chmod_advice(tmp_path: Path) -> None:
    file = CredentialsFile(tmp_path / "agent" / "credentials.json")
    file.create(
        AgentCredentials(
            access_key=Secret("ag_at_" + "a" * 43),
            refresh_key=Secret("ag_rt_" + "b" * 43),
            issued_at=NOW,
            expires_at=NOW + timedelta(hours=1),
            token_url=TOKEN_URL,
        )
    )
    file.path.parent.chmod(0o1777)
    for action in (file.load, file.lock):
        with pytest.raises(CredentialsFileError) as info:
            action()
        assert "chmod" not in str(info.value)
        assert "directory of your own (e.g. ~/.config/agentguard)" in str(info.value)


def test_a_missing_directory_is_created_private(ready: RunCLI, clean_env: Path) -> None:
    assert issue(ready, "agents/alice/credentials.json")[0] == 0
    assert stat.S_IMODE((clean_env / "agents").stat().st_mode) == 0o700
    assert stat.S_IMODE((clean_env / "agents" / "alice").stat().st_mode) == 0o700


def test_an_existing_file_is_kept_unless_forced(ready: RunCLI, clean_env: Path) -> None:
    assert issue(ready, "c.json")[0] == 0
    before = (clean_env / "c.json").read_bytes()
    code, err = issue(ready, "c.json")
    assert code == 2 and "--force" in err
    assert (clean_env / "c.json").read_bytes() == before
    assert issue(ready, "c.json", "--force")[0] == 0
    assert (clean_env / "c.json").read_bytes() != before
    assert stat.S_IMODE((clean_env / "c.json").stat().st_mode) == 0o600
    assert active_keys(ready) == 4  # both issuances, nothing revoked
