"""The credentials file: private modes, atomic replacement, the lock, and a hostile parser input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import Secret
from agentguard.client import AgentCredentials, CredentialsFile, CredentialsFileError
from agentguard.client._credentials_file import dump_credentials, parse_credentials
from agentguard.dpop import DPoPKey

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
ACCESS = "ag_at_" + "a" * 43
REFRESH = "ag_rt_" + "r" * 43


def sample(access: str = ACCESS, *, bound: bool = True) -> AgentCredentials:
    return AgentCredentials(
        access_key=Secret(access),
        refresh_key=Secret(REFRESH),
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        token_url="https://api.example.com/oauth/token",
        token_type="DPoP" if bound else "Bearer",
        dpop_key=DPoPKey.generate() if bound else None,
        resource_url="https://api.example.com",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip_and_private_modes(tmp_path: Path) -> None:
    file = CredentialsFile(tmp_path / "new-dir" / "credentials.json")
    original = sample()
    file.create(original)
    assert mode(file.path) == 0o600
    assert mode(file.path.parent) == 0o700
    loaded = file.load()
    assert loaded.access_key == original.access_key
    assert loaded.refresh_key == original.refresh_key
    assert (loaded.issued_at, loaded.expires_at) == (original.issued_at, original.expires_at)
    assert loaded.dpop_key is not None and original.dpop_key is not None
    assert loaded.dpop_key.thumbprint == original.dpop_key.thumbprint
    assert json.loads(file.path.read_bytes())["version"] == 1
    with pytest.raises(CredentialsFileError, match="refusing to overwrite"):
        file.create(original)


def test_repr_hides_every_secret() -> None:
    credentials = sample()
    text = repr(credentials)
    assert ACCESS not in text and REFRESH not in text and "PRIVATE" not in text


def test_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    file = CredentialsFile(tmp_path / "agent" / "credentials.json")
    file.create(sample())
    file.path.chmod(0o644)
    with pytest.raises(CredentialsFileError, match=r"chmod 600 .*credentials\.json"):
        file.load()
    file.path.chmod(0o600)
    for writable in (0o775, 0o757):
        file.path.parent.chmod(writable)
        with pytest.raises(
            CredentialsFileError, match=r"writable by other users.*chmod go-w .*agent"
        ):
            file.load()
        with pytest.raises(CredentialsFileError, match="chmod go-w"):
            file.save(sample())
    # A shared sticky directory (as /tmp) is refused too, but never with chmod advice.
    file.path.parent.chmod(0o1777)
    with pytest.raises(CredentialsFileError, match="directory of your own") as refused:
        file.load()
    assert "chmod" not in str(refused.value)


def test_a_normal_0755_directory_of_ones_own_is_accepted(tmp_path: Path) -> None:
    directory = tmp_path / "checkout"
    directory.mkdir()
    directory.chmod(0o755)
    file = CredentialsFile(directory / "credentials.json")
    file.create(sample())
    assert mode(file.path) == 0o600
    assert mode(directory) == 0o755  # left as it was
    assert file.load().access_key.reveal() == ACCESS
    file.save(sample("ag_at_" + "c" * 43))
    assert file.load().access_key.reveal() == "ag_at_" + "c" * 43
    assert mode(file.path) == 0o600


def test_missing_file_names_the_command(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    with pytest.raises(CredentialsFileError, match="agentguard keys issue"):
        CredentialsFile(tmp_path / "nothing.json").load()


def test_crash_between_write_and_rename_keeps_the_old_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = CredentialsFile(tmp_path / "agent" / "credentials.json")
    file.create(sample())

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(CredentialsFileError, match="previous credentials are unchanged"):
        file.save(sample("ag_at_" + "b" * 43))
    monkeypatch.undo()
    assert file.load().access_key.reveal() == ACCESS
    assert sorted(p.name for p in file.path.parent.iterdir()) == [
        "credentials.json",
        "credentials.json.lock",
    ]


def test_bearer_credentials_have_no_dpop_key(tmp_path: Path) -> None:
    file = CredentialsFile(tmp_path / "agent" / "credentials.json")
    file.create(sample(bound=False))
    assert file.load().dpop_key is None
    document = json.loads(file.path.read_bytes())
    document["token_type"] = "DPoP"
    with pytest.raises(CredentialsFileError, match="bad fields"):
        parse_credentials(json.dumps(document).encode())


def test_inconsistent_documents_are_refused() -> None:
    good = json.loads(dump_credentials(sample()))
    cases = [
        {**good, "expires_at": good["issued_at"]},
        {**good, "issued_at": "2026-01-01T00:00:00"},  # naive
        {**good, "version": 2},
        {**good, "extra": 1},
        {**good, "access_key": "ag_at_x\r\nInjected: 1"},
        {**good, "token_url": "file:///etc/passwd"},
        {**good, "dpop_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
    ]
    for case in cases:
        with pytest.raises(CredentialsFileError):
            parse_credentials(json.dumps(case).encode())
    duplicate = b'{"version": 1, "version": 1}'
    with pytest.raises(CredentialsFileError):
        parse_credentials(duplicate)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
FIELDS = [
    "version",
    "token_url",
    "resource_url",
    "token_type",
    "access_key",
    "refresh_key",
    "issued_at",
    "expires_at",
    "dpop_key",
]


def same_document(written: object, read: object) -> bool:
    """``written`` (what dump_credentials wrote back) is ``read`` (the accepted input): every
    field equal, timestamps as the same instant (``Z`` and ``+00:00`` name the same one)."""
    if not isinstance(written, dict) or not isinstance(read, dict) or set(written) != set(read):
        return False
    for name, value in read.items():
        if name in ("issued_at", "expires_at"):
            if not isinstance(value, str) or datetime.fromisoformat(
                written[name]
            ) != datetime.fromisoformat(value):
                return False
        elif written[name] != value:
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, json_values)).map(
            lambda v: json.dumps(v).encode()
        ),
    )
)
def test_arbitrary_input_is_refused_or_round_trips(data: bytes) -> None:
    try:
        parsed = parse_credentials(data)
    except CredentialsFileError:
        return
    # accepted: what was read is what is written back, and reads back the same
    dumped = dump_credentials(parsed)
    assert same_document(json.loads(dumped), json.loads(data)), data
    assert dump_credentials(parse_credentials(dumped)) == dumped


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_field_mutation_is_refused_or_kept_exactly(field: str, value: object) -> None:
    document = json.loads(dump_credentials(sample(bound=False)))
    document[field] = value
    try:
        parsed = parse_credentials(json.dumps(document).encode())
    except CredentialsFileError:
        return
    # accepted: the new value was taken as it stands, never coerced or dropped
    assert same_document(json.loads(dump_credentials(parsed)), document), (field, value)


def test_unmodified_document_is_accepted_and_kept() -> None:
    # the accepting branch of the two properties above is reachable
    for bound in (False, True):
        document = json.loads(dump_credentials(sample(bound=bound)))
        parsed = parse_credentials(json.dumps(document).encode())
        assert same_document(json.loads(dump_credentials(parsed)), document)


WORKER = textwrap.dedent(
    """
    import sys
    from agentguard.client import CredentialsFile
    from agentguard import Secret

    def bump(credentials):
        count = int(credentials.access_key.reveal().rsplit("n", 1)[1]) + 1
        return credentials.with_keys(
            Secret("ag_at_n" + str(count)),
            credentials.refresh_key,
            issued_at=credentials.issued_at,
            expires_at=credentials.expires_at,
            token_type=credentials.token_type,
        )

    file = CredentialsFile(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        file.update(bump)
    """
)


def test_processes_doing_read_modify_write_lose_no_update(tmp_path: Path) -> None:
    file = CredentialsFile(tmp_path / "agent" / "credentials.json")
    file.create(sample("ag_at_n0", bound=False))
    rounds = 40
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(file.path), str(rounds)])
        for _ in range(3)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0, 0]
    assert file.load().access_key.reveal() == f"ag_at_n{3 * rounds}"
