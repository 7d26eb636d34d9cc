"""``agentguard init`` is all or nothing and leaves a gateway that works."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.cli.conftest import RunCLI, RunProcess, schema_exists


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_init_makes_a_key_and_prints_the_next_commands(cli: RunCLI, clean_env: Path) -> None:
    result = cli("init", "--service", "crm=https://api.crm.example/v2")
    assert result.code == 0, result.err
    assert _files(clean_env) == ["agentguard.db", "agentguard.kek", "agentguard.toml"]
    for name in ("agentguard.db", "agentguard.kek", "agentguard.toml"):
        assert stat.S_IMODE((clean_env / name).stat().st_mode) == 0o600
    key = (clean_env / "agentguard.kek").read_text().strip()
    assert key.startswith("kek-1:") and key.split(":")[1] not in result.out
    text = (clean_env / "agentguard.toml").read_text()
    assert 'kek_file = "agentguard.kek"' in text and 'name = "crm"' in text
    assert "next:" in result.out and "agentguard serve" in result.out
    check = cli("serve", "--check")
    assert check.code == 0 and check.out.startswith("settings OK; services: crm")
    assert "warning" not in check.err
    # the printed next commands run as printed (bar the vendor key and the server)
    for line in result.out.split("next:")[1].strip().splitlines():
        argv = line.split()
        if argv[0] == "printf":
            stored = cli(*argv[5:], stdin="vendor-key-" + "x" * 20)
            assert stored.code == 0, stored.err
        elif argv[1] != "serve":
            ran = cli(*argv[1:])
            assert ran.code == 0, (line, ran.err)
    assert (clean_env / "credentials.json").exists()


def test_an_existing_settings_file_stops_init_before_it_writes_anything(
    cli: RunCLI, clean_env: Path
) -> None:
    (clean_env / "agentguard.toml").write_text("# mine\n")
    cli("init").one_line_error(2)
    assert _files(clean_env) == ["agentguard.toml"]
    assert (clean_env / "agentguard.toml").read_text() == "# mine\n"


def test_settings_that_do_not_validate_leave_nothing_and_a_rerun_works(
    cli: RunCLI, clean_env: Path
) -> None:
    line = cli("init", "--kek-file", "keys/kek", "--service", "crm=http://plain.example")
    assert "plain http" in line.one_line_error(2)
    assert _files(clean_env) == []
    assert cli("init", "--kek-file", "keys/kek").code == 0
    assert (clean_env / "keys" / "kek").exists()


def test_an_existing_key_file_is_reused_never_overwritten(cli: RunCLI, clean_env: Path) -> None:
    assert cli("credentials", "keygen", "--out", "agentguard.kek", "--id", "kek-7").code == 0
    key = (clean_env / "agentguard.kek").read_text()
    result = cli("init")
    assert result.code == 0 and "using the existing key-encryption key" in result.out
    assert (clean_env / "agentguard.kek").read_text() == key
    again = cli("credentials", "keygen", "--out", "agentguard.kek")
    assert "refusing to overwrite" in again.one_line_error(2)


def test_a_readable_key_file_is_refused(cli: RunCLI, clean_env: Path) -> None:
    (clean_env / "kek").write_text("kek-1:" + "A" * 43 + "\n")
    (clean_env / "kek").chmod(0o644)
    assert "chmod 600" in cli("init", "--kek-file", "kek").one_line_error(2)
    assert _files(clean_env) == ["kek"]


def test_force_replaces_the_settings_but_keeps_the_key(cli: RunCLI, clean_env: Path) -> None:
    first = cli("init")
    assert first.code == 0
    assert f"created the store at sqlite:///{clean_env / 'agentguard.db'}" in first.out
    key = (clean_env / "agentguard.kek").read_text()
    again = cli("init", "--force", "--service", "crm=https://api.crm.example")
    assert again.code == 0
    assert f"using the existing store at sqlite:///{clean_env / 'agentguard.db'}" in again.out
    assert "created the store" not in again.out
    assert 'name = "crm"' in (clean_env / "agentguard.toml").read_text()
    assert (clean_env / "agentguard.kek").read_text() == key


@pytest.mark.parametrize("store", ["postgresql", "postgres"])
def test_missing_driver_is_one_line_naming_the_extra_and_writes_nothing(
    subprocess_cli: RunProcess, clean_env: Path, store: str
) -> None:
    url = f"{store}://postgres@127.0.0.1:5432/test?schema=never_created"
    result = subprocess_cli("init", "--store", url, blocked=("asyncpg",))
    line = result.one_line_error(2)
    assert "pip install 'agentguard[postgres]'" in line and "pip install -e '.[postgres]'" in line
    assert _files(clean_env) == []


def test_init_on_postgres_creates_the_schema(cli: RunCLI, clean_env: Path, pg_url: str) -> None:
    result = cli("init", "--store", pg_url)
    assert result.code == 0, result.err
    assert "password" not in result.out and "schema=" in result.out
    assert "created the store at postgresql://" in result.out
    assert schema_exists(pg_url)
    again = cli("init", "--force", "--store", pg_url)
    assert "using the existing store at postgresql://" in again.out, again.err
    assert cli("users", "list").out.strip() == "no users"


def test_init_writes_the_store_agentguard_store_names(
    cli: RunCLI, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same order as every command: --store, else $AGENTGUARD_STORE, else the default.
    monkeypatch.setenv("AGENTGUARD_STORE", "sqlite:///from-env.db")
    assert cli("init", "--no-kek").code == 0
    assert 'url = "sqlite:///from-env.db"' in (clean_env / "agentguard.toml").read_text()
    assert (clean_env / "from-env.db").exists() and not (clean_env / "agentguard.db").exists()
    assert cli("init", "--no-kek", "--force", "--store", "sqlite:///flag.db").code == 0
    assert 'url = "sqlite:///flag.db"' in (clean_env / "agentguard.toml").read_text()
