"""C2SP tlog-cosignature ``cosignature/v1``: our lines, checked by us and by aics-tlog, and back.

Properties (hypothesis): a line we make verifies over exactly its checkpoint body and
timestamp, for any body; changing any byte of the body, the timestamp or the signature makes
it invalid, never a cosignature of something else; vkeys round-trip and a tampered one is
refused; the strict line parser refuses junk without crashing; a witness counts once. The
differential half runs the independent ``aics_tlog`` (its own process): it verifies a note we
cosigned with a quorum, and we verify the cosignatures it makes.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.audit import Checkpoint, Ed25519Signer, sign_checkpoint
from agentguard.audit._checkpoints import MalformedNote
from agentguard.audit._cosignatures import (
    CosignatureSigner,
    WitnessKey,
    add_cosignatures,
    cosignature_message,
    count_cosignatures,
    parse_signature_lines,
)
from tests.support.aics import tlog_script

ORIGIN = "audit.example.test/agentguard/witness"
LOG = Ed25519Signer.generate("audit.example.test")
W1 = CosignatureSigner.generate("witness.example/w1")
W2 = CosignatureSigner.generate("witness.example/w2")
W3 = CosignatureSigner.generate("witness.example/w3")

origins = st.from_regex(r"[a-z0-9.\-]{1,20}(/[a-z0-9]{1,8}){0,2}", fullmatch=True)
sizes = st.integers(min_value=0, max_value=2**63 - 1)
roots = st.binary(min_size=32, max_size=32)
stamps = st.integers(min_value=0, max_value=2**63 - 1)  # tlog-cosignature: at most 2^63-1


def note_of(size: int, root: bytes, origin: str = ORIGIN) -> str:
    return sign_checkpoint(Checkpoint(origin=origin, size=size, root=root), [LOG])


def body_of(note: str) -> bytes:
    return note[: note.rfind("\n\n") + 1].encode()


def blob_of(line: str) -> bytes:
    return base64.b64decode(line.rstrip("\n").rsplit(" ", 1)[1])[4:]


def test_message_layout_is_the_spec_s() -> None:
    body = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosignature_message(1679315147, body) == b"cosignature/v1\ntime 1679315147\n" + body
    for beyond in (2**63, 2**64):  # tlog-cosignature: MUST NOT exceed 2^63-1
        with pytest.raises(ValueError, match=r"2\^63-1"):
            cosignature_message(beyond, body)
    assert cosignature_message(2**63 - 1, body).startswith(
        b"cosignature/v1\ntime 9223372036854775807\n"
    )


@settings(max_examples=60, deadline=None)
@given(origins, sizes, roots, stamps)
def test_a_line_verifies_over_its_body_and_time_only(
    origin: str, size: int, root: bytes, timestamp: int
) -> None:
    body = body_of(note_of(size, root, origin))
    line = W1.line(body, timestamp)
    ((name, ident, blob),) = parse_signature_lines(line)
    assert (name, ident) == (W1.name, W1.key.key_id)
    assert W1.key.verify(body, blob) == timestamp
    assert W2.key.verify(body, blob) is None  # another witness's key never verifies it
    other = Checkpoint(origin=origin, size=size + 1 if size < 2**62 else 0, root=root).body()
    assert W1.key.verify(other, blob) is None
    forged_time = ((timestamp + 1) % 2**63).to_bytes(8, "big") + blob[8:]
    assert W1.key.verify(body, forged_time) is None


@settings(max_examples=60, deadline=None)
@given(roots, st.integers(min_value=0, max_value=71), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_of_the_blob_is_refused(root: bytes, index: int, flip: int) -> None:
    body = body_of(note_of(7, root))
    blob = bytearray(blob_of(W1.line(body, 1_700_000_000)))
    blob[index] ^= flip
    assert W1.key.verify(body, bytes(blob)) is None


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=80))
def test_wrong_length_blobs_are_refused(blob: bytes) -> None:
    if len(blob) != 72:
        assert W1.key.verify(b"x\n1\n" + bytes(44) + b"\n", blob) is None


def test_vkey_round_trip_and_refusals() -> None:
    vkey = W1.vkey()
    assert WitnessKey.from_vkey(vkey) == W1.key
    name, ident, key = vkey.split("+", 2)
    raw = base64.b64decode(key)
    as_log_key = base64.b64encode(bytes([1]) + raw[1:]).decode()
    zero_key = base64.b64encode(bytes([4]) + bytes(32)).decode()
    bad = [
        f"{name}+{ident}",  # two parts
        f"{name}+{'0' * 8}+{key}",  # key ID of another key
        f"{name}+{ident}+{as_log_key}",  # a log key type
        f"other+{ident}+{key}",  # the ID is bound to the name
        f"{name}+{ident}+{key[:-1]}",  # bad base64
        f"a b+{ident}+{key}",
        f"{name}+{ident}+{zero_key}",  # small order
    ]
    for text in bad:
        with pytest.raises(MalformedNote):
            WitnessKey.from_vkey(text)


def test_a_small_order_key_with_a_matching_id_is_refused() -> None:
    import hashlib

    identity = (1).to_bytes(32, "little")  # the identity point: anything "verifies" under it
    ident = hashlib.sha256(b"w\n\x04" + identity).digest()[:4].hex()
    encoded = base64.b64encode(bytes([4]) + identity).decode()
    vkey = f"w+{ident}+{encoded}"
    with pytest.raises(MalformedNote, match="safe"):
        WitnessKey.from_vkey(vkey)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_the_line_parser_never_crashes_on_junk(text: str) -> None:
    try:
        found = parse_signature_lines(text)
    except MalformedNote:
        return
    for name, ident, blob in found:  # whatever it accepted is well formed
        assert name and len(ident) == 4 and blob
        assert "\u2014 " + name in text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["\u2014 ", "w", " ", "AAAA", "AAAAAAAA", "=", "\n", "+", "é"])))
def test_the_line_parser_on_near_miss_lines(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        parse_signature_lines(text)
    except MalformedNote:
        pass


def test_count_distinct_witnesses_and_flag_bad_lines() -> None:
    note = note_of(12, bytes(range(32)))
    body = body_of(note)
    cosigned = add_cosignatures(note, [W1.line(body, 10), W2.line(body, 20), W1.line(body, 30)])
    tally = count_cosignatures([cosigned], [W1.key, W2.key, W3.key])
    assert tally.valid == (W1.name, W2.name) and tally.count() == 2 and not tally.invalid
    assert tally.meets(2) and not tally.meets(3)
    assert tally.timestamps == {W1.name: 30, W2.name: 20}  # each witness's newest line
    assert tally.reached_at(2) == 20 and tally.reached_at(1) == 30 and tally.reached_at(3) is None
    # The same key under a second configured name counts once.
    alias = WitnessKey(name=W1.name, key_id=W1.key.key_id, public_key=W1.key.public_key)
    assert count_cosignatures([cosigned], [W1.key, alias]).count() == 1
    # A cosignature of another checkpoint, pasted under W3's name and ID, is invalid.
    other = W3.line(body_of(note_of(13, bytes(range(32)))), 40)
    tampered = add_cosignatures(note, [W1.line(body, 10), other])
    bad = count_cosignatures([tampered], [W1.key, W3.key])
    assert bad.valid == (W1.name,) and bad.invalid == (W3.name,) and not bad.meets(1)
    # Across notes of one checkpoint (log-signed and cosigned copies) the union counts.
    split = [add_cosignatures(note, [W1.line(body, 1)]), add_cosignatures(note, [W2.line(body, 2)])]
    assert count_cosignatures(split, [W1.key, W2.key]).count() == 2


def test_add_cosignatures_is_idempotent() -> None:
    note = note_of(3, bytes(32))
    line = W1.line(body_of(note), 5)
    once = add_cosignatures(note, [line])
    assert add_cosignatures(once, [line]) == once
    assert once.endswith(line) and once.startswith(note)


AICS_VERIFY = r"""
import json, sys
from aics_tlog import parse_vkey
from aics_tlog.checkpoint import verify_checkpoint
from aics_tlog.note import parse_note
args = json.loads(sys.stdin.read())
result = verify_checkpoint(
    parse_note(args["note"]), parse_vkey(args["log"]),
    [parse_vkey(v) for v in args["witnesses"]], args["quorum"],
)
print(json.dumps({"ok": bool(result.ok), "error": getattr(result, "error", None)}))
"""


def aics_verify(note: str, witnesses: list[str], quorum: int) -> dict[str, object]:
    document = {"note": note, "log": LOG.vkey(), "witnesses": witnesses, "quorum": quorum}
    result: dict[str, object] = json.loads(tlog_script(AICS_VERIFY, stdin=json.dumps(document)))
    return result


def test_aics_tlog_accepts_our_cosignatures_with_a_quorum() -> None:
    note = note_of(1234, bytes(range(32)))
    body = body_of(note)
    cosigned = add_cosignatures(note, [W1.line(body, 1_700_000_000), W2.line(body, 1_700_000_001)])
    vkeys = [W1.vkey(), W2.vkey(), W3.vkey()]
    assert aics_verify(cosigned, vkeys, 2)["ok"] is True
    assert aics_verify(cosigned, vkeys, 3)["ok"] is False  # our count agrees: 2 of 3
    assert count_cosignatures([cosigned], [W1.key, W2.key, W3.key]).count() == 2
    # A line of ours over another checkpoint: aics-tlog rejects the note, we flag it.
    forged = add_cosignatures(note, [W1.line(body_of(note_of(1235, bytes(range(32)))), 9)])
    assert aics_verify(forged, vkeys, 1)["ok"] is False
    assert count_cosignatures([forged], [W1.key]).invalid == (W1.name,)


AICS_COSIGN = r"""
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from aics_tlog import cosignature_vkey, format_vkey, sign_cosignature
from aics_tlog.note import b64_encode
args = json.loads(sys.stdin.read())
out = {"vkeys": [], "lines": []}
for index, name in enumerate(args["names"]):
    key = Ed25519PrivateKey.from_private_bytes(bytes([index + 1]) * 32)
    blob, sig = sign_cosignature(key, name, args["time"], args["origin"], args["size"],
                                 bytes.fromhex(args["root"]))
    out["vkeys"].append(format_vkey(cosignature_vkey(name, key.public_key())))
    out["lines"].append("\u2014 %s %s\n" % (name, b64_encode(sig.key_id + sig.signature)))
print(json.dumps(out))
"""


def test_we_verify_cosignatures_aics_tlog_makes() -> None:
    root = bytes(range(32, 64))
    note = note_of(99, root)
    document = {
        "names": ["aics.example/w1", "aics.example/w2"],
        "time": 1_700_000_123,
        "origin": ORIGIN,
        "size": 99,
        "root": root.hex(),
    }
    made = json.loads(tlog_script(AICS_COSIGN, stdin=json.dumps(document)))
    keys = [WitnessKey.from_vkey(v) for v in made["vkeys"]]
    cosigned = add_cosignatures(note, made["lines"])
    tally = count_cosignatures([cosigned], keys)
    assert tally.count() == 2 and not tally.invalid
    assert set(tally.timestamps.values()) == {1_700_000_123}
    # Their line pasted onto another checkpoint is not a cosignature of it.
    moved = add_cosignatures(note_of(100, root), made["lines"])
    assert count_cosignatures([moved], keys).invalid == ("aics.example/w1", "aics.example/w2")
