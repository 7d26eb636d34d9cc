"""The path forwarded is the path authorised: a differential test against an independent oracle.

The gateway fronts ``crm`` (base ``/v1``) whose rules are: everything reads by method, except
``/admin`` and ``/contacts/export``, which need ``write``. The agent's key only reads. For a large
generated set of hostile targets (encoded letters in the mount, double encoding, ``;`` parameters,
backslashes, dot segments, case variants, fullwidth and overlong forms, trailing dots and
spaces, format suffixes, ``+`` and ``~``), whatever reaches the vendor is read every way
:mod:`tests.support.path_readings` knows (RFC 3986 normalisation, decoding twice, ``\\`` as
``/``, ``;`` dropped, trailing dots stripped, NFKC, case folding, overlong UTF-8, format
suffixes as Rails and Spring drop them, ``+`` as a trimmed space, a trailing ``~``) and no
reading may land under a ``write`` rule or outside
``/v1``. ``files`` is the same service with ``allow_encoded_slash``.

Volume runs through the ASGI app, with scopes built exactly as uvicorn builds them and an
``httpx.MockTransport`` recording the wire target; a smaller sample runs over real sockets
(uvicorn in front, uvicorn behind). Cases per run: ``AGENTGUARD_FUZZ_EXAMPLES`` (default 200)
for each ASGI-level target, a quarter of it for the socket sample.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import (
    CredentialOwner,
    CredentialScope,
    Guard,
    Level,
    Placement,
    ServiceConfig,
    ServiceRoute,
)
from agentguard.asgi import ProxyApp
from agentguard.asgi._types import ASGIApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeUpstream, make_user
from tests.fuzz.conftest import EXAMPLES, FUZZ
from tests.support.path_readings import readings, rfc_reading, rule_for
from tests.support.servers import LoopbackServer

pytestmark = pytest.mark.anyio

VENDOR_KEY = "vendor-real-key-0123456789abcdef"
BASE = "/v1"
RULES = {"/": Level.READ, "/admin": Level.WRITE, "/contacts/export": Level.WRITE}
MOUNTS = ("/crm", "/files")

#: The mount, spelled every way a client might: encoded letters, case, parameters, slashes.
# fmt: off
SPELLINGS = [
    "/crm", "/cr%6d", "/%63%72%6d", "/CRM", "/Crm", "/crm;x=1", "/crm%2f", "/crm%2e",
    "/crm.", "/crm%20", "/./crm", "/x/../crm", "/files", "/fil%65s", "/files%2F",
]
# fmt: on
MOUNT_SPELLINGS = st.just("/crm") | st.just("/files") | st.sampled_from(SPELLINGS)
#: Path pieces: rule paths in every disguise, and the ambiguity classes of issue 14.
# fmt: off
HOSTILE = [
    "/", "//", ".", "..", "...", "%2e", "%2E%2e", "%2f", "%2F", "%5c", "\\", ";", ";jsessionid=1",
    "..;", "%3b", "%25", "%252e%252e", "%252f", "%", "%zz", "%u002e", "%c0%ae", "%c0%af",
    "%e0%80%ae", "%ef%bd%81", "%ef%bc%a1", "%00", "%09", "%20", "%7f", "%3f", "%23", "admin",
    "ADMIN", "Admin", "aDmIn", "%61dmin", "%41DMIN", "adm%69n", "admin.", "admin..", "admin%2e",
    "admin%20", "admin%09", "%ef%bd%81dmin", "contacts", "CONTACTS", "export", "Export",
    "exp%6frt", "users", "~", "+", ":", "@", "'", "!", "$", "a", "%41", "%7e",
    ".json", ".csv", ".JSON", ".a.b", ".%6Ason", "%2Ejson", "%2B", "~+", ".x~",
]
# fmt: on
PIECES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet="abcXYZ019-_~!$&'()*+,=:@", min_size=1, max_size=5),
    st.integers(0, 255).map(lambda b: f"%{b:02x}"),
)
TAILS = st.lists(PIECES, max_size=9).map(lambda pieces: "/" + "".join(pieces))
TARGETS = st.builds(lambda mount, tail: mount + tail, MOUNT_SPELLINGS, TAILS)
EXAMPLE_TARGETS = [
    "/cr%6d/contacts/%252e%252e/admin/users",  # issue 14 item 3, verbatim
    "/crm/contacts/%2e%2e/admin/users",
    "/crm/contacts/%2F..%2Fadmin",
    "/crm/contacts/..;/admin/users",
    "/crm/admin;x=1/users",
    "/crm/ADMIN/users",
    "/crm/Admin/users",
    "/crm/%41dmin/users",
    "/crm/admin./users",
    "/crm/admin%20/users",
    "/crm/%ef%bd%81dmin/users",
    "/crm/%c0%ae%c0%ae/admin",
    "/crm/contacts%5c..%5cadmin",
    "/crm/contacts/EXPORT",
    "/files/contacts%2F..%2Fadmin",
    "/files/admin%2Fusers",
    "/files/ADMIN%2fusers",
    # issue 14 (second round) item 3: format suffixes and edge characters
    "/crm/admin.json",
    "/crm/contacts/export.csv",
    "/crm/Admin.JSON",
    "/crm/admin.a.b",
    "/crm/admin.json/",
    "/crm/admin.%6Ason",
    "/crm/admin.json?x=1",
    "/crm/contacts/EXPORT.xml",
    "/crm/admin+",
    "/crm/admin%2B",
    "/crm/admin~",
    "/crm/+admin/users",
    "/files/admin.json%2Fusers",
]


def _rule_level(relative: str) -> Level:
    prefix = rule_for(relative, list(RULES))
    assert prefix is not None
    return RULES[prefix]


def check_forwarded(sent: str, status: int, body: bytes, forwarded: list[str]) -> None:
    """The promises, for one target sent with the read-only key."""
    assert status in (200, 307, 400, 403, 404), (sent, status, body[:200])
    if status != 200:
        assert forwarded == [], (sent, status, forwarded)
        if status == 400:
            assert json.loads(body)["error"] == "invalid_request", body
        return
    assert len(forwarded) == 1, (sent, forwarded)
    (wire,) = forwarded
    assert wire == BASE or wire.startswith(BASE + "/"), (sent, wire)
    # Forwarded means what was sent (RFC 3986), with the mount swapped for the base ...
    sent_path = rfc_reading(sent.split("?", 1)[0])
    mount = next(m for m in MOUNTS if sent_path == m or sent_path.startswith(m + "/"))
    assert rfc_reading(wire) == BASE + sent_path[len(mount) :], (sent, wire)
    # ... and no reading of it, however lenient, is outside the base or under a write rule.
    for reading in readings(wire):
        if reading.casefold() == BASE or reading.casefold().startswith(BASE + "/"):
            relative = reading[len(BASE) :] or "/"
            for variant in {relative, relative.casefold(), relative.lower()}:
                assert _rule_level(variant) is Level.READ, (sent, wire, reading)
        else:
            raise AssertionError(f"{sent!r} was forwarded as {wire!r}, read as {reading!r}")


def scope_for(target: str) -> dict[str, object]:
    """An ASGI scope exactly as uvicorn (h11 and httptools) builds it from a request line."""
    raw_path, _, query = target.encode("ascii").partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"gateway.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


@dataclass
class Built:
    app: ASGIApp
    key: str
    proxies: list[ProxyApp]
    forwarded: list[str] = field(default_factory=list)


def services(base_url: str) -> list[ServiceConfig]:
    routes = tuple(ServiceRoute(path=path, level=level) for path, level in RULES.items())
    crm = ServiceConfig(
        name="crm",
        base_url=base_url + BASE,
        placement=Placement.HEADER,
        parameter="X-Api-Key",
        allow_insecure_http=True,
        routes=routes,
    )
    files = crm.model_copy(update={"name": "files", "allow_encoded_slash": True})
    return [crm, files]


async def build(base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> Built:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    swapper = CredentialSwapper(vault, clock=clock)
    guard = Guard(store, clock=clock, services=services(base_url), swapper=swapper)
    swapper.audit = guard.audit
    user = await make_user(store, grants="crm:read files:read")
    keys = await guard.issuer.issue(user.id, "ws-1")
    for name in ("crm", "files"):
        await vault.put(name, CredentialOwner.USER, user.id, VENDOR_KEY, scope=CredentialScope.USER)
    proxies = [ProxyApp(guard, name, transport=transport) for name in ("crm", "files")]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for proxy in proxies:  # close the pooled upstream connections in the server's loop
            await proxy.aclose()

    app = Starlette(routes=[Mount(f"/{p.service.name}", app=p) for p in proxies], lifespan=lifespan)
    return Built(app, keys.access_key.reveal(), proxies)


class _Streamed(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"ok": true}'


@pytest.fixture
async def recorded() -> AsyncIterator[Built]:
    seen: list[str] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode("ascii").split("?", 1)[0])
        return httpx.Response(200, stream=_Streamed())  # streamed, as from a real socket

    built = await build("http://vendor.test", httpx.MockTransport(vendor))
    built.forwarded = seen
    yield built
    for proxy in built.proxies:
        await proxy.aclose()


async def call(built: Built, target: str) -> tuple[int, bytes]:
    scope = scope_for(target)
    scope["headers"] = [*scope["headers"], (b"x-api-key", built.key.encode())]  # type: ignore[misc]
    sent: list[dict[str, object]] = []
    delivered = False

    async def receive() -> dict[str, object]:
        nonlocal delivered
        if delivered:
            await anyio.sleep_forever()
        delivered = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await built.app(scope, receive, send)  # type: ignore[arg-type]
    status = next(int(m["status"]) for m in sent if m["type"] == "http.response.start")  # type: ignore[call-overload]
    body = b"".join(bytes(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")  # type: ignore[call-overload]
    return status, body


@settings(
    FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture]
)
@given(target=TARGETS)
@example(target=EXAMPLE_TARGETS[0])
async def test_forwarded_path_never_reads_as_a_stricter_rule(recorded: Built, target: str) -> None:
    recorded.forwarded.clear()
    status, body = await call(recorded, target)
    event(f"status {status}")
    check_forwarded(target, status, body, list(recorded.forwarded))


@pytest.mark.parametrize("target", EXAMPLE_TARGETS)
async def test_issue_examples_are_refused_before_the_vendor(recorded: Built, target: str) -> None:
    recorded.forwarded.clear()
    status, body = await call(recorded, target)
    assert status in (400, 403), (target, status, body)
    assert recorded.forwarded == []
    check_forwarded(target, status, body, list(recorded.forwarded))


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/crm/contacts", "/v1/contacts"),
        ("/cr%6d/contacts", "/v1/contacts"),  # the mount matched on decoded segments
        ("/crm/%63ontacts/%7Ejo/", "/v1/contacts/~jo/"),  # one canonical spelling forwarded
        ("/crm/contacts/export-history", "/v1/contacts/export-history"),
        ("/crm/administrators", "/v1/administrators"),
        ("/crm/", "/v1/"),
        ("/files/docs%2Fa.txt", "/v1/docs%2Fa.txt"),  # opted in: forwarded encoded
        ("/crm/contacts/export-history.csv", "/v1/contacts/export-history.csv"),
        ("/crm/tags/c++", "/v1/tags/c++"),
        ("/crm/contacts.json", "/v1/contacts.json"),
    ],
)
async def test_plain_targets_are_forwarded_canonically(
    recorded: Built, target: str, forwarded: str
) -> None:
    recorded.forwarded.clear()
    status, body = await call(recorded, target)
    assert status == 200, body
    assert recorded.forwarded == [forwarded]
    check_forwarded(target, status, body, list(recorded.forwarded))


# ---------------------------------------------------------------------------------------------
# The same property over real sockets: uvicorn in front of the gateway and behind it.


@dataclass
class Sockets:
    port: int
    key: str
    vendor: FakeUpstream


@pytest.fixture(scope="module")
def sockets() -> Iterator[Sockets]:
    vendor = FakeUpstream("crm", accepted={VENDOR_KEY}, header="x-api-key")
    with LoopbackServer(vendor) as upstream:
        built = anyio.run(build, upstream.url)
        with LoopbackServer(built.app, lifespan="on") as server:
            yield Sockets(server.port, built.key, vendor)


def exchange(sockets: Sockets, target: str) -> tuple[int, bytes]:
    head = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {sockets.key}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    with socket.create_connection(("127.0.0.1", sockets.port), timeout=5) as sock:
        sock.sendall(head)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


SOCKET_TARGETS = TARGETS.filter(lambda t: all(c.isprintable() and not c.isspace() for c in t))


@settings(FUZZ, max_examples=max(20, EXAMPLES // 4))
@given(target=SOCKET_TARGETS)
@example(target=EXAMPLE_TARGETS[0])
@example(target="/crm/ADMIN/users")
@example(target="/cr%6d/contacts")
def test_forwarded_path_never_reads_as_a_stricter_rule_over_sockets(
    sockets: Sockets, target: str
) -> None:
    sockets.vendor.requests.clear()
    status, body = exchange(sockets, target)
    event(f"status {status}")
    check_forwarded(target, status, body, [r.path for r in sockets.vendor.requests])
