"""docs/how-to/audit-independent-check.md runs as written, with aics-tlog on PATH.

The page goes through the walk-through runner (tests/walkthrough): every block that is not
skipped runs in order, in one shell, and its promised output is checked. The witness block,
which needs witnesses, runs here against the page's own static tiles after two stand-in
witnesses (aics-tlog's cosigner, in its venv) cosigned the checkpoint: a quorum of 2 passes,
and fails once only one of them cosigned.

The tile directory is the real ``agentguard audit export --tiles`` output.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.aics import aics_python, tlog_script
from tests.walkthrough.pages import read_page
from tests.walkthrough.test_pages import _environment, _run_page

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs/how-to/audit-independent-check.md"

COSIGN = r"""
import json, sys, time
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from aics_tlog import cosignature_vkey, format_vkey, parse_checkpoint, parse_note, sign_cosignature
from aics_tlog.note import b64_encode

note = parse_note(sys.stdin.read())
head = parse_checkpoint(note.text)
out = []
for name in ("witness1.example", "witness2.example"):
    key = Ed25519PrivateKey.generate()
    _, line = sign_cosignature(key, name, int(time.time()), head.origin, head.size, head.root)
    out.append({
        "vkey": format_vkey(cosignature_vkey(name, key.public_key())),
        "line": "\u2014 " + name + " " + b64_encode(line.key_id + line.signature) + "\n",
    })
print(json.dumps(out))
"""


def _environment_with_aics(workdir: Path) -> dict[str, str]:
    """The page's shell: aics-tlog's venv first on PATH, as step 0 puts it (its python3 can
    import aics_tlog); agentguard still comes from ours (the aics venv has none)."""
    env = _environment(workdir)
    env["PATH"] = f"{Path(aics_python()).parent}{os.pathsep}{env['PATH']}"
    return env


def test_the_auditors_guide_runs_as_written(tmp_path: Path) -> None:
    _run_page(read_page(PAGE), tmp_path, _environment_with_aics(tmp_path))
    assert (tmp_path / "proofs" / "3.tlog-proof").read_text().startswith("c2sp.org/tlog-proof@v1\n")
    saved = (tmp_path / "seen.checkpoint").read_text()
    assert saved.split("\n")[1] == "5"  # the consistency step saved the grown log's checkpoint


def _bash(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + code
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_the_witness_block_needs_its_quorum(tmp_path: Path) -> None:
    page = read_page(PAGE)
    export = next(b for b in page.blocks if b.code.startswith("agentguard audit export --tiles"))
    (witness,) = [b for b in page.blocks if "--quorum" in b.code]
    assert witness.skip is not None and "test_tlog_proof_guide" in witness.skip
    env = _environment_with_aics(tmp_path)
    built = _bash("\n".join([*export.setup, export.code]), tmp_path, env)
    assert built.returncode == 0, built.stderr
    checkpoint = tmp_path / "site" / "checkpoint"
    note = checkpoint.read_text(encoding="utf-8")
    witnesses = json.loads(tlog_script(COSIGN, stdin=note))
    for number, made in enumerate(witnesses, 1):
        (tmp_path / f"witness{number}.vkey").write_text(made["vkey"] + "\n", encoding="utf-8")
    code = witness.code.replace("https://audit.example.com/log/", "site")

    checkpoint.write_text(note + witnesses[0]["line"] + witnesses[1]["line"], encoding="utf-8")
    passed = _bash(code, tmp_path, env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    report = json.loads(passed.stdout)
    assert report["ok"] is True and report["cosignatures"] == 2, report

    checkpoint.write_text(note + witnesses[0]["line"], encoding="utf-8")  # one witness only
    refused = _bash(code, tmp_path, env)
    assert refused.returncode == 1 and json.loads(refused.stdout)["ok"] is False


@pytest.mark.parametrize("source", ["operator listener", "static copy"])
def test_the_page_names_both_sources(source: str) -> None:
    text = PAGE.read_text(encoding="utf-8")
    needle = {"operator listener": "/log/checkpoint", "static copy": "audit export --tiles"}
    assert needle[source] in text


def _proof_dir(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A real proof pair in tmp_path/proofs (the page's setup, export and prove blocks)."""
    page = read_page(PAGE)
    env = _environment_with_aics(tmp_path)
    export = next(b for b in page.blocks if b.code.startswith("agentguard audit export --tiles"))
    prove = next(b for b in page.blocks if "audit prove 3" in b.code)
    built = _bash("\n".join([*export.setup, export.code, prove.code]), tmp_path, env)
    assert built.returncode == 0, built.stderr
    return env, (tmp_path / "proofs" / "3.tlog-proof").read_text(encoding="utf-8")


def test_the_split_checks_the_proofs_format_first(tmp_path: Path) -> None:
    env, good = _proof_dir(tmp_path)
    split = next(b.code for b in read_page(PAGE).blocks if b.code.startswith("awk -v hashes"))
    split = split[: split.index("aics-tlog")]  # the awk program alone
    proof = tmp_path / "proofs" / "3.tlog-proof"
    done = _bash(split, tmp_path, env)
    assert done.returncode == 0, done.stderr
    head, _, note = good.partition("\n\n")
    assert (tmp_path / "3.index").read_text() == "3\n"
    assert (tmp_path / "3.hashes").read_text() == "".join(h + "\n" for h in head.split("\n")[2:])
    assert (tmp_path / "3.checkpoint").read_text() == note
    hash_line = head.split("\n")[2]
    bad = {
        "v2 header": good.replace("tlog-proof@v1", "tlog-proof@v2", 1),
        "BOM": "\ufeff" + good,
        "leading zero": good.replace("index 3\n", "index 03\n", 1),
        "plus sign": good.replace("index 3\n", "index +3\n", 1),
        "two numbers": good.replace("index 3\n", "index 3 999\n", 1),
        "tab": good.replace("index 3\n", "index\t3\n", 1),
        "comment": good.replace("index 3\n", "index 3\n# note\n", 1),
        "trailing space": good.replace(hash_line + "\n", hash_line + " \n", 1),
        "CRLF": good.replace("\n", "\r\n"),
        "no blank line": head + "\n",
        "extra line": good.replace("index 3\n", "extra QQ==\nindex 3\n", 1),
    }
    for label, text in bad.items():
        proof.write_text(text, encoding="utf-8")
        refused = _bash(split, tmp_path, env)
        assert refused.returncode == 1, label
        assert "not a c2sp.org/tlog-proof@v1 text" in refused.stderr, label


def test_every_event_step_finds_a_damaged_entry_bundle(tmp_path: Path) -> None:
    env, _ = _proof_dir(tmp_path)
    page = read_page(PAGE)
    check = next(b.code for b in page.blocks if "audit_tiles" in b.code)
    saved = tmp_path / "seen.checkpoint"
    saved.write_text((tmp_path / "site" / "checkpoint").read_text(encoding="utf-8"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path / "site")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        code = check.replace("https://audit.example.com/log/", f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 20
        while (passed := _bash(code, tmp_path, env)).returncode != 0:
            assert time.monotonic() < deadline, passed.stderr
            time.sleep(0.2)
        assert "all 4 entries checked" in passed.stdout, passed.stdout
        entries = tmp_path / "site" / "tile" / "entries"
        (bundle,) = [path for path in entries.rglob("*") if path.is_file()]
        data = bytearray(bundle.read_bytes())
        data[-5] ^= 0x01  # one byte of the last event
        bundle.write_bytes(bytes(data))
        failed = _bash(code, tmp_path, env)
        assert failed.returncode != 0 and "TileVerificationError" in failed.stderr, failed
    finally:
        server.terminate()
        server.wait(timeout=10)
