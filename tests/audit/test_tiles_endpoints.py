"""``/log/...`` on the real gateway's operator listener: access modes, headers, errors."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentguard.approvals._operators import issue_operator_token
from agentguard.audit import open_checkpoint, sign_checkpoint
from agentguard.audit._checkpoints import Checkpoint
from agentguard.audit._cosignatures import WitnessKey
from agentguard.audit._merkle import root
from agentguard.audit._tile_checkpoint import served_note
from agentguard.audit._tiles import Tile, parse_entry_bundle, root_from_tiles, tiles_at
from agentguard.gateway import Gateway
from agentguard.storage import MemoryStore
from tests.audit.gateway_tiles import tile_gateway
from tests.audit.support import ORIGIN, fill

pytestmark = pytest.mark.anyio


class Served:
    def __init__(self, gateway: Gateway, store: MemoryStore, client: httpx.AsyncClient, token: str):
        self.gateway, self.store, self.client, self.token = gateway, store, client, token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def grow(self, count: int) -> str:
        await fill(self.store, count)
        assert self.gateway.checkpointer is not None
        return await self.gateway.checkpointer.checkpoint()


async def serve(tmp_path: Path, tiles: str) -> AsyncIterator[Served]:
    store = MemoryStore()
    gateway, _ = tile_gateway(tmp_path, tiles, store=store)
    token, _ = await issue_operator_token(store, "auditor", clock=gateway.guard.clock)
    assert gateway.operator_app is not None
    transport = httpx.ASGITransport(app=gateway.operator_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://operator") as client:
        yield Served(gateway, store, client, token.reveal())


@pytest.fixture
async def public(tmp_path: Path) -> AsyncIterator[Served]:
    async for served in serve(tmp_path, "public"):
        yield served


@pytest.mark.parametrize("tiles", ["operators", "hashes", "public"])
async def test_access_modes_decide_who_reads_what(tmp_path: Path, tiles: str) -> None:
    async for served in serve(tmp_path, tiles):
        await served.grow(300)
        anonymous = {
            path: (await served.client.get(path)).status_code
            for path in ("/log/checkpoint", "/log/tile/0/000", "/log/tile/entries/000")
        }
        expected = {
            "operators": {
                "/log/checkpoint": 401,
                "/log/tile/0/000": 401,
                "/log/tile/entries/000": 401,
            },
            "hashes": {
                "/log/checkpoint": 200,
                "/log/tile/0/000": 200,
                "/log/tile/entries/000": 401,
            },
            "public": {
                "/log/checkpoint": 200,
                "/log/tile/0/000": 200,
                "/log/tile/entries/000": 200,
            },
        }[tiles]
        assert anonymous == expected
        for path in expected:
            response = await served.client.get(path, headers=served.auth)
            assert response.status_code == 200
            if expected[path] == 401 and "tile" in path:  # behind a token: no shared cache
                assert response.headers["cache-control"] == "private, max-age=31536000, immutable"


async def test_tiles_off_mounts_nothing(tmp_path: Path) -> None:
    async for served in serve(tmp_path, "off"):
        await served.grow(3)
        response = await served.client.get("/log/checkpoint", headers=served.auth)
        assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_checkpoint_and_tiles_carry_their_types_and_cache_headers(public: Served) -> None:
    note = await public.grow(300)
    response = await public.client.get("/log/checkpoint")
    assert response.text == note
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    full = await public.client.get("/log/tile/0/000")
    assert full.headers["content-type"] == "application/octet-stream"
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert len(full.content) == 8192
    partial = await public.client.get("/log/tile/0/001.p/44")
    assert (
        partial.headers["cache-control"] == "public, max-age=60" and len(partial.content) == 44 * 32
    )
    head = await public.client.head("/log/tile/entries/001.p/44")
    assert head.status_code == 200 and head.content == b""
    body = await public.client.get("/log/tile/entries/001.p/44")
    assert int(head.headers["content-length"]) == len(body.content)


async def test_served_tiles_prove_the_served_checkpoint(public: Served) -> None:
    await public.grow(257)
    await public.grow(300)
    note = (await public.client.get("/log/checkpoint")).text
    checkpoint = open_checkpoint(note, [public.gateway.checkpointer.signer.vkey()])  # type: ignore[union-attr]
    size = checkpoint.size
    fetched: dict[Tile, bytes] = {}
    for tile in tiles_at(size):
        response = await public.client.get("/log/" + tile.path())
        assert response.status_code == 200, tile
        fetched[tile] = response.content
    assert root_from_tiles(fetched.__getitem__, size) == checkpoint.root
    bodies = [
        b
        for t in sorted((t for t in fetched if t.entries), key=lambda t: t.index)
        for b in parse_entry_bundle(fetched[t])
    ]
    assert [e.body for e in await public.store.read()] == bodies
    assert root([hashlib.sha256(b"\x00" + b).digest() for b in bodies]) == checkpoint.root


async def served_within_refresh(client: httpx.AsyncClient, size: int) -> None:
    """Poll until ``/log/checkpoint`` serves ``size`` (the sink is read at most once a second)."""
    deadline = time.monotonic() + 30
    while True:
        response = await client.get("/log/checkpoint")
        if response.status_code == 200 and response.text.split("\n")[1] == str(size):
            return
        assert time.monotonic() < deadline, response.text
        await anyio.sleep(0.05)


async def test_nothing_is_served_beyond_the_signed_checkpoint(public: Served) -> None:
    response = await public.client.get("/log/checkpoint")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    await fill(public.store, 300)  # not checkpointed yet
    assert (await public.client.get("/log/tile/0/000")).status_code == 404
    await public.grow(0)
    await served_within_refresh(public.client, 300)
    assert (await public.client.get("/log/tile/0/000")).status_code == 200
    assert (await public.client.get("/log/tile/0/001.p/44")).status_code == 200
    assert (await public.client.get("/log/tile/0/001.p/45")).status_code == 404
    assert (await public.client.get("/log/tile/0/001")).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/log/tile/0/0", "/log/tile/0/000/", "/log/tile/00/000", "/log/tile/0/x000/000",
        "/log/tile/0/000.p/0", "/log/tile/0/000.p/256", "/log/tile/0/%30%30%30", "/log/tile",
        "/log/tile/entries", "/log/nothing", "/log", "/log/checkpoint/x", "/log/tile/9/000",
        "/log/tile/0/x072/x057/x594/x037/x927/936", "/log/tile/entries/000.p/300",
    ],
)  # fmt: skip
async def test_bad_paths_are_404_json(public: Served, path: str) -> None:
    await public.grow(300)
    response = await public.client.get(path)
    assert response.status_code == 404, path
    assert response.json()["error"] == "not_found"


async def test_other_methods_are_405_with_allow(public: Served) -> None:
    await public.grow(3)
    for path in ("/log/checkpoint", "/log/tile/0/000.p/3"):
        response = await public.client.post(path)
        assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


@given(st.text(alphabet="tile/entrsx0123456789.p%", max_size=40))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
async def test_junk_paths_are_never_500(public: Served, junk: str) -> None:
    if not public.gateway.checkpointer._last_note:  # type: ignore[union-attr]
        await public.grow(300)
    assume(not {".", ".."} & set(junk.split("/")))  # the client resolves those before sending
    response = await public.client.get("/log/" + junk)
    assert response.status_code in (200, 404), junk
    if response.status_code == 200:
        assert junk in ("checkpoint",) or Tile.parse(junk).path() == junk


async def test_the_note_with_most_valid_signatures_is_served(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agentguard.audit import Ed25519Signer

    signer = Ed25519Signer.generate("log.test")
    body = Checkpoint(ORIGIN, 5, bytes(32))
    plain = sign_checkpoint(body, [signer])
    witness = Ed25519PrivateKey.generate()
    public_key = witness.public_key().public_bytes_raw()
    ident = hashlib.sha256(b"w.test\n\x04" + public_key).digest()[:4]
    vkey = "w.test+" + ident.hex() + "+" + base64.b64encode(b"\x04" + public_key).decode()
    stamp = 1_700_000_000
    message = b"cosignature/v1\ntime %d\n" % stamp + body.body()
    blob = stamp.to_bytes(8, "big") + witness.sign(message)
    line = "\u2014 w.test " + base64.b64encode(ident + blob).decode() + "\n"
    cosigned = plain + line
    forged = plain + "\u2014 w.test " + base64.b64encode(ident + bytes(72)).decode() + "\n"
    junk = plain + "\u2014 other " + base64.b64encode(bytes(76)).decode() + "\n"
    keys = [open_checkpoint.__globals__["NoteVerifier"].from_vkey(signer.vkey())]
    witnesses = [WitnessKey.from_vkey(vkey)]
    assert served_note([plain, junk, forged, cosigned], ORIGIN, keys, witnesses) == cosigned
    assert served_note([cosigned, plain], ORIGIN, keys, []) == cosigned  # equal: the first
    assert served_note([forged, plain], ORIGIN, keys, witnesses) == plain  # a bad line: last
    older = sign_checkpoint(Checkpoint(ORIGIN, 4, bytes(32)), [signer])
    assert served_note([cosigned, older], ORIGIN, keys, witnesses) == cosigned
    stranger = sign_checkpoint(
        Checkpoint(ORIGIN, 9, bytes(32)), [Ed25519Signer.generate("log.test")]
    )
    assert served_note([plain, stranger], ORIGIN, keys, witnesses) == plain
    assert served_note([plain], "another/origin", keys, witnesses) is None
