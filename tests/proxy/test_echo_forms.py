"""Issue 14, items 2 and 7: encoded echoes and admin keys, over real sockets.

Item 2: a credential inside a larger base64 blob (a Basic value, a JWT) at any of the three
alignments, in a header *name*, in a JSON body declared ``charset=utf-16`` (or with a BOM, or
sniffed), with every character ``\\u``-escaped, percent-encoded or hex, cut across two headers,
split across stream chunks: each is withheld (502 before anything is sent, or the stream cut),
and nothing the agent received reveals it.

Item 7: for a service with only an admin credential the gateway sends a minted token; a vendor
that answers with the admin credential (raw, or base64 at offset 1 inside a Basic value) is
caught as surely as one echoing the token.
"""

from __future__ import annotations

import base64
import json
import os
from urllib.parse import quote

import pytest

from tests.support.echo_gateway import (
    ADMIN_KEY,
    CRM_KEY,
    Answer,
    echo_gateway,
    json_answer,
    revealed,
)

pytestmark = pytest.mark.anyio


def b64(data: bytes, *, url: bool = False, pad: bool = True) -> bytes:
    encoded = base64.urlsafe_b64encode(data) if url else base64.b64encode(data)
    return encoded if pad else encoded.rstrip(b"=")


def every_character_escaped(text: str) -> str:
    """``text`` as a JSON string body with every UTF-16 code unit ``\\u``-escaped."""
    wide = text.encode("utf-16-be")
    return "".join(f"\\u{wide[i] << 8 | wide[i + 1]:04x}" for i in range(0, len(wide), 2))


def jwt_with(claims: dict[str, str]) -> bytes:
    header = b64(b'{"alg":"HS256","typ":"JWT"}', url=True, pad=False)
    payload = b64(json.dumps(claims).encode(), url=True, pad=False)
    return header + b"." + payload + b"." + b64(os.urandom(32), url=True, pad=False)


def echo_cases(key: str) -> dict[str, Answer]:
    raw = key.encode()
    cases: dict[str, Answer] = {}
    for user in ("", "u", "ab"):  # ":" + key puts the key at offsets 1, 2, 0 of the blob
        basic = b"Basic " + b64(user.encode() + b":" + raw)
        cases[f"basic-header-offset-{(len(user) + 1) % 3}"] = json_answer(
            b"{}", (b"x-debug-authorization", basic)
        )
        cases[f"basic-body-offset-{(len(user) + 1) % 3}"] = json_answer(
            json.dumps({"sent": basic.decode()}).encode()
        )
    for pad in ("", "x", "xy"):  # the claim's offset inside the payload moves by one each
        token = jwt_with({"p": pad, "client_secret": key})
        cases[f"jwt-claim-{len(pad)}"] = json_answer(
            json.dumps({"id_token": token.decode()}).encode()
        )
    for shift in range(3):
        blob = os.urandom(shift) + raw + os.urandom(5)
        cases[f"base64url-unpadded-{shift}"] = json_answer(b64(blob, url=True, pad=False))
        cases[f"base64-padded-{shift}"] = json_answer(b64(blob))
    cases["base64-mime-wrapped"] = json_answer(
        base64.encodebytes(os.urandom(40) + raw + os.urandom(40)), (b"content-type", b"text/plain")
    )
    cases["header-name"] = json_answer(b"{}", (raw, b"1"))
    cases["header-name-in-a-longer-name"] = json_answer(b"{}", (b"x-" + raw + b"-seen", b"1"))
    document = json.dumps({"error": f"bad key {key}"})
    cases["json-utf-16-declared"] = json_answer(
        document.encode("utf-16"), (b"content-type", b"application/json; charset=utf-16")
    )
    cases["json-utf-16be-declared-no-bom"] = json_answer(
        document.encode("utf-16-be"), (b"content-type", b'application/json; charset="UTF-16BE"')
    )
    cases["json-utf-32-declared"] = json_answer(
        document.encode("utf-32"), (b"content-type", b"application/json;charset=utf-32")
    )
    cases["json-utf-16le-sniffed"] = json_answer(document.encode("utf-16-le"))
    cases["text-utf-16-bom-undeclared"] = json_answer(
        document.encode("utf-16"), (b"content-type", b"text/plain")
    )
    cases["json-every-character-escaped"] = json_answer(
        ('{"error": "' + every_character_escaped(key) + '"}').encode()
    )
    cases["json-escaped-in-utf-16"] = json_answer(
        ('{"error": "' + every_character_escaped(key) + '"}').encode("utf-16"),
        (b"content-type", b"application/json; charset=utf-16"),
    )
    cases["percent-every-byte"] = json_answer("".join(f"%{b:02X}" for b in raw).encode())
    cases["percent-quoted"] = json_answer(quote("key=" + key, safe="").encode())
    cases["hex-lower"] = json_answer(raw.hex().encode())
    cases["hex-upper-in-a-blob"] = json_answer(
        (os.urandom(7) + raw + os.urandom(3)).hex().upper().encode()
    )
    size = 12  # the keys here are 24 characters or longer: 12 leading or trailing reveal them
    cases["prefix-fragment"] = json_answer(f"Incorrect key {key[:size]}****".encode())
    cases["suffix-fragment"] = json_answer(f"Incorrect key ****{key[-size:]}".encode())
    half = len(key) // 2
    cases["cut-across-two-headers"] = json_answer(
        b"{}", (b"x-key-start", raw[:half]), (b"x-key-end", raw[half:])
    )
    cases["php-escaped-slashes"] = json_answer(
        json.dumps({"k": b64(b"\xff\xfe" + raw).decode()}).replace("/", "\\/").encode()
    )
    return cases


CRM_CASES = echo_cases(CRM_KEY)
ADMIN_CASES = echo_cases(ADMIN_KEY)


@pytest.mark.parametrize("case", sorted(CRM_CASES))
async def test_an_encoded_echo_of_the_key_is_withheld(case: str) -> None:
    async with echo_gateway(lambda _: CRM_CASES[case]) as gateway:
        response = await gateway.call("crm")
        reasons = await gateway.reasons()
    assert response.status_code == 502
    assert (response.json()["reason"], response.json()["service"]) == (
        "secret_echo_blocked",
        "crm",
    )
    assert reasons[-1] == "secret_echo_blocked"
    assert not revealed(response, CRM_KEY)


@pytest.mark.parametrize("case", sorted(ADMIN_CASES))
async def test_the_admin_key_behind_a_minted_token_is_withheld_in_any_form(case: str) -> None:
    async with echo_gateway(lambda _: ADMIN_CASES[case]) as gateway:
        response = await gateway.call("projects")
        sent = [seen.get("authorization") for seen in gateway.vendor.seen]
        minted = gateway.minted()
    assert sent == [f"Bearer {minted[0]}"]  # the vendor got the minted token, never the admin key
    assert response.status_code == 502
    assert response.json()["reason"] == "secret_echo_blocked"
    assert not revealed(response, ADMIN_KEY, *minted)


async def test_a_vendor_answering_client_secret_admin_key_is_withheld() -> None:
    """The issue's example: ``{"client_secret": "<admin key>"}`` for a minted-token call."""
    body = json.dumps({"client_secret": ADMIN_KEY}).encode()
    async with echo_gateway(lambda _: json_answer(body)) as gateway:
        response = await gateway.call("projects")
        reasons = await gateway.reasons()
    assert response.status_code == 502
    assert ADMIN_KEY not in response.text
    assert reasons[-1] == "secret_echo_blocked"


async def test_the_admin_key_is_withheld_on_a_call_with_a_cached_token() -> None:
    answers = iter([json_answer(b'{"ok": true}'), json_answer(json.dumps([ADMIN_KEY]).encode())])
    async with echo_gateway(lambda _: next(answers)) as gateway:
        first = await gateway.call("projects")
        second = await gateway.call("projects")
        minted = gateway.minted()
    assert len(minted) == 1  # one mint, reused
    assert (first.status_code, second.status_code) == (200, 502)
    assert not revealed(second, ADMIN_KEY)


async def test_the_minted_token_itself_is_withheld() -> None:
    def script(headers: dict[str, str]) -> Answer:
        token = headers["authorization"].removeprefix("Bearer ")
        return json_answer(json.dumps({"your_token": b64(b"x" + token.encode()).decode()}).encode())

    async with echo_gateway(script) as gateway:
        response = await gateway.call("projects")
        minted = gateway.minted()
    assert response.status_code == 502
    assert not revealed(response, *minted)


async def test_a_streamed_escaped_key_split_across_chunks_is_cut_before_it_shows() -> None:
    escaped = every_character_escaped(ADMIN_KEY).encode()
    filler = json.dumps({"rows": [os.urandom(24).hex() for _ in range(3000)]}).encode()
    middle = len(escaped) // 2
    chunks = [filler, b'{"leak": "' + escaped[:middle], escaped[middle:] + b'"}']

    async with echo_gateway(
        lambda _: (200, [(b"content-type", b"application/json")], chunks)
    ) as gateway:
        status, received, cut = await gateway.stream("projects")
        reasons = await gateway.reasons()
    assert (status, cut) == (200, True)
    assert received.startswith(filler[:1000])
    from agentguard.credentials import EchoScanner

    assert not EchoScanner([ADMIN_KEY]).found_in(received)
    assert reasons[-1] == "secret_echo_blocked"


async def test_a_streamed_utf16_body_is_sent_as_utf8_and_cut_at_the_key() -> None:
    rows = json.dumps(
        {"rows": ["café " + os.urandom(24).hex() for _ in range(3000)]}, ensure_ascii=False
    )
    encoded = (rows[:-1] + f', "leak": "{CRM_KEY}"}}').encode("utf-16")
    chunks = [encoded[start : start + 8191] for start in range(0, len(encoded), 8191)]
    content_type = (b"content-type", b"application/json; charset=utf-16")

    async with echo_gateway(lambda _: (200, [content_type], chunks)) as gateway:
        status, received, cut = await gateway.stream("crm")
    assert (status, cut) == (200, True)
    assert received.startswith(b'{"rows": ["caf\xc3\xa9 ')  # UTF-8 now, without the BOM
    assert CRM_KEY.encode("utf-16-le") not in received
    assert CRM_KEY.encode() not in received


async def test_a_clean_body_in_another_charset_reaches_the_agent_as_utf8() -> None:
    document = {"name": "Zoë Ørsted", "note": "naïve café"}
    latin = json.dumps(document, ensure_ascii=False).encode("latin-1")
    wide = json.dumps(document, ensure_ascii=False).encode("utf-16")
    answers = iter(
        [
            json_answer(latin, (b"content-type", b"application/json; charset=ISO-8859-1")),
            json_answer(wide, (b"content-type", b"application/json; charset=utf-16; v=2")),
            json_answer(b"\xef\xbb\xbf" + b'{"ok": true}'),  # a UTF-8 BOM: left alone
        ]
    )
    async with echo_gateway(lambda _: next(answers)) as gateway:
        first = await gateway.call("crm")
        second = await gateway.call("crm")
        third = await gateway.call("crm")
    assert first.headers["content-type"] == "application/json; charset=utf-8"
    assert second.headers["content-type"] == "application/json; v=2; charset=utf-8"
    assert json.loads(first.content) == json.loads(second.content) == document
    assert first.content.decode("utf-8")  # valid UTF-8 bytes
    assert third.content == b"\xef\xbb\xbf" + b'{"ok": true}'
    assert third.headers["content-type"] == "application/json; charset=utf-8"  # one reading


async def test_innocent_encoded_text_passes() -> None:
    body = json.dumps(
        {
            "thumb": base64.b64encode(os.urandom(600)).decode(),
            "escaped": every_character_escaped("nothing to see here"),
            "url": quote("https://example.test/?q=a b&c=d", safe=""),
            "hash": os.urandom(32).hex(),
        }
    ).encode()
    async with echo_gateway(lambda _: json_answer(body, (b"x-request-id", b"r-1"))) as gateway:
        response = await gateway.call("crm")
    assert response.status_code == 200
    assert response.content == body
