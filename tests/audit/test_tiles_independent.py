"""Our tiles, checked by a verifier we did not write: aics-tlog (run in its own venv).

The real gateway's operator listener serves the log (``[audit] tiles = "public"``) over a
loopback socket; aics-tlog fetches the checkpoint and tiles over HTTP and checks the signed
checkpoint, inclusion of sampled events (given as their exact bytes) and consistency between
successive checkpoints while the log grows past tile and level boundaries. The static export
(``agentguard audit export --tiles DIR``) is checked the same way, from the directory. Tampering
with a served entry or an exported tile must make aics-tlog fail.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentguard.cli import main
from agentguard.storage import SQLiteStore
from tests.audit.gateway_tiles import tile_gateway
from tests.audit.support import ORIGIN, fill
from tests.support.aics import aics_python, run_tlog
from tests.support.servers import LoopbackServer

SIZES = [1, 255, 256, 257, 65536 + 300]


@pytest.fixture(scope="module")
def aics() -> str:
    return aics_python()


def grow(database: Path, count: int, tag: str) -> None:
    async def work() -> None:
        async with SQLiteStore(database) as store:
            await fill(store, count, tag=tag, batch=2048)

    anyio.run(work)


def bodies(database: Path, seqs: list[int]) -> dict[int, bytes]:
    async def work() -> dict[int, bytes]:
        async with SQLiteStore(database) as store:
            return {seq: (await store.read(seq, seq + 1))[0].body for seq in seqs}

    found: dict[int, bytes] = anyio.run(work)
    return found


def checkpoint(database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    name = ORIGIN.split("/", 1)[0]
    args = ["audit", "checkpoint", "--store", f"sqlite:///{database}", "--key"]
    args += [str(tmp_path / "checkpoint.pem"), "--name", name, "--origin", ORIGIN]
    assert main([*args, "--checkpoints", str(tmp_path / "checkpoints")]) == 0
    note = capsys.readouterr().out
    size = note.split("\n")[1]
    saved = tmp_path / f"seen-{size}.note"
    saved.write_text(note)
    return saved


def served_within_refresh(url: str, size: int) -> None:
    """Poll until the gateway serves the checkpoint of ``size`` (its sink is read at most once
    a second, so a note signed by another process shows up within that)."""
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(url + "checkpoint")
        if response.status_code == 200 and response.text.split("\n")[1] == str(size):
            return
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def samples(size: int) -> list[int]:
    return sorted({0, size // 2, size - 1, max(0, size - 257)})


def include(source: str, vkey: str, tmp_path: Path, seq: int, body: bytes) -> dict[str, Any]:
    leaf = tmp_path / f"leaf-{seq}"
    leaf.write_bytes(body)
    return run_tlog(
        ["verify-inclusion", "--tiles", source, "--log-key", vkey, "--origin", ORIGIN,
         "--index", str(seq), "--leaf", str(leaf)]
    )  # fmt: skip


def test_aics_tlog_verifies_served_and_exported_tiles_across_growth(
    aics: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "log.db"
    grow(database, 0, "none")
    gateway, signer = tile_gateway(tmp_path, "public", store_url=f"sqlite:///{database}")
    vkey = signer.vkey()
    assert gateway.operator_app is not None
    with LoopbackServer(gateway.operator_app) as server:
        url = server.url + "/log/"
        previous: Path | None = None
        have = 0
        for size in SIZES:
            grow(database, size - have, f"s{size}")
            have = size
            saved = checkpoint(database, tmp_path, capsys)
            served_within_refresh(url, size)
            head = run_tlog(
                ["verify-checkpoint", "--tiles", url, "--log-key", vkey, "--origin", ORIGIN]
            )
            assert head["ok"] and head["size"] == size and head["tiles_ok"], head
            for seq, body in bodies(database, samples(size)).items():
                result = include(url, vkey, tmp_path, seq, body)
                assert result["ok"], result
            if previous is not None:
                result = run_tlog(
                    ["verify-consistency", "--tiles", url, "--log-key", vkey, "--origin", ORIGIN,
                     "--old-checkpoint", str(previous)]
                )  # fmt: skip
                assert result["ok"] and result["new_size"] == size, result
            previous = saved

        # a wrong event is not included, and a tampered served entry is caught
        assert not include(url, vkey, tmp_path, 5, b'{"not":"the event"}')["ok"]
        last = have - 1
        connection = sqlite3.connect(database)
        for (trigger,) in connection.execute("SELECT name FROM sqlite_master WHERE type='trigger'"):
            connection.execute(f"DROP TRIGGER {trigger}")
        connection.execute(
            "UPDATE audit SET body = replace(body, 'seq', 'sEq') WHERE seq = ?", (last,)
        )
        connection.commit()
        connection.close()
        tampered = run_tlog(
            ["verify-inclusion", "--tiles", url, "--log-key", vkey, "--origin", ORIGIN,
             "--index", str(last)]
        )  # fmt: skip
        assert not tampered["ok"], tampered

    check_static_export(tmp_path, vkey, capsys)


def check_static_export(tmp_path: Path, vkey: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The static export of an untampered copy of the log, read from its directory."""
    export = tmp_path / "tiles"
    clean = tmp_path / "clean.db"
    grow(clean, SIZES[-1], "clean")
    name = ORIGIN.split("/", 1)[0]
    cps = tmp_path / "clean-checkpoints"
    args = ["audit", "checkpoint", "--store", f"sqlite:///{clean}", "--key"]
    args += [str(tmp_path / "checkpoint.pem"), "--name", name, "--origin", ORIGIN]
    assert main([*args, "--checkpoints", str(cps)]) == 0
    capsys.readouterr()
    exporting = ["audit", "export", "--tiles", str(export), "--store", f"sqlite:///{clean}"]
    exporting += ["--checkpoints", str(cps), "--vkey", vkey, "--origin", ORIGIN]
    assert main(exporting) == 0
    assert main(exporting) == 0  # re-runnable: nothing differs
    assert "0 written" in capsys.readouterr().out.splitlines()[-1]
    head = run_tlog(["verify-checkpoint", "--tiles", str(export), "--log-key", vkey])
    assert head["ok"] and head["size"] == SIZES[-1] and head["tiles_ok"], head
    for seq, body in bodies(clean, samples(SIZES[-1])).items():
        result = include(str(export), vkey, tmp_path, seq, body)
        assert result["ok"], result
    bundle = export / "tile" / "entries" / "257.p" / "44"
    data = bytearray(bundle.read_bytes())
    data[10] ^= 0x01
    bundle.write_bytes(bytes(data))
    tampered = run_tlog(
        ["verify-inclusion", "--tiles", str(export), "--log-key", vkey,
         "--index", str(SIZES[-1] - 1)]
    )  # fmt: skip
    assert not tampered["ok"], tampered
