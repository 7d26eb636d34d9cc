"""Regressions from the second attack round on the connect pages (issue 21).

- LOW-MEDIUM, cookie tossing through a look-alike name: the Cookie header was read as Latin-1
  and each name trimmed with ``str.strip()``, which also trims NBSP (0xA0), NEL (0x85) and
  other bytes a browser keeps. To a browser ``\\xa0__Host-agentguard_connect_crm`` is not a
  ``__Host-`` cookie (a sibling host may set it), yet the callback took it as its own. Names
  are now trimmed of SP and HTAB only (RFC 6265 §5.2) and matched byte for byte; a look-alike
  of the binding cookie's name is refused as ambiguous (counted: it names no one).
- LOW, unbounded audit appends from one link: the confirmation page uses nothing up, yet a
  refusal naming the link's user (disabled since, or the link opened at another service's page)
  was its own chained event each time. Refusals that use nothing up are now counted per client
  address into the refusal summary; those that use a link or a state up stay events.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentguard.asgi._connect_request import named_cookie
from agentguard.asgi._types import Message
from agentguard.connect._flow_errors import COOKIE_AMBIGUOUS, LINK_GONE, LINK_OTHER_SERVICE
from agentguard.storage import MemoryStore
from tests.connect.test_review_attack_flow import SECURE_ORIGIN, Rig, serve
from tests.connect.test_review_connect import ISSUER, build, identify_by_header

HOST_NAME = "__Host-agentguard_connect_crm"
PLAIN_NAME = "agentguard_connect_crm"
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


@pytest.fixture
def secure() -> Iterator[Rig]:
    with serve(SECURE_ORIGIN) as rig:
        yield rig


@pytest.fixture
def plain() -> Iterator[Rig]:
    with serve() as rig:
        yield rig


def _raw_get(rig: Rig, url: str, cookie: bytes) -> bytes:
    """GET ``url`` (of the public origin) with a Cookie header of raw bytes, over a socket:
    the status line and headers of the answer."""
    host, port = rig.url.split("//", 1)[1].split(":")
    target = url.replace(rig.origin, "", 1).encode("ascii")
    request = (
        b"GET " + target + b" HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n"
        b"Cookie: " + cookie + b"\r\n\r\n"
    )
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


async def _mallorys_flow(rig: Rig) -> tuple[str, str]:
    """mallory starts a flow in his browser; alice consents at the vendor through his
    authorization URL: the callback URL and mallory's binding secret."""
    async with httpx.AsyncClient(timeout=10) as attacker:
        started = await rig.start(attacker, "mallory")
    name, _, rest = started.headers["set-cookie"].partition("=")
    assert name == HOST_NAME
    secret = rest.split(";", 1)[0]
    rig.vendor.auto_approve = "alice-crm"
    async with httpx.AsyncClient(timeout=10) as victim:
        answer = await victim.get(started.headers["location"])
    assert answer.status_code == 302, answer.text
    back: str = answer.headers["location"]
    return back, secret


# --- LOW-MEDIUM: a look-alike of the __Host- cookie's name -----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("junk", [b"\xa0", b"\x85", b"\xa0\x85"])
@pytest.mark.parametrize("where", ["before", "after"])
async def test_a_cookie_whose_name_only_python_trims_does_not_bind_the_callback(
    secure: Rig, junk: bytes, where: str
) -> None:
    back, secret = await _mallorys_flow(secure)
    name = junk + HOST_NAME.encode() if where == "before" else HOST_NAME.encode() + junk
    answer = _raw_get(secure, back, name + b"=" + secret.encode())
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]
    assert COOKIE_AMBIGUOUS.encode() in answer
    assert not await secure.connected("mallory")
    assert secure.vendor.token_calls == 0  # alice's authorization code was never redeemed
    assert await secure.refusals() == []  # names no one: counted per address
    assert secure.counted() == [(403, "connect_refused", "127.0.0.1", 1)]


@pytest.mark.anyio
async def test_a_look_alike_next_to_the_browsers_own_cookie_is_refused(secure: Rig) -> None:
    """Which of the two is the browser's own cannot be told: neither is used."""
    back, secret = await _mallorys_flow(secure)
    cookie = f"{HOST_NAME}={secret}; ".encode() + b"\xa0" + f"{HOST_NAME}=planted".encode()
    answer = _raw_get(secure, back, cookie)
    assert answer.startswith(b"HTTP/1.1 403 ") and COOKIE_AMBIGUOUS.encode() in answer
    assert not await secure.connected("mallory") and secure.vendor.token_calls == 0


@pytest.mark.anyio
async def test_the_binding_cookie_padded_with_sp_and_htab_still_binds(secure: Rig) -> None:
    """RFC 6265 §5.2 trims SP and HTAB around a name and a value: that is still the cookie."""
    back, secret = await _mallorys_flow(secure)
    answer = _raw_get(secure, back, f"x=1;\t {HOST_NAME} \t= {secret}\t; y=2".encode())
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert await secure.connected("mallory")


def _header(prefix: bytes, name: str, suffix: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", b"a=1; " + prefix + name.encode() + suffix + b"=" + value + b"; z=2")]


# Any byte but SP and HTAB (which RFC 6265 trims) and ";" (which ends a cookie, so is never
# part of a name); after the name also not "=", which ends the name.
_AROUND = [bytes([b]) for b in range(256) if b not in b" \t;"]
# what Python's str.strip() trims of Latin-1 text besides SP and HTAB: half the draws
_PY_SPACE = [c.encode("latin-1") for c in map(chr, range(256)) if c.isspace() and c not in " \t"]
_BYTE = st.one_of(st.sampled_from(_PY_SPACE), st.sampled_from(_AROUND))
_PREFIX = st.lists(_BYTE, max_size=3).map(b"".join)
_SUFFIX = st.lists(_BYTE.filter(lambda b: b != b"="), max_size=3).map(b"".join)
_VISIBLE = set(range(0x21, 0x7F))


@given(prefix=_PREFIX, suffix=_SUFFIX, name=st.sampled_from([HOST_NAME, PLAIN_NAME]))
@example(prefix=b"\xa0", suffix=b"", name=HOST_NAME)
@example(prefix=b"", suffix=b"\x85", name=HOST_NAME)
@settings(max_examples=400, deadline=None)
def test_no_variant_of_the_name_is_read_as_the_binding_cookie(
    prefix: bytes, suffix: bytes, name: str
) -> None:
    read = named_cookie({"headers": _header(prefix, name, suffix, b"s3cret")}, name)
    if not prefix and not suffix:
        assert read == (["s3cret"], 0)
        return
    assert read.values == []
    invisible_only = not (set(prefix + suffix) & _VISIBLE)
    assert read.lookalikes == (1 if invisible_only else 0)


async def _call(app: Any, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One request straight into the ASGI app (headers as raw bytes): the status."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"gw.example"), *headers],
        "client": ("127.0.0.1", 4711),
        "server": ("gw.example", 443),
    }
    status: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


@given(prefix=_PREFIX, suffix=_SUFFIX)
@example(prefix=b"\xa0", suffix=b"")
@example(prefix=b"\x1c", suffix=b"\x0b")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_variant_of_the_name_binds_a_callback(prefix: bytes, suffix: bytes) -> None:
    """End to end: mallory's state and his real secret under a variant name never finish."""
    if not prefix and not suffix:
        return

    async def attempt() -> None:
        rig = await build()
        started = await rig.flows.begin("crm", "mallory")
        query = f"state={started.state.reveal()}&code=c0de&iss={ISSUER}".encode()
        secret = started.browser_secret.reveal().encode()
        status = await _call(
            rig.app, "/crm/callback", query, _header(prefix, HOST_NAME, suffix, secret)
        )
        assert status == 403
        assert rig.vendor.exchanged == [] and not await rig.connected("mallory")

    anyio.run(attempt)


# --- LOW: one link, unbounded audit appends ---------------------------------------------------


async def _audit_size(store: MemoryStore) -> int:
    return len(await store.read())


async def _disable(store: MemoryStore, user_id: str) -> None:
    user = await store.get_user(user_id)
    assert user is not None
    await store.put_user(user.model_copy(update={"enabled": False}))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["disabled_user", "other_service"])
async def test_one_link_opened_in_a_loop_appends_a_bounded_number_of_events(
    plain: Rig, kind: str
) -> None:
    ticket = await plain.ticket("alice")  # a crm link
    page = "crm"
    if kind == "disabled_user":
        await _disable(plain.store, "alice")
        reason = "user_disabled"
    else:
        page = "calendar"
        reason = "connect_refused"
    before = await _audit_size(plain.store)
    async with httpx.AsyncClient(timeout=10) as client:
        answers = {
            (await client.get(f"{plain.url}/connect/{page}", params={"ticket": ticket})).status_code
            for _ in range(200)
        }
    assert answers == {403}
    assert await _audit_size(plain.store) == before  # nothing appended per request
    assert await plain.guard.audit.flush() == 1  # one summary, however many requests
    appended: list[dict[str, Any]] = [e.event() for e in await plain.store.read()][before:]
    [summary] = appended
    assert summary["action"] == "guard.refusal_summary"
    assert (summary["reason"], summary["status"], summary["service"]) == (reason, 403, page)
    assert summary["detail"]["count"] == 200 and summary["detail"]["source"] == "127.0.0.1"


@pytest.mark.anyio
async def test_a_refusal_that_uses_the_link_up_is_still_its_own_event(plain: Rig) -> None:
    ticket = await plain.ticket("alice")  # a crm link, used at the calendar's form
    form = {"ticket": ticket, "action": "connect"}
    headers = {"origin": plain.origin, **SAME_ORIGIN}
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [
            await client.post(f"{plain.url}/connect/calendar", data=form, headers=headers)
            for _ in range(20)
        ]
    assert answers[0].status_code == 403 and LINK_OTHER_SERVICE in answers[0].text
    assert all(a.status_code == 403 and LINK_GONE in a.text for a in answers[1:])
    [event] = await plain.refusals()  # the first used it up; the rest name no one
    assert (event["actor"]["user"], event["detail"]["step"]) == ("alice", "ticket")
    assert plain.counted() == [(403, "connect_refused", "127.0.0.1", 19)]


@pytest.mark.anyio
@pytest.mark.parametrize("problem", ["disabled", "other_user", "not_signed_in"])
async def test_with_a_sign_in_page_and_form_refusals_that_use_nothing_up_are_counted(
    problem: str,
) -> None:
    rig = await build(identify=identify_by_header)
    ticket = await rig.ticket("alice")
    session = {"x-session-user": "mallory" if problem == "other_user" else "alice"}
    if problem == "not_signed_in":
        session = {}
    if problem == "disabled":
        await _disable(rig.store, "alice")
    before = await _audit_size(rig.store)
    async with rig.client() as client:
        for _ in range(100):
            page = await client.get("/crm", params={"ticket": ticket}, headers=session)
            assert page.status_code == 403
            if problem == "disabled":  # the signed-in user's own form, no link: nothing used
                form = await client.post(
                    "/crm",
                    data={"action": "connect"},
                    headers={"origin": "https://gw.example", **SAME_ORIGIN, **session},
                )
                assert form.status_code == 403
    assert await _audit_size(rig.store) == before
    held = rig.counted()
    assert sum(count for _, _, count in held) == (200 if problem == "disabled" else 100)
    assert len(held) == 1  # one summary event for all of them
