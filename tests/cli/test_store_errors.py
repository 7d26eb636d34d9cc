"""A store that cannot open is one line naming it, with the driver's own reason but never the
URL's password; the command that would create it says the password was left out."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.storage._urls import scrub_password
from tests.cli.conftest import RunCLI, _postgres_up

PASSWORD = "pw-not-for-eyes"

needs_postgres = pytest.mark.skipif(not _postgres_up(), reason="no PostgreSQL on 127.0.0.1:5432")


@needs_postgres
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"postgresql://nouser:{PASSWORD}@127.0.0.1:5432/nodb", 'role "nouser" does not exist'),
        (
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/nodb_cli2",
            'database "nodb_cli2" does not exist',
        ),
    ],
)
def test_the_drivers_reason_is_shown_without_the_password(
    cli: RunCLI, url: str, reason: str
) -> None:
    line = cli("users", "list", "--store", url).one_line_error(2)
    assert line.startswith("agentguard users: cannot open the store at postgresql://")
    assert line.endswith(reason) and PASSWORD not in line


@needs_postgres
def test_the_create_hint_says_to_add_the_password(cli: RunCLI) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test?schema=cli2_never_made"
    line = cli("users", "list", "--store", url).one_line_error(2)
    assert line.endswith(
        "create it with: agentguard db upgrade --store "
        "'postgresql://postgres@127.0.0.1:5432/test?schema=cli2_never_made' (add the password)"
    )
    assert PASSWORD not in line
    plain = url.replace(f":{PASSWORD}", "")
    assert "add the password" not in cli("users", "list", "--store", plain).err


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n*"), min_size=1))
def test_scrub_removes_the_password_as_written_and_decoded(password: str) -> None:
    url = f"postgresql://user:{quote(password, safe='')}@db.example/app"
    message = f"cannot connect to {url} (password {password!r} rejected)"
    scrubbed = scrub_password(message, url)
    assert password not in scrubbed and quote(password, safe="") not in scrubbed


def test_scrub_leaves_a_message_without_a_password_alone() -> None:
    assert scrub_password('role "x" does not exist', "postgresql://x@db/app") == (
        'role "x" does not exist'
    )
