"""The operator commands: what they change, what they audit, how they fail (one line, exit code)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard.audit import AuditEntry
from agentguard.storage import SQLiteStore
from agentguard.storage._sqlite.schema import SCHEMA_VERSION
from tests.product.conftest import Result, RunCLI, new_kek

GRANTS = ("--grants", "crm:read")


@pytest.fixture
def config(cli: RunCLI, clean_env: Path) -> Path:
    result = cli("init", "--config", "agentguard.toml", "--no-kek")
    assert result.code == 0, result.err
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales", *GRANTS),
    ):  # fmt: skip
        assert cli(*argv).code == 0
    return clean_env / "agentguard.toml"


def events(directory: Path) -> list[dict[str, Any]]:
    async def read() -> list[AuditEntry]:
        async with SQLiteStore(directory / "agentguard.db") as store:
            return await store.read()

    return [entry.event() for entry in anyio.run(read)]


def one_line_error(result: Result, code: int) -> None:
    assert result.code == code
    err = result.err
    assert err.count("\n") == 1 and err.startswith("agentguard"), err
    assert "Traceback" not in err


def test_every_command_has_help(cli: RunCLI) -> None:
    for argv in (
        ("init",), ("serve",), ("db", "upgrade"), ("users", "add"), ("users", "disable"),
        ("users", "enable"), ("users", "grant"), ("users", "revoke-grant"), ("users", "list"),
        ("workspaces", "add"), ("workspaces", "add-member"), ("workspaces", "remove-member"),
        ("accounts", "add"), ("accounts", "close"), ("accounts", "reopen"),
        ("credentials", "set"), ("credentials", "list"), ("credentials", "rotate-kek"),
        ("keys", "issue"), ("audit", "verify"),
    ):  # fmt: skip
        result = cli(*argv, "--help")
        assert result.code == 0 and "usage: agentguard" in result.out


def test_init_writes_a_commented_config_and_the_store(cli: RunCLI, clean_env: Path) -> None:
    result = cli("init", "--kek-file", "secrets/kek")
    assert result.code == 0, result.err
    text = (clean_env / "agentguard.toml").read_text()
    assert text.count("#") > 20 and "[store]" in text and "kek_file" in text
    assert stat.S_IMODE((clean_env / "agentguard.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((clean_env / "secrets" / "kek").stat().st_mode) == 0o600
    assert (clean_env / "secrets" / "kek").read_text().split(":")[1].strip() not in result.out
    again = cli("init")
    one_line_error(again, 2)
    assert "--force" in again.err


def test_users_lifecycle_is_audited(cli: RunCLI, config: Path) -> None:
    assert cli("users", "grant", "alice", "crm", "write").code == 0
    assert cli("users", "revoke-grant", "alice", "crm").code == 0
    assert cli("users", "disable", "alice", "--reason", "left").code == 0
    listed = json.loads(cli("users", "list", "--json").out)
    assert listed == [
        {"account_id": "acme", "enabled": False, "grants": {}, "id": "alice", "name": "alice"}
    ]
    assert cli("users", "enable", "alice").code == 0
    actions = [(e["action"], e["detail"].get("to")) for e in events(config.parent)]
    assert actions[-4:] == [
        ("grant.change", "write"),
        ("grant.change", "none"),
        ("user.disable", None),
        ("user.enable", None),
    ]
    assert "alice" in cli("users", "list").out


def test_disable_can_revoke_keys(cli: RunCLI, config: Path, tmp_path: Path) -> None:
    issued = cli(
        "keys", "issue", "--store", f"sqlite:///{tmp_path / 'agentguard.db'}", "--user", "alice",
        "--workspace", "sales", "--out", str(tmp_path / "c.json"),
        "--token-url", "https://gw.example.com/oauth/token",
    )  # fmt: skip
    assert issued.code == 0, issued.err
    result = cli("users", "disable", "alice", "--revoke-keys")
    assert result.code == 0 and "revoked 2 keys" in result.out


@pytest.mark.parametrize(
    "argv",
    [
        ("users", "disable", "bob"),
        ("users", "enable", "bob"),
        ("users", "grant", "bob", "crm", "read"),
        ("users", "revoke-grant", "bob", "crm"),
        ("users", "add", "carol", "--account", "nope"),
        ("users", "add", "alice", "--account", "acme"),
        ("workspaces", "add", "ops", "--account", "nope"),
        ("workspaces", "add-member", "nope", "alice"),
        ("workspaces", "add-member", "sales", "bob"),
        ("workspaces", "remove-member", "sales", "bob"),
        ("accounts", "close", "nope"),
        ("accounts", "reopen", "nope"),
        ("accounts", "add", "acme"),
    ],
)
def test_unknown_names_are_refused_with_exit_1(
    cli: RunCLI, config: Path, argv: tuple[str, ...]
) -> None:
    one_line_error(cli(*argv), 1)


def test_bad_input_is_a_usage_error(cli: RunCLI, config: Path) -> None:
    one_line_error(cli("users", "add", "bad id!", "--account", "acme"), 2)
    one_line_error(cli("users", "add", "dave", "--account", "acme", "--grants", "crm"), 2)
    assert cli("users", "grant", "alice", "crm", "admin").code == 2  # argparse's usage error


def test_malformed_config_exits_2_naming_the_line(cli: RunCLI, clean_env: Path) -> None:
    (clean_env / "bad.toml").write_text(
        'public_origin = "https://x.example"\n[server]\nport = "x"\n'
    )
    result = cli("users", "list", "--config", "bad.toml")
    one_line_error(result, 2)
    assert "bad.toml:3: server.port" in result.err


def test_workspace_membership(cli: RunCLI, config: Path) -> None:
    assert cli("accounts", "add", "other").code == 0
    assert cli("users", "add", "olga", "--account", "other").code == 0
    one_line_error(cli("workspaces", "add-member", "sales", "olga"), 1)
    assert cli("users", "add", "bob", "--account", "acme").code == 0
    assert cli("workspaces", "add-member", "sales", "bob").code == 0
    assert cli("workspaces", "remove-member", "sales", "bob", "--reason", "moved").code == 0
    one_line_error(cli("workspaces", "remove-member", "sales", "bob"), 1)
    last = events(config.parent)[-1]
    assert last["action"] == "membership.remove" and last["reason"] == "moved"
    assert (
        json.loads(cli("workspaces", "add", "ops", "--account", "acme", "--json").out)["id"]
        == "ops"
    )


def test_accounts_close_and_reopen(cli: RunCLI, config: Path) -> None:
    assert cli("accounts", "close", "acme", "--reason", "churned").code == 0
    assert cli("accounts", "reopen", "acme").code == 0
    closing, reopening = events(config.parent)[-2:]
    assert closing["action"] == "account.close" and closing["reason"] == "churned"
    assert reopening["action"] == "account.reopen"
    assert reopening["detail"] == {"operator": reopening["detail"]["operator"], "via": "cli"}


def test_credentials_never_show_plaintext(
    cli: RunCLI, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_line_error(cli("credentials", "set", "crm", "--user", "alice", stdin="x"), 2)  # no KEK
    old = new_kek("kek-old")
    monkeypatch.setenv("AGENTGUARD_KEK", old)
    secret = "crm-real-" + "z" * 30
    result = cli("credentials", "set", "crm", "--user", "alice", stdin=secret + "\n")
    assert result.code == 0, result.err
    assert (
        cli("credentials", "set", "projects", "--account", "acme", stdin="adm-" + "q" * 30).code
        == 0
    )
    one_line_error(cli("credentials", "set", "crm", "--user", "bob", stdin=secret), 1)
    one_line_error(cli("credentials", "set", "crm", "--user", "alice", stdin="  "), 1)
    listing = cli("credentials", "list", "--json")
    rows = json.loads(listing.out)
    assert {(r["service"], r["scope"], r["kek"]) for r in rows} == {
        ("crm", "user", "kek-old"),
        ("projects", "admin", "kek-old"),
    }
    monkeypatch.setenv("AGENTGUARD_KEK", new_kek("kek-new") + "," + old)
    rotated = cli("credentials", "rotate-kek", "--json")
    assert json.loads(rotated.out) == {"primary": "kek-new", "reencrypted": 2, "connections": 0}
    assert {r["kek"] for r in json.loads(cli("credentials", "list", "--json").out)} == {"kek-new"}
    monkeypatch.setenv("AGENTGUARD_KEK", new_kek("kek-other"))
    one_line_error(cli("credentials", "rotate-kek"), 2)
    everything = "".join(cli(*a).out for a in (("credentials", "list"), ("audit", "tail")))
    assert secret not in everything and "z" * 30 not in everything
    assert secret.encode() not in (config.parent / "agentguard.db").read_bytes()


def test_credentials_for_an_unconfigured_service_are_refused(
    cli: RunCLI, clean_env: Path, kek: str
) -> None:
    (clean_env / "agentguard.toml").write_text(
        'public_origin = "https://gw.example"\n[[services]]\nname = "crm"\n'
        'base_url = "https://crm.example"\n'
    )
    assert cli("accounts", "add", "acme").code == 0
    one_line_error(cli("credentials", "set", "billing", "--account", "acme", stdin="k" * 20), 1)


def test_db_upgrade(cli: RunCLI, clean_env: Path) -> None:
    result = cli("db", "upgrade", "--store", "sqlite:///fresh.db", "--json")
    assert result.code == 0 and json.loads(result.out) == {
        "store": "sqlite",
        "version": SCHEMA_VERSION,
    }
    assert (clean_env / "fresh.db").exists()
    one_line_error(cli("db", "upgrade", "--store", "memory://"), 2)
    one_line_error(cli("db", "upgrade", "--store", "nonsense"), 2)


def test_serve_check_and_bad_settings(cli: RunCLI, clean_env: Path, kek: str) -> None:
    one_line_error(cli("serve"), 2)  # no settings file
    assert cli("init").code == 0
    assert cli("serve", "--check").out.startswith("settings OK")
    (clean_env / "agentguard.toml").write_text("[store\n")
    one_line_error(cli("serve", "--check"), 2)


def test_store_comes_from_the_environment_without_a_config(
    cli: RunCLI, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGUARD_STORE", f"sqlite:///{clean_env / 'env.db'}")
    assert cli("accounts", "add", "acme").code == 0
    assert os.path.exists(clean_env / "env.db")
