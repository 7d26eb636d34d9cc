"""One configuration for every command: --config, $AGENTGUARD_CONFIG, ./agentguard.toml, --store.

And commands that must not create a store never do: a missing store is one line, exit 2, naming
the command that creates it (never "OK: 0 events" or "no such user").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agentguard.cli import _parser
from tests.cli.conftest import RunCLI, schema_exists

TOKEN_URL = "https://gw.example.com/oauth/token"


def _leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every runnable command (``keys issue``, ``init``...) and its parser."""
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append((prefix.strip(), parser))
            return
        for name, child in subs[0].choices.items():
            walk(f"{prefix} {name}", child)

    walk("", _parser())
    return found


def test_every_command_but_demo_takes_config_and_every_store_command_takes_store() -> None:
    leaves = dict(_leaf_parsers())
    assert len(leaves) > 25
    storeless = {"demo", "audit keygen", "credentials keygen", "init"}
    for name, parser in leaves.items():
        options = {o for action in parser._actions for o in action.option_strings}
        if name != "demo":
            assert "--config" in options, name
        if name not in storeless:
            assert "--store" in options, name


def _setup(cli: RunCLI, config: str) -> None:
    assert cli("init", "--config", config).code == 0
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
    ):
        result = cli(*argv, "--config", config)
        assert result.code == 0, result.err


def test_keys_and_audit_follow_the_config_not_the_working_directory(
    cli: RunCLI, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(cli, "gw/agentguard.toml")
    config = "gw/agentguard.toml"
    issued = cli(
        "keys", "issue", "--config", config, "--user", "alice", "--workspace", "sales",
        "--out", "creds/alice.json", "--token-url", TOKEN_URL,
    )  # fmt: skip
    assert issued.code == 0, issued.err
    listed = json.loads(cli("keys", "list", "--config", config, "--user", "alice", "--json").out)
    assert len(listed) == 2
    verified = cli("audit", "verify", "--config", config)
    assert verified.code == 0 and "OK:" in verified.out and "gw/agentguard.db" in verified.out
    monkeypatch.setenv("AGENTGUARD_CONFIG", config)  # the variable names the same file
    assert len(json.loads(cli("keys", "list", "--user", "alice", "--json").out)) == 2
    assert not (clean_env / "agentguard.db").exists()  # nothing fell back to ./agentguard.db


def test_default_config_is_the_one_in_the_working_directory(cli: RunCLI, clean_env: Path) -> None:
    _setup(cli, "agentguard.toml")
    (clean_env / "sub").mkdir()
    assert "alice" in cli("users", "list").out
    assert cli("audit", "tail", "-n", "1").code == 0


def test_flags_beat_variables_beat_the_file(
    cli: RunCLI, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(cli, "agentguard.toml")
    assert cli("db", "upgrade", "--store", "sqlite:///other.db").code == 0
    monkeypatch.setenv("AGENTGUARD_STORE", "sqlite:///other.db")
    assert cli("users", "list").out.strip() == "no users"  # the variable beats the file
    flag = cli("users", "list", "--store", f"sqlite:///{clean_env / 'agentguard.db'}")
    assert "alice" in flag.out  # the flag beats the variable
    missing = cli("users", "list", "--config", "nope.toml")
    assert "nope.toml: no such configuration file" in missing.one_line_error(2)


READ_ONLY = [
    ("users", "list"),
    ("credentials", "list"),
    ("keys", "list", "--user", "alice"),
    ("audit", "verify"),
    ("audit", "tail"),
    ("audit", "export", "--out", "evidence"),
]
EXISTING = [
    ("users", "disable", "alice"),
    ("users", "grant", "alice", "crm:read"),
    ("workspaces", "add", "sales", "--account", "acme"),
    ("accounts", "close", "acme"),
    ("keys", "revoke", "--user", "alice"),
    ("keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "c.json",
     "--token-url", TOKEN_URL),
]  # fmt: skip


@pytest.mark.parametrize("argv", READ_ONLY + EXISTING, ids=" ".join)
@pytest.mark.parametrize("target", ["nothing", "--store", "config"])
def test_a_missing_store_is_an_error_naming_the_command_that_creates_it(
    cli: RunCLI, clean_env: Path, argv: tuple[str, ...], target: str
) -> None:
    extra: tuple[str, ...] = ()
    creates = "agentguard init"
    if target == "--store":
        extra, creates = ("--store", "sqlite:///typo.db"), "agentguard db upgrade --store"
    elif target == "config":
        (clean_env / "prod.toml").write_text(
            'public_origin = "https://gw.example"\n[store]\nurl = "sqlite:///prod.db"\n'
        )
        extra, creates = ("--config", "prod.toml"), "agentguard db upgrade --config prod.toml"
    before = sorted(p.name for p in clean_env.iterdir())
    line = cli(*argv, *extra).one_line_error(2)
    assert "no usable agentguard store" in line and creates in line
    assert "never create" in line
    assert sorted(p.name for p in clean_env.iterdir()) == before


def test_an_empty_sqlite_file_is_no_store(cli: RunCLI, clean_env: Path) -> None:
    (clean_env / "agentguard.db").touch()
    line = cli("keys", "list", "--user", "alice").one_line_error(2)
    assert "holds no agentguard schema" in line
    assert (clean_env / "agentguard.db").stat().st_size == 0


def test_accounts_add_creates_the_store(cli: RunCLI, clean_env: Path) -> None:
    assert cli("accounts", "add", "acme").code == 0
    assert (clean_env / "agentguard.db").exists()


def test_postgres_config_is_followed_and_never_created_by_read_only_commands(
    cli: RunCLI, clean_env: Path, pg_url: str
) -> None:
    (clean_env / "agentguard.toml").write_text(
        f'public_origin = "https://gw.example"\n[store]\nurl = "{pg_url}"\n'
    )
    for argv in (*READ_ONLY, *EXISTING):
        line = cli(*argv).one_line_error(2)
        assert "does not exist" in line and "agentguard db upgrade --config agentguard.toml" in line
    assert not schema_exists(pg_url)
    assert not (clean_env / "agentguard.db").exists()
    assert cli("db", "upgrade").code == 0
    assert schema_exists(pg_url)
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
        ("keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "c.json",
         "--token-url", TOKEN_URL),
    ):  # fmt: skip
        result = cli(*argv)
        assert result.code == 0, result.err
    empty = cli("audit", "verify")
    assert empty.code == 0 and "OK: " in empty.out and "schema=" in empty.out
    assert not (clean_env / "agentguard.db").exists()


@pytest.mark.parametrize(
    ("argv", "grants"),
    [
        (("crm:write",), {"crm": "write"}),
        (("crm:write", "projects:read"), {"crm": "write", "projects": "read"}),
        (("crm:write,projects:read",), {"crm": "write", "projects": "read"}),
        (("crm", "write"), {"crm": "write"}),  # the older form
    ],
)
def test_grants_are_written_service_colon_level(
    cli: RunCLI, argv: tuple[str, ...], grants: dict[str, str]
) -> None:
    _setup(cli, "agentguard.toml")
    assert cli("users", "grant", "alice", *argv).code == 0
    users = json.loads(cli("users", "list", "--json").out)
    assert users[0]["grants"] == grants
    assert cli("users", "revoke-grant", "alice", *grants).code == 0
    assert json.loads(cli("users", "list", "--json").out)[0]["grants"] == {}


@pytest.mark.parametrize("argv", [("crm",), ("crm", "admin"), ("crm:admin",), ("crm", "read", "x")])
def test_malformed_grants_are_usage_errors(cli: RunCLI, argv: tuple[str, ...]) -> None:
    _setup(cli, "agentguard.toml")
    cli("users", "grant", "alice", *argv).one_line_error(2)


def test_users_add_takes_grants_in_the_same_syntax(cli: RunCLI) -> None:
    _setup(cli, "agentguard.toml")
    added = cli(
        "users", "add", "bob", "--account", "acme", "--grants", "crm:read projects:write",
        "--grants", "billing:read", "--json",
    )  # fmt: skip
    assert added.code == 0, added.err
    assert json.loads(added.out)["grants"] == {
        "billing": "read",
        "crm": "read",
        "projects": "write",
    }
