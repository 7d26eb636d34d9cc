"""Settings of connected accounts: a connected service needs its OAuth client, the gateway's
public origin and (unless it is a public client) a client secret that never sits in the file
and never shows; ``[connect]`` sets the flow's lifetimes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard._config_connect import client_secret_variable
from agentguard._model import SERVICE_NAME_PATTERN
from agentguard.config import Settings, SettingsError, load_settings

SECRET = "crm-client-secret-7Kq2Zp9Wv4"  # long enough for the canary to watch it

CONNECTED = """\
public_origin = "https://gw.example.com"

[[services]]
name = "crm"
base_url = "https://api.crm.example/v2"
credentials = "connected"

[services.oauth]
client_id = "agentguard-crm"
authorization_endpoint = "https://auth.crm.example/authorize"
token_endpoint = "https://auth.crm.example/token"
scopes = ["contacts.read"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentguard.toml"
    path.write_text(text)
    return path


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def load(tmp_path: Path, text: str = CONNECTED, **environ: str) -> Settings:
    return load_settings(write(tmp_path, text), environ=environ)


def refused(tmp_path: Path, text: str, **environ: str) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, text), environ=environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_connected_service_loads_with_its_client_and_the_connect_defaults(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        write(tmp_path, CONNECTED), environ={"AGENTGUARD_OAUTH_CRM_CLIENT_SECRET": SECRET}
    )
    [crm] = settings.connected_services()
    assert crm.name == "crm" and crm.oauth is not None
    assert crm.oauth.client_id == "agentguard-crm"
    secret = settings.oauth_client_secret("crm")
    assert secret is not None and secret.reveal() == SECRET
    connect = settings.connect
    assert (connect.ticket_ttl, connect.state_ttl) == (900, 600)
    assert (connect.lease_seconds, connect.wait_seconds) == (30.0, 10.0)
    assert connect.ticket_lifetime().total_seconds() == 900
    assert connect.state_lifetime().total_seconds() == 600


def test_the_connect_section_sets_the_lifetimes(tmp_path: Path) -> None:
    text = CONNECTED + (
        "\n[connect]\nticket_ttl = 300\nstate_ttl = 120\nlease_seconds = 20\nwait_seconds = 2\n"
    )
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.connect.model_dump() == {
        "ticket_ttl": 300, "state_ttl": 120, "lease_seconds": 20.0, "wait_seconds": 2.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("ticket_ttl = 0", "connect.ticket_ttl"),
        ("ticket_ttl = 700000", "connect.ticket_ttl"),
        ("state_ttl = 7200", "connect.state_ttl"),
        ("lease_seconds = 0", "connect.lease_seconds"),
        ("wait_seconds = -1", "connect.wait_seconds"),
        ("lease = 5", "connect.lease"),
    ],
)
def test_a_bad_connect_value_names_the_field_and_line(
    tmp_path: Path, entry: str, field: str
) -> None:
    message = refused(tmp_path, CONNECTED + f"\n[connect]\n{entry}\n")
    assert message.startswith(f"{tmp_path / 'agentguard.toml'}:15: {field}"), message


def test_a_connected_service_without_an_oauth_table_is_refused(tmp_path: Path) -> None:
    text = CONNECTED.split("[services.oauth]", maxsplit=1)[0]
    message = refused(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'agentguard.toml'}:3: services[0]"), message
    assert 'credentials = "connected" needs an oauth client configuration' in message


def test_an_oauth_table_on_an_operator_service_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, CONNECTED.replace('credentials = "connected"\n', ""))
    assert "oauth is only used with credentials" in message


def test_a_connected_service_needs_the_public_origin(tmp_path: Path) -> None:
    text = CONNECTED.replace('public_origin = "https://gw.example.com"', "")
    text += "\n[dpop]\nenabled = false\n"
    message = refused(tmp_path, text)
    assert message.startswith(
        f"{tmp_path / 'agentguard.toml'}:6: services[0].credentials: "
        'credentials = "connected" needs public_origin'
    ), message
    assert "/connect/crm/callback" in message and "AGENTGUARD_PUBLIC_ORIGIN" in message
    settings = load(tmp_path, text, AGENTGUARD_PUBLIC_ORIGIN="https://gw.example.com")
    assert settings.public_origin == "https://gw.example.com"


@pytest.mark.parametrize(
    ("origin", "insecure", "accepted"),
    [
        ("http://gw.example.com", False, False),
        ("http://gw.example.com", True, True),
        ("http://127.0.0.1:8080", False, True),
        ("http://[::1]:8080", False, True),
        ("http://localhost:8080", False, True),
        ("https://gw.example.com", False, True),
    ],
)
def test_a_plain_http_origin_is_refused_unless_loopback_or_allowed(
    tmp_path: Path, origin: str, insecure: bool, accepted: bool
) -> None:
    text = CONNECTED.replace("https://gw.example.com", origin)
    if insecure:
        text += "allow_insecure_http = true\n"
    if accepted:
        load(tmp_path, text)
        return
    message = refused(tmp_path, text)
    assert "services[0].credentials: public_origin is http://" in message
    assert "clear text" in message


def test_the_client_secret_comes_from_a_private_file_relative_to_the_settings(
    tmp_path: Path,
) -> None:
    private(tmp_path / "crm.secret", SECRET + "\n")
    text = CONNECTED + '\n[secrets]\noauth_client_secret_files = { crm = "crm.secret" }\n'
    settings = load_settings(write(tmp_path, text), environ={})
    secret = settings.oauth_client_secret("crm")
    assert secret is not None and secret.reveal() == SECRET
    assert settings.secrets.oauth_client_secret_files["crm"] == tmp_path / "crm.secret"


def test_a_readable_client_secret_file_is_refused_with_its_fix(tmp_path: Path) -> None:
    secret_file = private(tmp_path / "crm.secret", SECRET, mode=0o640)
    text = CONNECTED + f'\n[secrets.oauth_client_secret_files]\ncrm = "{secret_file}"\n'
    message = refused(tmp_path, text)
    assert message.startswith(
        f"{tmp_path / 'agentguard.toml'}:15: secrets.oauth_client_secret_files.crm: "
    ), message
    assert f"chmod 600 {secret_file}" in message and SECRET not in message


def test_an_empty_or_missing_client_secret_file_is_refused(tmp_path: Path) -> None:
    empty = private(tmp_path / "empty.secret", "\n")
    message = refused(tmp_path, CONNECTED, AGENTGUARD_OAUTH_CRM_CLIENT_SECRET_FILE=str(empty))
    assert message == "AGENTGUARD_OAUTH_CRM_CLIENT_SECRET_FILE: the client secret is empty"
    message = refused(
        tmp_path, CONNECTED, AGENTGUARD_OAUTH_CRM_CLIENT_SECRET_FILE=str(tmp_path / "none")
    )
    assert (
        message.startswith("AGENTGUARD_OAUTH_CRM_CLIENT_SECRET_FILE: ")
        and "no such file" in message
    )


def test_the_variable_wins_over_the_file_variable_which_wins_over_the_settings(
    tmp_path: Path,
) -> None:
    listed = private(tmp_path / "listed.secret", "listed-secret-value-0001")
    named = private(tmp_path / "named.secret", "named-secret-value-00002")
    text = CONNECTED + f'\n[secrets]\noauth_client_secret_files = {{ crm = "{listed}" }}\n'

    def secret(**environ: str) -> str:
        found = load_settings(write(tmp_path, text), environ=environ).oauth_client_secret("crm")
        assert found is not None
        return found.reveal()

    assert secret() == "listed-secret-value-0001"
    assert secret(AGENTGUARD_OAUTH_CRM_CLIENT_SECRET_FILE=str(named)) == "named-secret-value-00002"
    both = {"AGENTGUARD_OAUTH_CRM_CLIENT_SECRET_FILE": str(named)}
    assert secret(AGENTGUARD_OAUTH_CRM_CLIENT_SECRET=SECRET, **both) == SECRET


def test_a_missing_secret_is_named_when_the_gateway_needs_it(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONNECTED), environ={})  # operator commands run
    with pytest.raises(SettingsError) as info:
        settings.oauth_client_secret("crm")
    message = str(info.value)
    assert message.startswith("AGENTGUARD_OAUTH_CRM_CLIENT_SECRET: service crm: "), message
    assert "client_secret_basic" in message and "oauth_client_secret_files.crm" in message


def test_a_public_client_needs_no_secret(tmp_path: Path) -> None:
    text = CONNECTED + 'client_auth = "none"\n'
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.oauth_client_secret("crm") is None


def test_a_hyphenated_service_reads_its_variable_with_underscores(tmp_path: Path) -> None:
    text = CONNECTED.replace('name = "crm"', 'name = "crm-eu"')
    settings = load_settings(
        write(tmp_path, text), environ={"AGENTGUARD_OAUTH_CRM_EU_CLIENT_SECRET": SECRET}
    )
    secret = settings.oauth_client_secret("crm-eu")
    assert secret is not None and secret.reveal() == SECRET


def test_two_services_sharing_one_variable_are_refused(tmp_path: Path) -> None:
    second = CONNECTED.split("\n", 2)[2].replace('name = "crm"', 'name = "crm_eu"')
    text = CONNECTED.replace('name = "crm"', 'name = "crm-eu"') + "\n" + second
    message = refused(tmp_path, text)
    assert "services[1].name" in message
    assert "AGENTGUARD_OAUTH_CRM_EU_CLIENT_SECRET" in message


@pytest.mark.parametrize("key", ["client_secret", "client_secret_file"])
def test_a_client_secret_written_in_the_file_is_refused(tmp_path: Path, key: str) -> None:
    message = refused(tmp_path, CONNECTED + f'{key} = "{SECRET}"\n')
    assert message.startswith(f"{tmp_path / 'agentguard.toml'}:13: services[0].oauth.{key}: ")
    assert "never read from the configuration file" in message
    assert "AGENTGUARD_OAUTH_CRM_CLIENT_SECRET" in message and SECRET not in message


def test_a_secret_file_for_no_connected_service_is_refused(tmp_path: Path) -> None:
    stray = private(tmp_path / "stray.secret", SECRET)
    text = CONNECTED + f'\n[secrets]\noauth_client_secret_files = {{ crn = "{stray}" }}\n'
    message = refused(tmp_path, text)
    assert "secrets.oauth_client_secret_files.crn: no connected service named 'crn'" in message


def test_the_name_connect_is_reserved_beside_a_connected_service(tmp_path: Path) -> None:
    extra = '\n[[services]]\nname = "connect"\nbase_url = "https://connect.example"\n'
    message = refused(tmp_path, CONNECTED + extra)
    assert "services[1].name: the service name 'connect' is reserved" in message
    plain = CONNECTED.split("[[services]]", maxsplit=1)[0] + extra
    assert [s.name for s in load_settings(write(tmp_path, plain), environ={}).services] == [
        "connect"
    ]


def test_the_client_secret_never_shows(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, CONNECTED), environ={"AGENTGUARD_OAUTH_CRM_CLIENT_SECRET": SECRET}
    )
    secret = settings.oauth_client_secret("crm")
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    shown += repr(settings.secret_values) + repr(secret) + str(secret) + f"{secret}"
    assert SECRET not in shown
    assert "oauth_client_secrets" not in settings.model_dump_json()


@given(st.from_regex(SERVICE_NAME_PATTERN, fullmatch=True))
def test_every_service_name_has_a_valid_variable_name(name: str) -> None:
    variable = client_secret_variable(name)
    assert re.fullmatch(r"AGENTGUARD_OAUTH_[A-Z][A-Z0-9_]*_CLIENT_SECRET", variable)
    assert variable == client_secret_variable(name.replace("-", "_"))
