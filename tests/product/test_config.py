"""Settings: file plus environment, errors that name field and line, secrets kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentguard.config import SettingsError, load_settings
from tests.product.conftest import new_kek

BASE = """\
public_origin = "https://gw.example.com"

[store]
url = "sqlite:///data/agentguard.db"

[server]
port = 9000

[[services]]
name = "crm"
base_url = "https://api.crm.example/v2"
placement = "header"
parameter = "X-Api-Key"

[[services]]
name = "projects"
base_url = "https://api.projects.example"

[minters.projects]
token_url = "https://api.projects.example/token"
"""


def write(tmp_path: Path, text: str, name: str = "agentguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def private(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_file_is_loaded_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE), environ={})
    assert settings.public_origin == "https://gw.example.com"
    assert settings.server.port == 9000
    assert [s.name for s in settings.services] == ["crm", "projects"]
    assert settings.minters["projects"].token_url.endswith("/token")
    assert settings.store.url == f"sqlite:///{tmp_path.resolve()}/data/agentguard.db"
    assert settings.dpop_policy() is not None


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {
        "AGENTGUARD_STORE": "memory://",
        "AGENTGUARD_PUBLIC_ORIGIN": "https://other.example.com",
        "AGENTGUARD_SERVER_PORT": "9100",
        "AGENTGUARD_LOG_FORMAT": "text",
    }
    settings = load_settings(write(tmp_path, BASE), environ=environ)
    assert settings.store.url == "memory://"
    assert settings.public_origin == "https://other.example.com"
    assert settings.server.port == 9100
    assert settings.logging.format == "text"


def test_no_file_at_all_uses_defaults_and_environment() -> None:
    settings = load_settings(environ={"AGENTGUARD_DPOP_ENABLED": "false"})
    assert settings.store.url == "sqlite:///agentguard.db"
    assert settings.dpop_policy() is None


@pytest.mark.parametrize(
    ("replace", "by", "line", "field"),
    [
        # a check across fields points at the table: [[services]] is on line 9
        ('base_url = "https://api', 'base_url = "http://api', 9, "services[0]"),
        ("port = 9000", 'port = "ninety"', 7, "server.port"),
        ('placement = "header"', 'placement = "carrier-pigeon"', 12, "services[0].placement"),
        ("[minters.projects]", "[minters.billing]", 22, "minters"),
    ],
)  # fmt: skip
def test_errors_name_the_field_and_the_line(
    tmp_path: Path, replace: str, by: str, line: int, field: str
) -> None:
    path = write(tmp_path, BASE.replace(replace, by))
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    if field != "minters":
        assert message.startswith(f"{path}:{line}: {field}"), message
    else:
        assert "billing" in message


def test_an_error_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^AGENTGUARD_SERVER_PORT: server.port: "):
        load_settings(write(tmp_path, BASE), environ={"AGENTGUARD_SERVER_PORT": "99999"})


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "\n[server\n")
    with pytest.raises(SettingsError, match=rf"^{path}:\d+: not valid TOML"):
        load_settings(path, environ={})


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such configuration file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_dpop_without_an_origin_is_refused() -> None:
    with pytest.raises(SettingsError, match="public_origin"):
        load_settings(environ={})


@pytest.mark.parametrize("key", ["kek", "api_key", "introspection_secrets"])
def test_secrets_written_in_the_file_are_refused(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, BASE.replace("[server]", f'[secrets]\n{key} = "x"\n\n[server]'))
    with pytest.raises(SettingsError, match="never read from the configuration file") as info:
        load_settings(path, environ={})
    assert f"{path}:7: secrets.{key}" in str(info.value)
    assert '"x"' not in str(info.value)


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    kek = private(tmp_path, "kek", new_kek(), mode=0o644)
    path = write(tmp_path, BASE.replace("[server]", f'[secrets]\nkek_file = "{kek}"\n\n[server]'))
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    assert f"{path}:7: secrets.kek_file" in str(info.value)
    assert f"chmod 600 {kek}" in str(info.value)
    os.chmod(kek, 0o600)
    assert load_settings(path, environ={}).keyring().primary == "kek-1"


def test_secrets_come_from_the_environment_and_never_show(tmp_path: Path) -> None:
    kek = new_kek()
    nonce = "n" * 43
    introspection = "i" * 40
    settings = load_settings(
        write(tmp_path, BASE),
        environ={
            "AGENTGUARD_KEK": kek,
            "AGENTGUARD_DPOP_NONCE_SECRET": nonce,
            "AGENTGUARD_INTROSPECTION_SECRETS": introspection,
        },
    )
    assert settings.keyring().primary == "kek-1"
    policy = settings.dpop_policy()
    assert policy is not None and policy.nonce_secret is not None
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    shown += repr(settings.secret_values) + repr(policy) + repr(settings.keyring())
    for secret in (kek, kek.split(":")[1], nonce, introspection):
        assert secret not in shown


def test_a_short_nonce_secret_is_refused_by_variable_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^AGENTGUARD_DPOP_NONCE_SECRET: .*32"):
        load_settings(write(tmp_path, BASE), environ={"AGENTGUARD_DPOP_NONCE_SECRET": "c2hvcnQ"})


def test_missing_kek_is_named(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE), environ={})
    with pytest.raises(SettingsError, match="AGENTGUARD_KEK"):
        settings.keyring()


def test_checkpoints_need_an_origin(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '\n[audit]\ncheckpoint_dir = "cp"\n')
    with pytest.raises(SettingsError, match=r":22: audit: checkpoint_dir needs origin"):
        load_settings(path, environ={})


def test_route_levels_may_be_written_as_words(tmp_path: Path) -> None:
    text = BASE.replace(
        'parameter = "X-Api-Key"',
        'parameter = "X-Api-Key"\nroutes = [{ path = "/search", methods = { POST = "read" } }]',
    )
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.services[0].routes[0].methods["POST"].label == "read"


NO_SUCH_USER = "~agentguard-no-such-user-7f3a"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("audit", "checkpoint_dir"),
        ("audit", "checkpoint_key_file"),
        ("secrets", "kek_file"),
        ("secrets.oauth_client_secret_files", "crm"),
    ],
)
def test_a_path_under_an_unknown_home_is_a_settings_error_naming_it(
    tmp_path: Path, table: str, key: str
) -> None:
    """``~name`` for no user ``name`` cannot be expanded: a settings error naming the key and
    its line, never pathlib's bare RuntimeError (found by the config fuzz test: ``"~0"``)."""
    written = f"{NO_SUCH_USER}/file"
    path = write(tmp_path, f'[{table}]\n{key} = "{written}"\n')
    with pytest.raises(SettingsError) as raised:
        load_settings(path, environ={})
    assert raised.value.problems == [
        (
            f"{path}:2",
            f"{table}.{key}",
            f"cannot expand '{written}': no such user, or no home directory for '~'",
        )
    ]


def test_a_path_under_the_home_directory_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = '[audit]\ncheckpoint_dir = "~/checkpoints"\norigin = "audit.example.com/ag"\n'
    settings = load_settings(write(tmp_path, text), environ={"AGENTGUARD_DPOP_ENABLED": "false"})
    assert settings.audit.checkpoint_dir == tmp_path / "home" / "checkpoints"
