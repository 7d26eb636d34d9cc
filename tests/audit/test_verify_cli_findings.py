"""``agentguard audit verify``: what it says when the evidence vouches for less than it seems.

- an export checked with the vkeys it ships proves only self-consistency: a WARN says so;
- a checkpoint of size 0 vouches for no event: nothing to vouch for, exit 1;
- a note whose line ends were rewritten (CRLF) is not the signed text: it fails;
- the texts: no "truncation would go unnoticed" after a truncation, an unknown key or another
  origin is not called a bad signature, note counts name their directory;
- ``--witness K --witness K`` is a usage error, not a quorum that can never be met.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from agentguard.audit import Action, AuditEvent, Ed25519Signer
from agentguard.audit._cosignatures import CosignatureSigner
from agentguard.cli import main
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock

ORIGIN = "audit.test/log"


class Log:
    """A SQLite log, a signing key and a checkpoint directory, driven through the CLI."""

    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.capsys = tmp, capsys
        self.db, self.key, self.checkpoints = tmp / "log.db", tmp / "k.pem", tmp / "checkpoints"
        self.store = f"sqlite:///{self.db}"
        anyio.run(self.add, 0)
        assert main(["audit", "keygen", "--name", "audit.test", "--out", str(self.key)]) == 0
        self.vkey = capsys.readouterr().out.strip()

    async def add(self, count: int) -> None:
        clock = FakeClock()
        async with SQLiteStore(self.db, clock=clock) as store:
            for n in range(count):
                await store.append(
                    [AuditEvent(action=Action.DECISION, ts=clock.now(), path=f"/{n}")]
                )

    def checkpoint(self) -> None:
        sign = ["--key", str(self.key), "--name", "audit.test", "--origin", ORIGIN]
        command = ["audit", "checkpoint", "--store", self.store, *sign]
        assert main([*command, "--checkpoints", str(self.checkpoints)]) == 0
        self.capsys.readouterr()

    def run(self, *args: str) -> tuple[int, str, str]:
        code = main(["audit", *args])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def verify(self, *args: str) -> tuple[int, str, str]:
        return self.run("verify", "--store", self.store, "--origin", ORIGIN, *args)

    def trust(self) -> list[str]:
        return ["--checkpoints", str(self.checkpoints), "--vkey", self.vkey]

    def export(self, out: Path) -> None:
        code, _, err = self.run(
            "export", "--store", self.store, "--out", str(out), "--origin", ORIGIN, *self.trust()
        )
        assert code == 0, err


@pytest.fixture
def made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Log:
    return Log(tmp_path, capsys)


def test_an_export_checked_with_its_own_keys_says_so(made: Log, tmp_path: Path) -> None:
    anyio.run(made.add, 5)
    made.checkpoint()
    made.export(tmp_path / "ev")
    code, out, _ = made.run("verify", "--export", str(tmp_path / "ev"))
    assert code == 0
    assert "WARN KEYS-FROM-EXPORT" in out and "obtained out of band" in out
    assert "with the export's own vkeys.txt" in out.splitlines()[-1]
    code, out, _ = made.run("verify", "--export", str(tmp_path / "ev"), "--json")
    report = json.loads(out)
    assert report["vkeys_from_export"] is True and report["warnings"]
    code, out, _ = made.run("verify", "--export", str(tmp_path / "ev"), "--vkey", made.vkey)
    assert code == 0 and "KEYS-FROM-EXPORT" not in out and "own vkeys" not in out
    code, out, _ = made.run(
        "verify", "--export", str(tmp_path / "ev"), "--vkey", made.vkey, "--json"
    )
    assert json.loads(out)["vkeys_from_export"] is False


def test_a_size_0_checkpoint_vouches_for_nothing(made: Log, tmp_path: Path) -> None:
    made.checkpoint()  # at install time: the empty log
    anyio.run(made.add, 4)
    code, out, _ = made.verify(*made.trust())
    assert code == 1 and "size 0: it vouches for no event" in out
    made.export(tmp_path / "ev")
    code, out, _ = made.run("verify", "--export", str(tmp_path / "ev"), "--vkey", made.vkey)
    assert code == 1 and "size 0" in out
    made.checkpoint()  # a note that covers the events: anchored, exit 0
    code, out, _ = made.verify(*made.trust())
    assert code == 0 and "size 0" not in out


def test_a_crlf_note_is_not_the_signed_note(made: Log, tmp_path: Path) -> None:
    anyio.run(made.add, 3)
    made.checkpoint()
    made.export(tmp_path / "ev")
    assert made.verify(*made.trust())[0] == 0
    for folder in (made.checkpoints, tmp_path / "ev" / "checkpoints"):
        (note,) = folder.glob("*.note")
        note.write_bytes(note.read_bytes().replace(b"\n", b"\r\n"))
    code, out, _ = made.verify(*made.trust())
    assert code == 1, out
    code, out, _ = made.run("verify", "--export", str(tmp_path / "ev"), "--vkey", made.vkey)
    assert code == 1, out


def test_the_texts_say_what_happened(made: Log, tmp_path: Path) -> None:
    anyio.run(made.add, 6)
    made.checkpoint()
    # a note by a key not given; a note of another origin by the given key (one at a time:
    # the report keeps one seq-less finding per category)
    stranger = tmp_path / "s.pem"
    assert main(["audit", "keygen", "--name", "audit.test", "--out", str(stranger)]) == 0
    made.capsys.readouterr()
    expected = {
        (stranger, ORIGIN): "an unknown key, not a bad signature",
        (made.key, ORIGIN + "-staging"): "checkpoint of another log: origin 'audit.test/log-s",
    }
    for (key, origin), text in expected.items():
        other = tmp_path / f"other-{origin.rsplit('/', 1)[1]}-{key.stem}"
        sign = ["--key", str(key), "--name", "audit.test", "--origin", origin]
        command = ["audit", "checkpoint", "--store", made.store, *sign, "--checkpoints"]
        assert main([*command, str(other)]) == 0
        made.capsys.readouterr()
        code, out, _ = made.verify("--checkpoints", str(other), "--vkey", made.vkey)
        assert code == 1 and text in out, out
        assert "a bad signature:" not in out
    # counts attributed to their directory
    made.export(tmp_path / "ev")
    code, out, _ = made.run(
        "verify", "--export", str(tmp_path / "ev"), "--vkey", made.vkey,
        "--checkpoints", str(made.checkpoints), "--origin", ORIGIN,
    )  # fmt: skip
    assert code == 0, out
    last = out.splitlines()[-1]
    assert f"1 checkpoint note(s) in {tmp_path / 'ev' / 'checkpoints'}" in last
    assert f"1 checkpoint note(s) in {made.checkpoints}" in last
    # a truncation is reported once, without "would go unnoticed" beside it
    anyio.run(made.add, 2)
    made.checkpoint()

    async def cut() -> None:
        import sqlite3

        with sqlite3.connect(made.db) as db:
            table = next(
                name
                for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if "audit" in name and "prefix" not in name
            )
            triggers = db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
            for (trigger,) in list(triggers):
                db.execute(f"DROP TRIGGER {trigger}")
            db.execute(f"DELETE FROM {table} WHERE seq >= 5")  # noqa: S608

    anyio.run(cut)
    code, out, _ = made.verify(*made.trust())
    assert code == 1 and "TRUNCATED-BELOW-CHECKPOINT" in out
    assert "would go unnoticed" not in out


@pytest.mark.parametrize("same_key_other_name", [False, True])
def test_a_witness_given_twice_is_a_usage_error(made: Log, same_key_other_name: bool) -> None:
    anyio.run(made.add, 2)
    made.checkpoint()
    witness = CosignatureSigner.generate("w1.example")
    again = witness.vkey()
    if same_key_other_name:
        again = CosignatureSigner("w1-again.example", witness._key).vkey()
    code, _, err = made.verify(
        *made.trust(), "--witness", witness.vkey(), "--witness", again, "--quorum", "2"
    )
    assert code == 2 and "given twice" in err and "w1" in err
    code, _, err = made.verify(*made.trust(), "--witness", witness.vkey(), "--quorum", "2")
    assert code == 2 and "--quorum 2" in err


def test_a_signer_is_not_a_witness(made: Log) -> None:
    code, _, err = made.verify(*made.trust(), "--witness", Ed25519Signer.generate("x").vkey())
    assert code == 2 and "--witness" in err
