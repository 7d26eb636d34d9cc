"""``agentguard audit export --tiles DIR``: exactly the signed size, re-runnable, refuses forks."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentguard.audit import Ed25519Signer, sign_checkpoint
from agentguard.audit._checkpoints import Checkpoint
from agentguard.audit._merkle import root
from agentguard.audit._tiles import (
    Tile,
    entry_bundle,
    parse_entry_bundle,
    root_from_tiles,
    tiles_at,
)
from agentguard.cli import _audit_tiles, main
from agentguard.cli._errors import CommandError
from agentguard.storage import MemoryStore, SQLiteStore
from tests.audit.support import ORIGIN, fill

NAME = ORIGIN.split("/", 1)[0]


def make_log(tmp_path: Path, label: str, count: int, tag: str) -> str:
    database = tmp_path / f"{label}.db"

    async def work() -> None:
        async with SQLiteStore(database) as store:
            await fill(store, count, tag=tag)

    anyio.run(work)
    return f"sqlite:///{database}"


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    signer = Ed25519Signer.generate(NAME)
    path = tmp_path / "key.pem"
    path.write_bytes(signer.private_pem())
    os.chmod(path, 0o600)
    return path, signer.vkey()


def sign(url: str, key: Path, checkpoints: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["audit", "checkpoint", "--store", url, "--key", str(key), "--name", NAME]
    assert main([*args, "--origin", ORIGIN, "--checkpoints", str(checkpoints)]) == 0
    capsys.readouterr()


def export(url: str, out: Path, checkpoints: Path, vkey: str) -> int:
    args = ["audit", "export", "--tiles", str(out), "--store", url, "--checkpoints"]
    return main([*args, str(checkpoints), "--vkey", vkey, "--origin", ORIGIN])


def test_export_writes_exactly_the_signed_size_and_extends_on_rerun(
    tmp_path: Path, key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_log(tmp_path, "log", 300, "a")
    cps, out = tmp_path / "cps", tmp_path / "tiles"
    sign(url, key[0], cps, capsys)
    make_log(tmp_path, "log", 100, "b")  # 400 now; only 300 are signed
    assert export(url, out, cps, key[1]) == 0
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"checkpoint", *(t.path() for t in tiles_at(300))}
    read = {t: (out / t.path()).read_bytes() for t in tiles_at(300, entries=False)}
    leaves = root_from_tiles(read.__getitem__, 300)
    assert (out / "checkpoint").read_text().split("\n")[1] == "300"
    sign(url, key[0], cps, capsys)
    assert export(url, out, cps, key[1]) == 0
    assert "checkpoint size 400" in capsys.readouterr().out
    assert (out / Tile(0, 1, 44).path()).exists()  # the older partial stays: still true
    bundle = parse_entry_bundle((out / Tile(-1, 1, 144).path()).read_bytes())
    assert len(bundle) == 144 and leaves != root([])


def test_a_forked_log_is_refused_before_anything_is_written(
    tmp_path: Path, key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    first, out = make_log(tmp_path, "first", 300, "a"), tmp_path / "tiles"
    sign(first, key[0], tmp_path / "cps1", capsys)
    assert export(first, out, tmp_path / "cps1", key[1]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fork = make_log(tmp_path, "fork", 520, "z")  # same key, a different history
    sign(fork, key[0], tmp_path / "cps2", capsys)
    assert export(fork, out, tmp_path / "cps2", key[1]) == 2
    assert "forked" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_existing_tile_with_other_bytes_is_never_overwritten(
    tmp_path: Path, key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, out = make_log(tmp_path, "log", 260, "a"), tmp_path / "tiles"
    sign(url, key[0], tmp_path / "cps", capsys)
    planted = out / "tile" / "0" / "000"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(bytes(8192))
    assert export(url, out, tmp_path / "cps", key[1]) == 2
    assert "different bytes" in capsys.readouterr().err
    assert planted.read_bytes() == bytes(8192) and not (out / "checkpoint").exists()


def test_export_needs_a_trusted_checkpoint(
    tmp_path: Path, key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, out = make_log(tmp_path, "log", 10, "a"), tmp_path / "tiles"
    (tmp_path / "cps").mkdir()
    assert export(url, out, tmp_path / "cps", key[1]) == 2
    assert "no checkpoint of" in capsys.readouterr().err
    stranger = Ed25519Signer.generate(NAME).vkey()
    sign(url, key[0], tmp_path / "cps", capsys)
    assert export(url, out, tmp_path / "cps", stranger) == 2
    assert not out.exists()


class Rewriting:
    """A store whose event 3 reads differently from the ``honest``-th read on (a rewrite)."""

    def __init__(self, store: Any, honest: int) -> None:
        self.store, self.honest, self.reads = store, honest, 0

    async def head(self) -> Any:
        return await self.store.head()

    async def read(self, start: int = 0, stop: int | None = None) -> list[Any]:
        found: list[Any] = await self.store.read(start, stop)
        self.reads += 1
        if self.reads >= self.honest:
            return [
                dataclasses.replace(e, body=e.body.replace(b'"/e/3"', b'"/X/3"'))
                if e.seq == 3
                else e
                for e in found
            ]
        return found


@pytest.mark.parametrize("honest", [2, 3])  # reads: root check, hash tile, bundle
def test_a_store_rewritten_during_the_export_writes_nothing_unsigned(
    tmp_path: Path, honest: int
) -> None:
    async def work() -> Path:
        store = MemoryStore()
        await fill(store, 10)
        leaves = [hashlib.sha256(b"\0" + e.body).digest() for e in await store.read()]
        checkpoint = Checkpoint(ORIGIN, 10, root(leaves))
        note = sign_checkpoint(checkpoint, [Ed25519Signer.generate(NAME)])
        out = tmp_path / "tiles"
        with pytest.raises(CommandError, match="changed since its hashes were checked"):
            await _audit_tiles._export(Rewriting(store, honest), out, note, checkpoint, None)
        return out

    out = anyio.run(work)
    assert not (out / "checkpoint").exists()
    for path in out.rglob("*"):  # whatever was written is covered by the signed root
        if path.is_file() and "entries" in path.parts:
            bodies = parse_entry_bundle(path.read_bytes())
            assert b'"/X/3"' not in b"".join(bodies)


def test_an_entry_bundle_of_the_wrong_width_is_refused() -> None:
    tally = _audit_tiles._Tally()
    bodies = [b"a", b"b"]
    tally.digests[0] = hashlib.sha256(
        b"".join(hashlib.sha256(b"\0" + body).digest() for body in bodies)
    ).digest()
    _audit_tiles._check_verified(Tile(-1, 0, 2), entry_bundle(bodies), tally)
    with pytest.raises(CommandError, match="does not hold 3 events"):
        _audit_tiles._check_verified(Tile(-1, 0, 3), entry_bundle(bodies), tally)
    with pytest.raises(CommandError, match="does not hold"):
        _audit_tiles._check_verified(Tile(-1, 0, 2), entry_bundle(bodies)[:-1], tally)


@pytest.mark.parametrize("planted", ["tile", "tile/0", "tile/entries/000.p/10", "checkpoint"])
def test_the_export_never_writes_through_a_symlink_in_its_directory(
    tmp_path: Path, key: tuple[Path, str], capsys: pytest.CaptureFixture[str], planted: str
) -> None:
    url, out = make_log(tmp_path, "log", 10, "a"), tmp_path / "tiles"
    sign(url, key[0], tmp_path / "cps", capsys)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"keep me")
    link = out / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim if planted.count("/") >= 2 or planted == "checkpoint" else elsewhere)
    assert export(url, out, tmp_path / "cps", key[1]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_bytes() == b"keep me" and sorted(elsewhere.iterdir()) == [victim]
    assert link.is_symlink()
