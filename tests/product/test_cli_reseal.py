"""``agentguard credentials reseal``: v1 rows are re-sealed only with a confirmed scope."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from agentguard.credentials import KeyRing
from agentguard.storage import SQLiteStore
from tests.product.conftest import RunCLI, new_kek
from tests.product.test_cli_operator import one_line_error
from tests.support.vault_rows import as_v1

USER_SECRET = "crm-real-" + "z" * 30
ADMIN_SECRET = "adm-real-" + "q" * 30


def _downgrade(directory: Path, values: dict[str, str]) -> dict[str, str]:
    """Rewrite every stored row as the v1 vault wrote it; returns {service: id}."""

    async def rewrite() -> dict[str, str]:
        ring = KeyRing.from_env()
        async with SQLiteStore(directory / "agentguard.db") as store:
            ids = {}
            for row in await store.list_credentials():
                await store.put_credential(as_v1(row, values[row.service], ring))
                ids[row.service] = row.id
            return ids

    return anyio.run(rewrite)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def config(cli: RunCLI, clean_env: Path) -> Path:
    for argv in (
        ("init", "--config", "agentguard.toml"),
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
    ):
        assert cli(*argv).code == 0
    return clean_env / "agentguard.toml"


@pytest.fixture
def legacy(cli: RunCLI, config: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AGENTGUARD_KEK", new_kek("kek-1"))
    assert cli("credentials", "set", "crm", "--user", "alice", stdin=USER_SECRET).code == 0
    assert cli("credentials", "set", "projects", "--account", "acme", stdin=ADMIN_SECRET).code == 0
    return _downgrade(config.parent, {"crm": USER_SECRET, "projects": ADMIN_SECRET})


def _seals(cli: RunCLI) -> dict[str, tuple[str, str]]:
    rows = json.loads(cli("credentials", "list", "--json").out)
    return {r["service"]: (r["seal"], r["scope"]) for r in rows}


def test_unconfirmed_v1_rows_are_left_and_reported(cli: RunCLI, legacy: dict[str, str]) -> None:
    assert _seals(cli) == {"crm": ("v1", "user"), "projects": ("v1", "admin")}
    result = cli("credentials", "reseal", "--json")  # stdin is not a terminal: no prompt
    one_line_error(result, 1)
    assert legacy["crm"] in result.err and legacy["projects"] in result.err
    assert json.loads(result.out)["unconfirmed"] == sorted(legacy.values())
    assert _seals(cli) == {"crm": ("v1", "user"), "projects": ("v1", "admin")}


def test_confirmed_rows_are_resealed(cli: RunCLI, legacy: dict[str, str]) -> None:
    result = cli(
        "credentials", "reseal", "--json",
        "--confirm-user", legacy["crm"], "--confirm-admin", legacy["projects"],
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["resealed"] == {legacy["crm"]: "user", legacy["projects"]: "admin"}
    assert report["unconfirmed"] == [] and report["refused"] == []
    assert _seals(cli) == {"crm": ("v2", "user"), "projects": ("v2", "admin")}
    everything = result.out + result.err + cli("audit", "tail").out
    assert USER_SECRET not in everything and ADMIN_SECRET not in everything
    assert cli("credentials", "reseal").code == 0  # nothing left


def test_an_admin_row_is_never_resealed_as_user(cli: RunCLI, legacy: dict[str, str]) -> None:
    result = cli("credentials", "reseal", "--confirm-user", legacy["projects"], legacy["crm"])
    one_line_error(result, 1)
    assert "set the credential again" in result.err and legacy["projects"] in result.err
    assert _seals(cli) == {"crm": ("v2", "user"), "projects": ("v1", "admin")}


def test_confirming_admin_narrows_a_row_stored_as_user(cli: RunCLI, legacy: dict[str, str]) -> None:
    result = cli("credentials", "reseal", "--confirm-admin", legacy["crm"], legacy["projects"])
    assert result.code == 0, result.err
    assert f"warning: {legacy['crm']} was stored as user-scoped" in result.out
    assert _seals(cli) == {"crm": ("v2", "admin"), "projects": ("v2", "admin")}


def test_bad_confirmations_are_refused_before_any_change(
    cli: RunCLI, legacy: dict[str, str]
) -> None:
    one_line_error(cli("credentials", "reseal", "--confirm-user", "cred_nope"), 1)
    both = legacy["crm"]
    one_line_error(cli("credentials", "reseal", "--confirm-user", both, "--confirm-admin", both), 2)
    assert _seals(cli) == {"crm": ("v1", "user"), "projects": ("v1", "admin")}


def test_a_terminal_asks_for_each_row(
    cli: RunCLI, legacy: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    order = sorted(legacy.items(), key=lambda item: item[1])  # list order: by id
    answers = {"crm": "user", "projects": "admin"}
    monkeypatch.setattr(
        sys, "stdin", _Terminal("maybe\n" + "".join(answers[s] + "\n" for s, _ in order))
    )
    result = cli("credentials", "reseal")
    assert result.code == 0, result.err
    assert _seals(cli) == {"crm": ("v2", "user"), "projects": ("v2", "admin")}
    assert "stored scope admin (not verifiable" in result.err


def test_no_input_never_prompts(
    cli: RunCLI, legacy: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("admin\nadmin\n"))
    one_line_error(cli("credentials", "reseal", "--no-input"), 1)
    assert _seals(cli) == {"crm": ("v1", "user"), "projects": ("v1", "admin")}


def test_rotate_kek_warns_about_v1_rows_and_keeps_them_refused(
    cli: RunCLI, legacy: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGUARD_KEK", new_kek("kek-2") + "," + os.environ["AGENTGUARD_KEK"])
    result = cli("credentials", "rotate-kek", "--json")
    assert json.loads(result.out) == {"primary": "kek-2", "reencrypted": 2, "connections": 0}
    assert "2 credentials are in seal format v1" in result.err
    rows = json.loads(cli("credentials", "list", "--json").out)
    assert {(r["seal"], r["kek"]) for r in rows} == {("v1", "kek-2")}


def test_reseal_has_help(cli: RunCLI) -> None:
    result = cli("credentials", "reseal", "--help")
    assert result.code == 0 and "--confirm-admin" in result.out and "--no-input" in result.out
