"""``agentguard keys revoke`` and ``keys list`` refuse unknown names (exit 1, one line), as
``users disable`` does; revoking a known user's or key's nothing-left-to-revoke is still 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import RunCLI

TOKEN_URL = "https://gw.example.com/oauth/token"


@pytest.fixture
def ready(cli: RunCLI) -> RunCLI:
    assert cli("init", "--no-kek").code == 0
    for argv in (
        ("accounts", "add", "acme"),
        ("workspaces", "add", "sales", "--account", "acme"),
        ("users", "add", "alice", "--account", "acme", "--workspace", "sales"),
    ):
        assert cli(*argv).code == 0
    return cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("keys", "revoke", "--key-id", "key_doesnotexist"), "no key 'key_doesnotexist'"),
        (("keys", "revoke", "--family", "fam_doesnotexist"), "no key family 'fam_doesnotexist'"),
        (("keys", "revoke", "--user", "nobody"), "no user 'nobody'"),
        (("keys", "list", "--user", "nobody"), "no user 'nobody'"),
    ],
)
def test_unknown_key_family_or_user_is_refused(
    ready: RunCLI, argv: tuple[str, ...], message: str
) -> None:
    result = ready(*argv)
    assert result.one_line_error(1) == f"agentguard keys: {message}"
    assert result.out == ""


def test_a_known_user_without_live_keys_revokes_zero(ready: RunCLI) -> None:
    result = ready("keys", "revoke", "--user", "alice")
    assert (result.code, result.out) == (0, "revoked 0 keys\n")


def test_a_known_key_revoked_twice_revokes_zero_then(ready: RunCLI, clean_env: Path) -> None:
    issued = ready(
        "keys", "issue", "--user", "alice", "--workspace", "sales", "--out", "c.json",
        "--token-url", TOKEN_URL,
    )  # fmt: skip
    assert issued.code == 0, issued.err
    rows = json.loads(ready("keys", "list", "--user", "alice", "--json").out)
    key_id, family = rows[0]["id"], rows[0]["family_id"]
    assert ready("keys", "revoke", "--key-id", key_id).out == "revoked 1 key\n"
    again = ready("keys", "revoke", "--key-id", key_id)
    assert (again.code, again.out) == (0, "revoked 0 keys\n")
    assert ready("keys", "revoke", "--family", family).out == "revoked 1 key\n"
    assert ready("keys", "revoke", "--family", family).code == 0
