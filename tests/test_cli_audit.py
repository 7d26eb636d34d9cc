"""``agentguard audit``: every subcommand, on a real SQLite store, with good and bad input."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from agentguard.audit import Action, AuditEvent, verify_proof
from agentguard.cli import main
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    path = tmp_path / "agentguard.db"

    async def fill() -> None:
        clock = FakeClock()
        async with SQLiteStore(path, clock=clock) as store:
            for n in range(12):
                event = AuditEvent(
                    action=Action.DECISION, ts=clock.now(), method="GET", path=f"/crm/{n}"
                )
                await store.append([event])

    anyio.run(fill)
    return f"sqlite:///{path}"


@pytest.fixture
def signing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    key = tmp_path / "signing.pem"
    assert main(["audit", "keygen", "--name", "audit.test", "--out", str(key)]) == 0
    vkey = capsys.readouterr().out.strip()
    assert vkey.startswith("audit.test+")
    assert os.stat(key).st_mode & 0o777 == 0o600
    return key, vkey


def checkpoint(store_url: str, key: Path, checkpoints: Path) -> int:
    return main(
        [
            "audit",
            "checkpoint",
            "--store",
            store_url,
            "--key",
            str(key),
            "--name",
            "audit.test",
            "--origin",
            "audit.test/log",
            "--checkpoints",
            str(checkpoints),
        ]
    )


def test_keygen_refuses_to_overwrite(
    signing: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = signing
    assert main(["audit", "keygen", "--name", "x", "--out", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_checkpoint_verify_and_tamper(
    store_url: str, signing: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, vkey = signing
    checkpoints = tmp_path / "checkpoints"
    assert checkpoint(store_url, key, checkpoints) == 0
    note = capsys.readouterr().out
    assert note.startswith("audit.test/log\n12\n")
    assert (
        main(
            [
                "audit",
                "verify",
                "--store",
                store_url,
                "--checkpoints",
                str(checkpoints),
                "--vkey",
                vkey,
                "--origin",
                "audit.test/log",
            ]
        )
        == 0
    )
    assert "OK: 12 events, anchored at size 12" in capsys.readouterr().out

    database = store_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(database)
    connection.execute("DROP TRIGGER audit_no_delete")
    connection.execute("DELETE FROM audit WHERE seq >= 10")
    connection.commit()
    connection.close()
    code = main(
        [
            "audit",
            "verify",
            "--store",
            store_url,
            "--checkpoints",
            str(checkpoints),
            "--vkey",
            vkey,
            "--origin",
            "audit.test/log",
            "--json",
        ]
    )
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["findings"][0]["category"] == "TRUNCATED-BELOW-CHECKPOINT"


def test_verify_without_checkpoints_says_unanchored(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--store", store_url]) == 0
    assert "NOT anchored" in capsys.readouterr().out


def test_verify_needs_vkeys_for_checkpoints(
    store_url: str, signing: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = signing
    checkpoint(store_url, key, tmp_path / "cp")
    capsys.readouterr()
    assert (
        main(["audit", "verify", "--store", store_url, "--checkpoints", str(tmp_path / "cp")]) == 2
    )
    assert "verifier keys" in capsys.readouterr().err


def test_tail(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail", "--store", store_url, "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["#9", "#10", "#11"]
    assert "GET /crm/11" in lines[-1]
    assert main(["audit", "tail", "--store", store_url, "-n", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seq"] == 11


def test_export_then_verify_export(
    store_url: str, signing: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, vkey = signing
    checkpoint(store_url, key, tmp_path / "cp")
    out = tmp_path / "export"
    assert (
        main(
            [
                "audit",
                "export",
                "--store",
                store_url,
                "--out",
                str(out),
                "--checkpoints",
                str(tmp_path / "cp"),
                "--vkey",
                vkey,
            ]
        )
        == 0
    )
    assert "exported 12 events" in capsys.readouterr().out
    assert len((out / "events.jsonl").read_bytes().splitlines()) == 12
    assert main(["audit", "verify", "--export", str(out)]) == 0
    assert "anchored at size 12" in capsys.readouterr().out


def test_prove(
    store_url: str, signing: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, vkey = signing
    checkpoint(store_url, key, tmp_path / "cp")
    capsys.readouterr()
    args = [
        "audit",
        "prove",
        "5",
        "--store",
        store_url,
        "--checkpoints",
        str(tmp_path / "cp"),
        "--vkey",
        vkey,
        "--origin",
        "audit.test/log",
    ]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["seq"] == 5 and document["size"] == 12
    assert verify_proof(document, [vkey])
    assert main([*args, "--tlog"]) == 0
    assert capsys.readouterr().out.startswith("c2sp.org/tlog-proof@v1")
    assert main(["audit", "prove", "50", *args[3:]]) == 2
    assert "covers seq 50" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--store", "nosuch://x"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["audit", "verify", "--store", "sqlite://relative"]) == 2
    loose = tmp_path / "loose.pem"
    loose.write_bytes(b"junk")
    loose.chmod(0o644)
    assert (
        main(
            [
                "audit",
                "checkpoint",
                "--store",
                "memory://",
                "--key",
                str(loose),
                "--name",
                "n",
                "--origin",
                "o",
                "--checkpoints",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "chmod 600" in capsys.readouterr().err
    loose.chmod(0o600)
    assert (
        main(
            [
                "audit",
                "checkpoint",
                "--store",
                "memory://",
                "--key",
                str(loose),
                "--name",
                "n",
                "--origin",
                "o",
                "--checkpoints",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "not an Ed25519" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["audit", "verify", "--bogus"])
    assert usage.value.code == 2


@pytest.mark.parametrize("tamper", [False, True])
def test_verify_with_worker_processes_prints_the_same_report(
    store_url: str,
    signing: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: bool,
) -> None:
    key, vkey = signing
    checkpoints = tmp_path / "checkpoints"
    assert checkpoint(store_url, key, checkpoints) == 0
    capsys.readouterr()
    if tamper:
        connection = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        connection.execute("DROP TRIGGER audit_no_update")
        connection.execute("UPDATE audit SET body = body || ' ' WHERE seq = 4")
        connection.commit()
        connection.close()
    outputs = []
    for jobs in ("1", "2"):
        code = main(
            ["audit", "verify", "--store", store_url, "--checkpoints", str(checkpoints),
             "--vkey", vkey, "--origin", "audit.test/log", "--json", "--jobs", jobs]
        )  # fmt: skip
        assert code == (1 if tamper else 0)
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert outputs[1]["ok"] is not tamper and outputs[1]["size"] == 12


@pytest.mark.parametrize(("given", "said"), [("0", "between 1 and 64"), ("x", "not a number")])
def test_verify_refuses_a_bad_number_of_jobs(
    store_url: str, capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audit", "verify", "--store", store_url, "--jobs", given])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err
