"""No false "OK": every way a verify can have nothing to vouch for exits non-zero, and read-only
commands never create a store.

The cases are generated: each store case (missing file, mistyped name, missing directory, empty
file, junk file, a SQLite file of another application, an agentguard database with no events,
``memory://``, a directory) is combined with each checkpoint case (none named, a missing
directory, an empty one, one holding checkpoints of the real, longer log), with and without
``--json`` and ``--allow-empty``. Only an empty agentguard log with ``--allow-empty`` and no
checkpoint directory may pass.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import string
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import Action, AuditEvent, Ed25519Signer
from agentguard.cli import main
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock

ORIGIN = "audit.test/log"


def _fill(path: Path, count: int) -> None:
    async def fill() -> None:
        clock = FakeClock()
        async with SQLiteStore(path, clock=clock) as store:
            for n in range(count):
                event = AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/x/{n}")
                await store.append([event])

    anyio.run(fill)


def _missing(root: Path) -> str:
    return f"sqlite:///{root / 'missing.db'}"


def _mistyped(root: Path) -> str:
    return f"sqlite:///{root / 'agentguard.bd'}"  # the real log is agentguard.db


def _missing_directory(root: Path) -> str:
    return f"sqlite:///{root / 'no' / 'such' / 'agentguard.db'}"


def _empty_file(root: Path) -> str:
    (root / "empty.db").touch()
    return f"sqlite:///{root / 'empty.db'}"


def _junk_file(root: Path) -> str:
    (root / "junk.db").write_bytes(b"not a database at all\n" * 64)
    return f"sqlite:///{root / 'junk.db'}"


def _foreign_database(root: Path) -> str:
    connection = sqlite3.connect(root / "other.db")
    connection.execute("CREATE TABLE things (id INTEGER)")
    connection.commit()
    connection.close()
    return f"sqlite:///{root / 'other.db'}"


def _empty_log(root: Path) -> str:
    _fill(root / "fresh.db", 0)
    return f"sqlite:///{root / 'fresh.db'}"


def _memory(root: Path) -> str:
    return "memory://"


def _directory(root: Path) -> str:
    return f"sqlite:///{root}"


STORES: dict[str, Callable[[Path], str]] = {
    "missing file": _missing,
    "mistyped name": _mistyped,
    "missing directory": _missing_directory,
    "empty file": _empty_file,
    "junk file": _junk_file,
    "foreign database": _foreign_database,
    "empty log": _empty_log,
    "memory": _memory,
    "directory": _directory,
}
CHECKPOINTS = ["none", "missing dir", "empty dir", "checkpoints of a longer log"]
CAN_PASS = {"empty log", "memory"}


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A real 12-event log, its key and vkey, and a directory with its signed checkpoint."""
    root = tmp_path_factory.mktemp("anchored")
    _fill(root / "agentguard.db", 12)
    key = root / "signing.pem"
    assert main(["audit", "keygen", "--name", "audit.test", "--out", str(key)]) == 0
    signer = Ed25519Signer.from_pem("audit.test", key.read_bytes())
    code = main(
        [
            "audit",
            "checkpoint",
            "--store",
            f"sqlite:///{root / 'agentguard.db'}",
            "--key",
            str(key),
            "--name",
            "audit.test",
            "--origin",
            ORIGIN,
            "--checkpoints",
            str(root / "checkpoints"),
        ]
    )
    assert code == 0
    return root, root / "checkpoints", signer.vkey()


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


CASES = list(itertools.product(STORES, CHECKPOINTS, [False, True], [False, True]))


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[
        f"{a}/{b}/{'json' if c else 'text'}/{'allow-empty' if d else 'strict'}"
        for a, b, c, d in CASES
    ],
)
def test_verify_never_says_ok_without_a_log_to_vouch_for(
    case: tuple[str, str, bool, bool],
    anchored: tuple[Path, Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, checkpoints, as_json, allow_empty = case
    capsys.readouterr()
    url = STORES[store](tmp_path)
    _, signed, vkey = anchored
    args = ["audit", "verify", "--store", url, "--vkey", vkey]
    if checkpoints == "missing dir":
        args += ["--checkpoints", str(tmp_path / "no-checkpoints")]
    elif checkpoints == "empty dir":
        (tmp_path / "cp").mkdir()
        args += ["--checkpoints", str(tmp_path / "cp")]
    elif checkpoints == "checkpoints of a longer log":
        shutil.copytree(signed, tmp_path / "cp")
        args += ["--checkpoints", str(tmp_path / "cp")]
    args += ["--json"] * as_json + ["--allow-empty"] * allow_empty
    before = _listing(tmp_path)
    code = main(args)
    out, err = capsys.readouterr()
    created = {
        name
        for name in _listing(tmp_path) - before
        if not name.endswith(("-wal", "-shm"))  # SQLite's read-only side files
    }
    assert not created, f"a read-only verify created {created}"
    if allow_empty and store in CAN_PASS and checkpoints == "none":
        assert code == 0
        assert json.loads(out)["ok"] is True if as_json else "OK: 0 events" in out
        return
    assert code in (1, 2), (code, out, err)
    assert not any(line.startswith("OK") for line in out.splitlines()), out
    if code == 1 and as_json:
        assert json.loads(out)["ok"] is False
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err
    named = url.removeprefix("sqlite:///") if store not in ("memory",) else "memory://"
    if checkpoints in ("missing dir", "empty dir") and code == 1:
        assert "cp" in out or "no-checkpoints" in err
    elif code == 2:
        assert named in err or "checkpoint" in err, err


def test_truncated_log_under_checkpoints_fails_even_with_allow_empty(
    anchored: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, signed, vkey = anchored
    url = _empty_log(tmp_path)
    args = ["audit", "verify", "--store", url, "--checkpoints", str(signed), "--vkey", vkey]
    assert main([*args, "--origin", ORIGIN, "--allow-empty"]) == 1
    out = capsys.readouterr().out
    assert "TRUNCATED-BELOW-CHECKPOINT" in out and "log size 0 < signed checkpoint size 12" in out


@pytest.mark.parametrize(
    "command",
    [
        ["tail"],
        ["export", "--out", "{out}"],
        ["prove", "0", "--checkpoints", "{cp}", "--vkey", "{vkey}", "--origin", ORIGIN],
        [
            "checkpoint",
            "--key",
            "{key}",
            "--name",
            "audit.test",
            "--origin",
            ORIGIN,
            "--checkpoints",
            "{cp}",
        ],
    ],
    ids=lambda c: c[0],
)
@pytest.mark.parametrize("store", ["missing file", "mistyped name", "empty file", "junk file"])
def test_read_only_commands_refuse_a_missing_store_and_create_nothing(
    command: list[str],
    store: str,
    anchored: tuple[Path, Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, signed, vkey = anchored
    url = STORES[store](tmp_path)
    before = _listing(tmp_path)
    values = {
        "out": str(tmp_path / "export"),
        "cp": str(signed),
        "vkey": vkey,
        "key": str(root / "signing.pem"),
    }
    args = ["audit", command[0], "--store", url, *(a.format(**values) for a in command[1:])]
    notes = sorted(p.name for p in signed.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "read-only commands never create a store" in err and err.count("\n") == 1
    assert _listing(tmp_path) == before
    assert sorted(p.name for p in signed.iterdir()) == notes


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(alphabet=string.ascii_letters + string.digits + "._- ", min_size=1, max_size=24)
)
def test_any_mistyped_sqlite_path_is_refused_not_created(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("typo")
    target = root / name
    if name in (".", ".."):
        return
    code = main(["audit", "verify", "--store", f"sqlite:///{target}"])
    assert code == 2
    assert list(root.iterdir()) == []


def test_store_descriptions_never_carry_a_password() -> None:
    from agentguard.storage._urls import describe_store

    url = "postgresql://app:hunter2-secret@db.internal:5433/prod?sslmode=require&schema=audit"
    assert describe_store(url) == "postgresql://app@db.internal:5433/prod?schema=audit"
    assert describe_store("sqlite:///var/lib/agentguard.db") == "sqlite:///var/lib/agentguard.db"
    assert describe_store("no scheme") == "(not a store URL)"


OTHER = "audit.test/another-log"


@pytest.fixture(scope="module")
def other_origin(
    anchored: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Checkpoints of *another* log, signed with the same trusted key.

    Its first 5 events are byte-identical to the real log's, so its note matches the real
    log's prefix: only the origin line tells the two logs apart.
    """
    root, _, _ = anchored
    other = tmp_path_factory.mktemp("other")
    _fill(other / "other.db", 5)
    code = main(
        [
            "audit", "checkpoint", "--store", f"sqlite:///{other / 'other.db'}",
            "--key", str(root / "signing.pem"), "--name", "audit.test",
            "--origin", OTHER, "--checkpoints", str(other / "checkpoints"),
        ]
    )  # fmt: skip
    assert code == 0
    return other / "checkpoints"


@pytest.mark.parametrize(
    "case",
    [
        ("other", None, 1, "needs the log's origin"),
        ("other", ORIGIN, 1, f"no checkpoint of origin {ORIGIN}"),
        ("other", "env", 1, f"no checkpoint of origin {ORIGIN}"),
        ("real", None, 1, "needs the log's origin"),
        ("real", ORIGIN, 0, "OK: 12 events, anchored at size 12"),
        ("real", "env", 0, "OK: 12 events, anchored at size 12"),
        ("real", "audit.test/lgo", 1, "no checkpoint of origin audit.test/lgo"),
    ],
)
def test_a_checkpoint_directory_of_another_log_anchors_nothing(
    case: tuple[str, str | None, int, str],
    anchored: tuple[Path, Path, str],
    other_origin: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Notes of another origin, even signed by a trusted key and matching a prefix, never pass.

    Without the log's origin (``--origin`` or ``AGENTGUARD_AUDIT_ORIGIN``) a checkpoint
    directory cannot be checked at all; the failure names the directory and its origins.
    """
    directory, origin, code, says = case
    root, signed, vkey = anchored
    folder = other_origin if directory == "other" else signed
    monkeypatch.delenv("AGENTGUARD_AUDIT_ORIGIN", raising=False)
    args = ["audit", "verify", "--store", f"sqlite:///{root / 'agentguard.db'}"]
    args += ["--checkpoints", str(folder), "--vkey", vkey]
    if origin == "env":
        monkeypatch.setenv("AGENTGUARD_AUDIT_ORIGIN", ORIGIN)
    elif origin is not None:
        args += ["--origin", origin]
    capsys.readouterr()
    assert main(args) == code
    out = capsys.readouterr().out
    assert says in out, out
    if code:
        assert str(folder) in out and (OTHER if directory == "other" else ORIGIN) in out
        assert not any(line.startswith("OK") for line in out.splitlines())


@pytest.fixture(scope="module")
def export(anchored: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of the real 12-event log with its checkpoint and origin."""
    root, signed, vkey = anchored
    out = tmp_path_factory.mktemp("export") / "evidence"
    args = ["audit", "export", "--store", f"sqlite:///{root / 'agentguard.db'}", "--out", str(out)]
    assert main([*args, "--checkpoints", str(signed), "--vkey", vkey, "--origin", ORIGIN]) == 0
    return out


EDITS = ["keep", "cut", "empty", "extra line", "manifest count", "manifest head", "no manifest"]


@settings(max_examples=40, deadline=None)
@given(edit=st.sampled_from(EDITS), keep=st.integers(min_value=0, max_value=11))
def test_a_truncated_or_altered_export_never_verifies(
    edit: str, keep: int, export: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """events.jsonl cut to ``keep`` lines (or emptied, or grown), or the manifest edited.

    The manifest's event count, last seq and head must match what was read: only the
    untouched export passes, with or without ``--allow-empty``.
    """
    copy = tmp_path_factory.mktemp("copy") / "evidence"
    shutil.copytree(export, copy)
    events_file, manifest_file = copy / "events.jsonl", copy / "manifest.json"
    lines = events_file.read_bytes().splitlines(keepends=True)
    manifest = json.loads(manifest_file.read_text())
    if edit == "cut":
        events_file.write_bytes(b"".join(lines[:keep]))
    elif edit == "empty":
        events_file.write_bytes(b"")
    elif edit == "extra line":
        events_file.write_bytes(b"".join([*lines, lines[-1]]))
    elif edit == "manifest count":
        manifest["events"] = keep
        manifest_file.write_text(json.dumps(manifest))
    elif edit == "manifest head":
        manifest["head"] = manifest["head"][::-1]
        manifest_file.write_text(json.dumps(manifest))
    elif edit == "no manifest":
        manifest_file.unlink()
    for extra in ([], ["--allow-empty"]):
        code = main(["audit", "verify", "--export", str(copy), *extra])
        assert code == (0 if edit == "keep" else 1), edit


def test_export_manifest_mismatch_is_named(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "evidence"
    shutil.copytree(export, copy)
    lines = (copy / "events.jsonl").read_bytes().splitlines(keepends=True)
    (copy / "events.jsonl").write_bytes(b"".join(lines[:4]))
    capsys.readouterr()
    assert main(["audit", "verify", "--export", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "the manifest says 12 events but events.jsonl holds 4" in out
    assert "last_seq 11" in out and out.splitlines()[-1].startswith("FAIL: 4 events")
