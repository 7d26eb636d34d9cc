"""A missing optional dependency anywhere is one line naming the extra; gaps are warned about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentguard._extras import EXTRAS, MissingExtra, import_extra, missing_extra
from tests.cli.conftest import RunCLI, RunProcess


@pytest.mark.parametrize("package", sorted(EXTRAS))
def test_each_optional_package_names_its_extra(package: str) -> None:
    extra = EXTRAS[package][0]
    error = MissingExtra(package)
    assert isinstance(error, ImportError) and error.name == package
    assert f"pip install 'agentguard[{extra}]'" in str(error)
    assert f"pip install -e '.[{extra}]'" in str(error)


def test_other_import_errors_pass_through() -> None:
    error = ModuleNotFoundError("No module named 'yaml'", name="yaml")
    assert missing_extra(error) is error
    with pytest.raises(ModuleNotFoundError):
        import_extra("agentguard_no_such_module")


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("agentguard.integrations.fastapi", "fastapi", "fastapi"),
        ("agentguard.integrations.mcp", "mcp", "mcp"),
    ],
)
def test_integrations_without_their_extra_raise_a_named_import_error(
    module: str, blocked: str, extra: str, tmp_path: Path
) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("MissingExtra ")
    assert f"pip install 'agentguard[{extra}]'" in done.stdout


def test_serve_without_uvicorn_is_one_line(subprocess_cli: RunProcess) -> None:
    assert subprocess_cli("init").code == 0
    line = subprocess_cli("serve", blocked=("uvicorn",)).one_line_error(2)
    assert "agentguard serve needs uvicorn" in line and "pip install -e '.[server]'" in line


def test_redis_replay_without_redis_is_one_line(
    subprocess_cli: RunProcess, clean_env: Path
) -> None:
    assert subprocess_cli("init").code == 0
    toml = clean_env / "agentguard.toml"
    text = toml.read_text().replace("[dpop]\n", '[dpop]\nreplay = "redis://127.0.0.1:6379/0"\n')
    toml.write_text(text)
    result = subprocess_cli("serve", "--check", blocked=("redis",))
    line = result.one_line_error(2)
    assert "pip install 'agentguard[redis]'" in line


def test_serve_warns_about_no_services_and_no_kek(cli: RunCLI, clean_env: Path) -> None:
    assert cli("init", "--no-kek").code == 0
    result = cli("serve", "--check")
    assert result.code == 0
    warnings = result.err.strip().splitlines()
    assert len(warnings) == 2
    assert "no [[services]] in agentguard.toml" in warnings[0]
    assert "agentguard credentials keygen --out agentguard.kek" in warnings[1]


def test_credentials_set_without_a_kek_says_how_to_make_one(cli: RunCLI) -> None:
    assert cli("init", "--no-kek").code == 0
    assert cli("accounts", "add", "acme").code == 0
    assert cli("users", "add", "alice", "--account", "acme").code == 0
    line = cli("credentials", "set", "crm", "--user", "alice", stdin="k" * 20).one_line_error(2)
    assert "agentguard credentials keygen --out agentguard.kek" in line
    assert cli("credentials", "keygen", "--out", "agentguard.kek").code == 0
    toml = Path("agentguard.toml")
    toml.write_text(
        toml.read_text().replace("[secrets]\n", '[secrets]\nkek_file = "agentguard.kek"\n')
    )
    assert cli("credentials", "set", "crm", "--user", "alice", stdin="k" * 20).code == 0
