"""``agentguard audit prove SEQ --tlog [--out DIR]`` on a real SQLite store, checked by aics-tlog.

The pair ``SEQ.tlog-proof`` + ``SEQ.event`` is verified by the aics-tlog CLI (split the way the
auditor's guide shows), with and without a witness quorum; a changed event or a wrong key fails.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import anyio
import pytest

from agentguard.audit import (
    Action,
    AuditEvent,
    Checkpoint,
    Ed25519Signer,
    read_tlog_proof,
    sign_checkpoint,
    verify_tlog_proof,
)
from agentguard.audit._cosignatures import CosignatureSigner
from agentguard.cli import main
from agentguard.storage import SQLiteStore
from agentguard.testing import FakeClock
from tests.support.aics import run_tlog, tlog_script

EVENTS = 40
ORIGIN = "audit.test/log"

# Runs in the aics venv: a witness (key made here) cosigns the checkpoint note on stdin.
COSIGN = r"""
import json, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from aics_tlog import cosignature_vkey, format_vkey, parse_checkpoint, parse_note, sign_cosignature
from aics_tlog.note import b64_encode

note = parse_note(sys.stdin.read())
head = parse_checkpoint(note.text)
key = Ed25519PrivateKey.generate()
_, line = sign_cosignature(key, "witness.test", int(time.time()), head.origin, head.size, head.root)
print(json.dumps({
    "vkey": format_vkey(cosignature_vkey("witness.test", key.public_key())),
    "line": "\u2014 witness.test " + b64_encode(line.key_id + line.signature) + "\n",
}))
"""


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    path = tmp_path / "agentguard.db"

    async def fill() -> None:
        clock = FakeClock()
        async with SQLiteStore(path, clock=clock) as store:
            for n in range(EVENTS):
                event = AuditEvent(
                    action=Action.DECISION, ts=clock.now(), method="GET", path=f"/crm/{n}"
                )
                await store.append([event])

    anyio.run(fill)
    return f"sqlite:///{path}"


@pytest.fixture
def anchored(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[list[str], str]:
    """The prove arguments (after SEQ) for a store with a signed checkpoint; the vkey."""
    key, checkpoints = tmp_path / "signing.pem", tmp_path / "checkpoints"
    assert main(["audit", "keygen", "--name", "audit.test", "--out", str(key)]) == 0
    vkey = capsys.readouterr().out.strip()
    sign = ["--key", str(key), "--name", "audit.test", "--origin", ORIGIN]
    command = [
        "audit",
        "checkpoint",
        "--store",
        store_url,
        *sign,
        "--checkpoints",
        str(checkpoints),
    ]
    assert main(command) == 0
    capsys.readouterr()
    trust = ["--checkpoints", str(checkpoints), "--vkey", vkey, "--origin", ORIGIN]
    return ["--store", store_url, *trust], vkey


def _split(proof: Path, into: Path) -> tuple[int, Path, Path]:
    """The auditor's split: index, a file of path hashes, a file with the checkpoint note."""
    head, _, note = proof.read_text(encoding="utf-8").partition("\n\n")
    _, index_line, *hashes = head.split("\n")
    (into / "hashes").write_text("".join(h + "\n" for h in hashes), encoding="utf-8")
    (into / "checkpoint").write_text(note, encoding="utf-8")
    return int(index_line.removeprefix("index ")), into / "hashes", into / "checkpoint"


def _aics_inclusion(event: Path, proof: Path, vkey: Path, *extra: str) -> dict[str, object]:
    index, hashes, note = _split(proof, proof.parent)
    return run_tlog(
        [
            "verify-inclusion",
            "--leaf",
            str(event),
            "--index",
            str(index),
            "--proof",
            str(hashes),
            "--checkpoint",
            str(note),
            "--vkey-file",
            str(vkey),
            *extra,
        ]
    )


@pytest.mark.parametrize("seq", [0, 17, EVENTS - 1])
def test_prove_out_writes_a_pair_aics_tlog_verifies(
    seq: int, anchored: tuple[list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, vkey = anchored
    out, keys = tmp_path / "proofs", tmp_path / "auditor"
    out.mkdir()
    keys.mkdir()
    (keys / "audit.vkey").write_text(vkey + "\n", encoding="utf-8")
    assert main(["audit", "prove", str(seq), *args, "--tlog", "--out", str(out)]) == 0
    assert f"{seq}.tlog-proof" in capsys.readouterr().out
    proof, event = out / f"{seq}.tlog-proof", out / f"{seq}.event"
    assert os.stat(proof).st_mode & 0o777 == 0o644
    assert json.loads(event.read_bytes())["seq"] == seq
    assert not event.read_bytes().endswith(b"\n")  # the exact leaf bytes
    # --tlog alone prints the same proof text, and nothing else
    assert main(["audit", "prove", str(seq), *args, "--tlog"]) == 0
    assert capsys.readouterr().out == proof.read_text(encoding="utf-8")
    assert read_tlog_proof(proof.read_text(encoding="utf-8")).size == EVENTS
    assert verify_tlog_proof(
        proof.read_text(encoding="utf-8"), event.read_bytes(), [vkey], origin=ORIGIN
    )
    report = _aics_inclusion(event, proof, keys / "audit.vkey")
    assert report["ok"] is True and report["checkpoint_verified"] is True, report
    assert report["size"] == EVENTS
    # another event's bytes under this proof: refused by both
    other = tmp_path / "other.event"
    other.write_bytes(event.read_bytes().replace(b'"seq":', b'"seq": '))
    assert _aics_inclusion(other, proof, keys / "audit.vkey")["ok"] is False
    assert not verify_tlog_proof(
        proof.read_text(encoding="utf-8"), other.read_bytes(), [vkey], origin=ORIGIN
    )
    # a key of the same name that did not sign it: refused
    (keys / "other.vkey").write_text(Ed25519Signer.generate("audit.test").vkey(), encoding="utf-8")
    assert _aics_inclusion(event, proof, keys / "other.vkey")["ok"] is False


def test_prove_picks_the_cosigned_note_and_aics_counts_the_witness(
    anchored: tuple[list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, vkey = anchored
    checkpoints = tmp_path / "checkpoints"
    (plain,) = checkpoints.glob("*.note")
    witness = json.loads(tlog_script(COSIGN, stdin=plain.read_text(encoding="utf-8")))
    cosigned = plain.read_text(encoding="utf-8") + witness["line"]
    (checkpoints / (plain.stem + "-cosigned.note")).write_text(cosigned, encoding="utf-8")
    out = tmp_path / "proofs"
    out.mkdir()
    assert main(["audit", "prove", "3", *args, "--out", str(out)]) == 0
    capsys.readouterr()
    proof = out / "3.tlog-proof"
    assert proof.read_text(encoding="utf-8").endswith("\n\n" + cosigned)
    (tmp_path / "audit.vkey").write_text(vkey + "\n", encoding="utf-8")
    quorum = ["--witness-key", witness["vkey"], "--quorum"]
    event, key = out / "3.event", tmp_path / "audit.vkey"
    assert _aics_inclusion(event, proof, key, *quorum, "1")["ok"] is True
    refused = _aics_inclusion(event, proof, key, *quorum, "2")
    assert refused["ok"] is False and "quorum" in str(refused["error"]).lower(), refused


def test_prove_refuses_clearly(
    anchored: tuple[list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, _ = anchored
    assert main(["audit", "prove", str(EVENTS), *args, "--tlog"]) == 2
    assert f"covers seq {EVENTS}" in capsys.readouterr().err
    assert main(["audit", "prove", "-1", *args]) == 2
    assert "seq must be 0 or more" in capsys.readouterr().err
    assert main(["audit", "prove", "1", *args, "--out", str(tmp_path / "nosuch")]) == 2
    error = capsys.readouterr().err
    assert "is not a directory" in error and error.count("\n") == 1


def _cosigned_notes(checkpoints: Path) -> tuple[str, list[str], str, str]:
    """The plain note; witness vkeys; a note one witness cosigned three times; one by two."""
    (plain,) = checkpoints.glob("*.note")
    text = plain.read_text(encoding="utf-8")
    body = text[: text.index("\n\n") + 1].encode()
    w1, w2 = CosignatureSigner.generate("w1.example"), CosignatureSigner.generate("w2.example")
    thrice = text + "".join(w1.line(body, 1_700_000_000 + t) for t in range(3))
    two = text + w1.line(body, 1_700_000_000) + w2.line(body, 1_700_000_000)
    (checkpoints / (plain.stem + "-a.note")).write_text(thrice, encoding="utf-8")
    (checkpoints / (plain.stem + "-b.note")).write_text(two, encoding="utf-8")
    return text, [w1.vkey(), w2.vkey()], thrice, two


@pytest.mark.parametrize("with_witnesses", [False, True])
def test_prove_picks_the_note_with_the_most_distinct_signers(
    with_witnesses: bool,
    anchored: tuple[list[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args, _ = anchored
    _, witnesses, _, two = _cosigned_notes(tmp_path / "checkpoints")
    extra = [flag for vkey in witnesses for flag in ("--witness", vkey)] if with_witnesses else []
    assert main(["audit", "prove", "3", *args, "--tlog", *extra]) == 0
    assert capsys.readouterr().out.endswith("\n\n" + two)  # 3 signers beat 4 lines of 2


def test_prove_needs_the_origin_and_skips_other_logs_and_keys(
    anchored: tuple[list[str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, vkey = anchored
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTGUARD_AUDIT_ORIGIN", raising=False)
    without = args[: args.index("--origin")]
    assert main(["audit", "prove", "3", *without, "--tlog"]) == 2
    assert "needs the log's origin" in capsys.readouterr().err
    monkeypatch.setenv("AGENTGUARD_AUDIT_ORIGIN", ORIGIN)
    assert main(["audit", "prove", "3", *without, "--tlog"]) == 0
    proof = capsys.readouterr().out
    # a newer checkpoint of another log under the same key, and a note by another key
    checkpoints = tmp_path / "checkpoints"
    (plain,) = checkpoints.glob("*.note")
    root_line = plain.read_text(encoding="utf-8").split("\n")[2]
    head = Checkpoint(ORIGIN + "-staging", EVENTS + 1, base64.b64decode(root_line))
    key = tmp_path / "signing.pem"
    signer = Ed25519Signer.from_pem("audit.test", key.read_bytes())
    (checkpoints / "99999999999999999999.note").write_text(sign_checkpoint(head, [signer]))
    stranger = Ed25519Signer.generate("audit.test")
    mine = Checkpoint(ORIGIN, EVENTS + 2, base64.b64decode(root_line))
    (checkpoints / "99999999999999999998.note").write_text(sign_checkpoint(mine, [stranger]))
    assert main(["audit", "prove", "3", *args, "--tlog"]) == 0
    assert capsys.readouterr().out == proof
    assert verify_tlog_proof(proof, _event(args, 3), [vkey], origin=ORIGIN)
    assert not verify_tlog_proof(proof, _event(args, 3), [vkey], origin=ORIGIN + "-staging")


def _event(args: list[str], seq: int) -> bytes:
    async def read() -> bytes:
        async with SQLiteStore(args[1].removeprefix("sqlite:///")) as store:
            return (await store.read(seq, seq + 1))[0].body

    return anyio.run(read)
