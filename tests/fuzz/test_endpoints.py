"""Fuzzing the endpoints in process: arbitrary requests never produce a 5xx or an exception.

Each target builds its app once (module-level, lazily) and drives it with raw ASGI messages from
``anyio.run``, so an example costs one request, not one app. The request is shaped as uvicorn
would hand it over (``path`` is the percent-decoded ``raw_path``; header names lower-case tokens;
values without CR, LF or NUL), because that is what the library receives in production; the
socket-level oddities uvicorn itself has to refuse are in ``test_smuggling.py``.

Targets:

- the guard (``AgentGuardMiddleware`` over a Starlette app) with arbitrary methods, paths and
  headers, with and without a valid key: only 2xx/4xx;
- ``/oauth/token``, ``/oauth/revoke`` and ``/oauth/introspect`` with arbitrary methods, content
  types and form bodies: only 200, 400, 401, 405 or 413;
- DPoP proofs (validly signed with fuzzed header and claims, or garbage) at a resource and at the
  token endpoint: only 200/400/401/403;
- the credential-swapping proxy over in-process fake upstreams with arbitrary paths, queries,
  headers, bodies and upstream answers: never 5xx except 502/504, the upstream never sees the
  placeholder or a path outside its base URL, and the agent never sees the real credential.
"""

from __future__ import annotations

import json
import posixpath
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote, unquote

import anyio
import anyio.lowlevel
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import event, example, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

from agentguard import (
    CredentialOwner,
    CredentialScope,
    Guard,
    IssuedKeys,
    Placement,
    RouteRule,
    ServiceConfig,
)
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.dpop import DPoPKey, DPoPPolicy, access_key_hash
from agentguard.dpop._jose import b64url_encode, dumps_compact
from agentguard.dpop._jwk import jwk_thumbprint, public_jwk
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, FakeUpstream, RecordedRequest, make_user
from tests.asgi.conftest import INTROSPECTION_SECRET, build_app
from tests.fuzz.conftest import FUZZ

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
ORIGIN = "http://testserver"

# ---------------------------------------------------------------------------------------------
# Driving an ASGI app directly


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def call(
    app: ASGIApp,
    method: str,
    raw_target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: list[bytes] | None = None,
) -> Reply:
    """One request as uvicorn would pass it: ``path`` is the decoded ``raw_path``."""
    raw_path, _, query = raw_target.partition(b"?")
    chunks = list(body or [b""])
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await anyio.lowlevel.checkpoint()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, f"the app sent {len(starts)} response starts"
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(starts[0]["status"], list(starts[0].get("headers", [])), content)


# ---------------------------------------------------------------------------------------------
# Request strategies, in the shapes an HTTP/1.1 server lets through

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
TOKEN = st.text(TCHAR, min_size=1, max_size=16)
METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
    st.text(TCHAR.upper() + "ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12),
)
#: Header values h11 accepts: visible ASCII, space/tab inside, obs-text; no CR, LF, NUL or other
#: controls. One ``binary`` draw with the forbidden bytes deleted (cheaper than byte-by-byte).
_CONTROLS = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
HEADER_VALUES = st.binary(max_size=80).map(lambda b: b.translate(None, _CONTROLS).strip(b" \t"))
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "dpop",
            "content-type",
            "content-length",
            "transfer-encoding",
            "connection",
            "x-request-id",
            "x-api-key",
            "x-forwarded-host",
            "x-forwarded-proto",
            "forwarded",
            "cookie",
            "host",
            "expect",
            "te",
            "upgrade",
        ]
    ),
    TOKEN,
).map(str.encode)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6)
#: Path pieces: plain, dot segments, encoded dots and slashes, doubled slashes, odd bytes.
PATH_PIECES = st.one_of(
    st.sampled_from(
        [
            "/",
            "//",
            ".",
            "..",
            "%2e",
            "%2E%2E",
            "%2f",
            "%2F",
            "%5c",
            "\\",
            "%00",
            "%",
            "%zz",
            "%25",
            "%252e%252e",
            ";",
            "@",
            ":",
            "#",
            "~",
            "%c0%ae",
            "%ff",
            "%e2%80%ae",
            "crm",
            "v2",
            "contacts",
            "automations",
            "projects",
            "oauth",
            "healthz",
            "http:",
            "evil.example",
        ]
    ),
    st.text("abcXYZ019-._~!$&'()*+,;=:@", min_size=1, max_size=8),
)
PATH_TAILS = st.lists(PATH_PIECES, max_size=8).map("".join)
QUERIES = st.one_of(
    st.just(""),
    st.text("abc=&%+;/?:@!$'()*,~-._012" + "ABC", max_size=40),
)


def target(prefix: str, tail: str, query: str) -> bytes:
    raw = prefix + tail
    return (raw + ("?" + query if query else "")).encode("ascii")


def allowed(status: int, *extra: int) -> bool:
    return 200 <= status < 500 or status in extra


# ---------------------------------------------------------------------------------------------
# The guarded app (tests/asgi/conftest.build_app) with DPoP accepted


@dataclass
class GuardedApp:
    clock: FakeClock
    store: MemoryStore
    guard: Guard
    app: ASGIApp
    bearer: IssuedKeys
    dpop_key: DPoPKey
    bound: IssuedKeys

    def now(self) -> int:
        return int(self.clock.now().timestamp())


async def _guarded(nonces: bool) -> GuardedApp:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    policy = (
        DPoPPolicy(public_origin=ORIGIN, nonce_secret=b"r" * 32, token_nonce_secret=b"t" * 32)
        if nonces
        else DPoPPolicy(public_origin=ORIGIN)
    )
    guard = Guard(
        store,
        rules=[RouteRule("/crm", service="crm"), RouteRule("/projects", service="projects")],
        clock=clock,
        dpop=policy,
    )
    user = await make_user(store, grants="crm:write projects:read")
    dpop_key = DPoPKey.generate()
    bearer = await guard.issuer.issue(user.id, "ws-1")
    bound = await guard.issuer.issue(user.id, "ws-1", jkt=dpop_key.thumbprint)
    return GuardedApp(clock, store, guard, build_app(guard), bearer, dpop_key, bound)


@cache
def guarded(name: str, nonces: bool = False) -> GuardedApp:
    """One app per target (``name``), built once: targets must not share keys they burn."""
    return anyio.run(_guarded, nonces)


@FUZZ
@given(
    method=METHODS,
    prefix=st.sampled_from(["/crm/contacts", "/crm", "/projects/list", "/healthz", "/oauth", ""]),
    tail=PATH_TAILS,
    query=QUERIES,
    headers=HEADERS,
    credential=st.sampled_from(["none", "bearer", "bound-as-bearer", "dpop"]),
    body=st.lists(st.binary(max_size=64), max_size=3),
)
@example(
    method="GET",
    prefix="/healthz",
    tail="/../crm/contacts",
    query="",
    headers=[],
    credential="none",
    body=[],
)
@example(
    method="GET",
    prefix="/oauth",
    tail="/%2e%2e/crm/contacts",
    query="",
    headers=[],
    credential="none",
    body=[],
)
def test_guard_end_to_end_never_5xx(
    *,
    method: str,
    prefix: str,
    tail: str,
    query: str,
    headers: list[tuple[bytes, bytes]],
    credential: str,
    body: list[bytes],
) -> None:
    setup = guarded("guard")
    raw = target(prefix, tail, query)
    extra: list[tuple[bytes, bytes]] = []
    if credential == "bearer":
        extra = [(b"authorization", b"Bearer " + setup.bearer.access_key.reveal().encode())]
    elif credential == "bound-as-bearer":
        extra = [(b"authorization", b"Bearer " + setup.bound.access_key.reveal().encode())]
    elif credential == "dpop":
        access = setup.bound.access_key.reveal()
        url = ORIGIN + raw.decode().partition("?")[0]
        proof = setup.dpop_key.proof(method, url, access_key=access, iat=setup.now())
        extra = [(b"authorization", b"DPoP " + access.encode()), (b"dpop", proof.encode())]
    reply = anyio.run(call, setup.app, method, raw, extra + headers, body)
    if reply.status == 307:  # Starlette's redirect_slashes, after the guard let the path by
        location = dict(reply.headers)[b"location"]
        assert location.startswith(ORIGIN.encode() + b"/"), location
        return
    event(f"status {reply.status}")
    assert 200 <= reply.status < 300 or 400 <= reply.status < 500, (reply.status, reply.body[:300])
    path = unquote(raw.decode().partition("?")[0])
    if reply.status == 200 and path.startswith("/crm"):
        assert credential != "none"  # a guarded route answered only with a key
    if reply.status < 300:
        assert ".." not in path.split("/")  # no dot segment ever reached a handler


# ---------------------------------------------------------------------------------------------
# The OAuth endpoints

FORM_NAMES = st.sampled_from(
    ["grant_type", "refresh_token", "token", "scope", "token_type_hint", "client_id", "x"]
)
FORM_VALUES = st.one_of(
    st.sampled_from(["refresh_token", "authorization_code", "", "crm:read", "crm:write x"]),
    st.text(max_size=30),
)


@st.composite
def form_bodies(draw: st.DrawFn, refresh: str, access: str) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=300))
    pairs = draw(
        st.lists(
            st.tuples(
                FORM_NAMES,
                st.one_of(FORM_VALUES, st.sampled_from([refresh, access, refresh + "x"])),
            ),
            max_size=5,
        )
    )
    text = "&".join(
        quote(n, safe="") + "=" + quote(v.encode("utf-8", "surrogatepass"), safe="")
        for n, v in pairs
    )
    return text.encode("ascii")


CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            b"application/x-www-form-urlencoded",
            b"application/x-www-form-urlencoded; charset=utf-8",
            b"APPLICATION/X-WWW-FORM-URLENCODED",
            b"application/json",
            b"multipart/form-data; boundary=x",
            b"text/plain",
            b"",
        ]
    ),
    HEADER_VALUES,
)


@FUZZ
@given(
    method=st.integers(0, 9).flatmap(lambda n: METHODS if n == 0 else st.just("POST")),
    endpoint=st.sampled_from(["/oauth/token", "/oauth/revoke", "/oauth/introspect"]),
    slash=st.booleans(),
    content_type=st.integers(0, 3).flatmap(
        lambda n: (
            st.just(b"application/x-www-form-urlencoded")
            if n
            else st.one_of(st.none(), CONTENT_TYPES)
        )
    ),
    length=st.sampled_from(["none", "right", "wrong", "huge", "garbage", "twice"]),
    authorization=st.sampled_from(["none", "secret", "wrong", "garbage"]),
    headers=HEADERS,
    chunks=st.integers(1, 3),
    data=st.data(),
)
@example(
    method="POST",
    endpoint="/oauth/token",
    slash=False,
    content_type=b"application/x-www-form-urlencoded",
    length="twice",
    authorization="none",
    headers=[],
    chunks=1,
    data=None,
)
def test_oauth_endpoints_answer_only_documented_statuses(
    *,
    method: str,
    endpoint: str,
    slash: bool,
    content_type: bytes | None,
    length: str,
    authorization: str,
    headers: list[tuple[bytes, bytes]],
    chunks: int,
    data: st.DataObject | None,
) -> None:
    setup = guarded("oauth")
    refresh, access = setup.bearer.refresh_key.reveal(), setup.bearer.access_key.reveal()
    body = (
        data.draw(form_bodies(refresh, access))
        if data is not None
        else b"grant_type=refresh_token&refresh_token=x"
    )
    extra: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        extra.append((b"content-type", content_type))
    size = str(len(body)).encode()
    extra += {
        "none": [],
        "right": [(b"content-length", size)],
        "wrong": [(b"content-length", str(max(len(body) - 3, 0)).encode())],
        "huge": [(b"content-length", b"99999999999999999999")],
        "garbage": [(b"content-length", b"-1")],
        "twice": [(b"content-length", size), (b"content-length", b"0")],
    }[length]
    extra += {
        "none": [],
        "secret": [(b"authorization", b"Bearer " + INTROSPECTION_SECRET.encode())],
        "wrong": [(b"authorization", b"Bearer " + b"w" * 43)],
        "garbage": [(b"authorization", b"Basic \xff")],
    }[authorization]
    step = max(1, len(body) // chunks)
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    raw = (endpoint + ("/" if slash else "")).encode()
    reply = anyio.run(call, setup.app, method, raw, extra + headers, pieces)
    event(f"status {reply.status}")
    assert reply.status in (200, 400, 401, 405, 413), (reply.status, reply.body[:300])
    if reply.status != 200 or not reply.body:
        return
    document = json.loads(reply.body)
    assert isinstance(document, dict)
    if "error" in document:
        assert INTROSPECTION_SECRET not in reply.body.decode()


def test_oauth_form_cap_is_8_kib() -> None:
    """The OAuth form cap (OAuthApp ``max_body``, 8192 by default), by length and by stream."""
    setup = guarded("oauth-cap")
    form = (b"content-type", b"application/x-www-form-urlencoded")
    at_cap = b"grant_type=refresh_token&refresh_token=" + b"a" * (8192 - 39)
    over = at_cap + b"a"
    assert len(at_cap) == 8192

    async def run() -> list[int]:
        return [
            (await call(setup.app, "POST", b"/oauth/token", [form], [at_cap])).status,
            (await call(setup.app, "POST", b"/oauth/token", [form], [over])).status,
            (
                await call(setup.app, "POST", b"/oauth/token", [form], [over[:5000], over[5000:]])
            ).status,
            (
                await call(
                    setup.app,
                    "POST",
                    b"/oauth/token",
                    [form, (b"content-length", b"8193")],
                    [b"x"],
                )
            ).status,
        ]

    assert anyio.run(run) == [400, 413, 413, 413]


# ---------------------------------------------------------------------------------------------
# DPoP proofs at a resource and at the token endpoint

_SIGNER = ec.generate_private_key(ec.SECP256R1())
_SIGNER_JWK = dict(public_jwk(_SIGNER.public_key()))
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def sign_es256(header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = (
        b64url_encode(dumps_compact(header)) + "." + b64url_encode(dumps_compact(claims))
    )
    r, s = decode_dss_signature(_SIGNER.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@st.composite
def proofs(draw: st.DrawFn, method: str, url: str, access: str | None, now: int) -> str:
    """A proof: garbage, or ES256-signed with a fuzzed header and fuzzed claims."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200))
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _SIGNER_JWK}
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(12),
        "htm": method,
        "htu": url,
        "iat": now,
    }
    if access is not None:
        claims["ath"] = access_key_hash(access)
    for name in draw(st.sets(st.sampled_from(["typ", "alg", "jwk", "kid", "crit"]), max_size=2)):
        header[name] = draw(
            st.one_of(
                JSON_SCALARS,
                st.sampled_from(["JWT", "none", "HS256", "EdDSA", "dpop+JWT"]),
                st.just({**_SIGNER_JWK, "d": "AAAA"}),
                st.just({"kty": "oct", "k": "AAAA"}),
                st.just({k: v for k, v in _SIGNER_JWK.items() if k != "y"}),
            )
        )
    for name in draw(st.sets(st.sampled_from([*sorted(claims), "nonce", "extra"]), max_size=3)):
        claims[name] = draw(
            st.one_of(
                JSON_SCALARS,
                st.sampled_from(
                    [
                        now + 301,
                        now - 301,
                        url.upper(),
                        url + "/",
                        "http://evil.test/crm/contacts",
                        "GET",
                        "get",
                        "POST",
                        "replayed-jti",
                    ]
                ),
                st.lists(JSON_SCALARS, max_size=2),
            )
        )
    if draw(st.integers(0, 9)) == 0:
        claims.pop(draw(st.sampled_from(sorted(claims))), None)
    return sign_es256(header, claims)


@FUZZ
@given(
    at_token_endpoint=st.booleans(),
    nonces=st.booleans(),
    bound=st.booleans(),
    scheme=st.sampled_from(["DPoP", "Bearer", "dpop", "DPOP"]),
    extra_proof=st.booleans(),
    data=st.data(),
)
def test_dpop_proofs_at_resource_and_token_endpoint(
    *,
    at_token_endpoint: bool,
    nonces: bool,
    bound: bool,
    scheme: str,
    extra_proof: bool,
    data: st.DataObject,
) -> None:
    setup = guarded("dpop", nonces)

    async def run() -> int:
        jkt = _thumbprint() if bound else None
        keys = await setup.guard.issuer.issue("user-1", "ws-1", jkt=jkt)
        now = setup.now()
        if at_token_endpoint:
            url = ORIGIN + "/oauth/token"
            proof = data.draw(proofs("POST", url, None, now))
            form = b"grant_type=refresh_token&refresh_token=" + keys.refresh_key.reveal().encode()
            headers = [
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"dpop", proof.encode()),
            ]
            if extra_proof:
                headers.append((b"dpop", proof.encode()))
            reply = await call(setup.app, "POST", b"/oauth/token", headers, [form])
        else:
            method = data.draw(st.sampled_from(["GET", "POST", "DELETE"]))
            access = keys.access_key.reveal()
            proof = data.draw(proofs(method, ORIGIN + "/crm/contacts", access, now))
            headers = [
                (b"authorization", f"{scheme} {access}".encode()),
                (b"dpop", proof.encode()),
            ]
            if extra_proof:
                headers.append((b"dpop", proof.encode()))
            reply = await call(setup.app, method, b"/crm/contacts", headers)
        return reply.status

    status = anyio.run(run)
    event(f"status {status}")
    assert status in (200, 400, 401, 403), status


@cache
def _thumbprint() -> str:
    return jwk_thumbprint(_SIGNER_JWK)


# ---------------------------------------------------------------------------------------------
# The proxy over in-process fake upstreams


@dataclass
class ProxyGateway:
    app: ASGIApp
    guard: Guard
    key: str
    upstreams: dict[str, FakeUpstream]
    bases: dict[str, str]
    credentials: dict[str, str]
    proxies: list[ProxyApp]
    scripted: list[tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=list)


async def _proxy_gateway() -> ProxyGateway:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    credentials = {
        "crm": "crm-real-" + secrets.token_urlsafe(16),
        "automations": "auto-real-" + secrets.token_urlsafe(16),
        "projects": "proj-real-" + secrets.token_urlsafe(16),
    }
    bases = {"crm": "/v2", "automations": "", "projects": "/api/v1"}
    services = [
        ServiceConfig(
            name="crm",
            base_url="http://crm.upstream/v2",
            placement=Placement.HEADER,
            parameter="X-Api-Key",
            allow_insecure_http=True,
            forward_headers=True,
        ),
        ServiceConfig(
            name="automations",
            base_url="http://automations.upstream",
            placement=Placement.QUERY,
            parameter="api_key",
            allow_insecure_http=True,
        ),
        ServiceConfig(
            name="projects", base_url="http://projects.upstream/api/v1/", allow_insecure_http=True
        ),
    ]
    swapper = CredentialSwapper(vault, clock=clock)
    guard = Guard(store, clock=clock, services=services, swapper=swapper)
    swapper.audit = guard.audit
    user = await make_user(store, grants="crm:write automations:write projects:write")
    keys = await guard.issuer.issue(user.id, "ws-1")
    gateway = ProxyGateway(
        app=Starlette(),
        guard=guard,
        key=keys.access_key.reveal(),
        upstreams={},
        bases=bases,
        credentials=credentials,
        proxies=[],
    )

    async def respond(request: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        if gateway.scripted:
            return gateway.scripted.pop()
        return 200, [("content-type", "application/json")], b'{"ok": true}'

    header_of = {"crm": "x-api-key", "automations": "authorization", "projects": "authorization"}
    for service in services:
        name = service.name
        fake = FakeUpstream(
            name,
            accepted={credentials[name]},
            header=header_of[name],
            query="api_key" if name == "automations" else None,
            respond=respond,
        )
        gateway.upstreams[name] = fake
        await vault.put(
            name, CredentialOwner.USER, user.id, credentials[name], scope=CredentialScope.USER
        )
        proxy = ProxyApp(guard, name, transport=httpx.ASGITransport(app=fake))
        gateway.proxies.append(proxy)
    gateway.app = Starlette(
        routes=[Mount(f"/{proxy.service.name}", app=proxy) for proxy in gateway.proxies]
    )
    return gateway


@cache
def proxy_gateway() -> ProxyGateway:
    return anyio.run(_proxy_gateway)


def placeholder_headers(service: str, key: str) -> tuple[list[tuple[bytes, bytes]], str]:
    """Where ``service``'s agent puts the placeholder: (headers, query parameter)."""
    if service == "crm":
        return [(b"x-api-key", key.encode())], ""
    if service == "automations":
        return [], "api_key=" + key
    return [(b"authorization", b"Bearer " + key.encode())], ""


def escapes(path: str, base: str) -> bool:
    """Whether the raw upstream ``path`` leaves ``base`` once decoded and normalised."""
    raw = path.partition("?")[0]
    if base and raw != base and not raw.startswith(base + "/"):
        return True
    decoded = unquote(raw)
    parts = decoded.split("/")
    if ".." in parts or "." in parts:
        return True
    normal = posixpath.normpath(decoded) if decoded else "/"
    return bool(base) and normal != base and not normal.startswith(base + "/")


UPSTREAM_ANSWERS = st.tuples(
    st.sampled_from([200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 409, 429]),
    st.lists(
        st.tuples(
            st.sampled_from(["content-type", "set-cookie", "x-thing", "server"]),
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
        )
        | st.tuples(
            st.just("location"),  # well-formed only: see test_malformed_upstream_location
            st.sampled_from(["/v2/elsewhere", "https://vendor.test/x", "?page=2", "", "x"]),
        ),
        max_size=3,
    ),
    st.binary(max_size=200),
    st.sampled_from(["none", "body", "header", "location"]),
)


@FUZZ
@given(
    mount=st.sampled_from(["crm", "automations", "projects"]),
    method=METHODS,
    first_slash=st.integers(0, 9).map(bool),
    tail=PATH_TAILS,
    query=QUERIES,
    headers=HEADERS,
    placeholder_elsewhere=st.sampled_from(["no", "authorization", "dpop", "twice", "missing"]),
    body=st.lists(st.binary(max_size=200), max_size=3),
    answer=UPSTREAM_ANSWERS,
)
@example(
    mount="crm",
    method="GET",
    first_slash=False,
    tail="/%2e%2e/%2e%2e/automations",
    query="",
    headers=[],
    placeholder_elsewhere="no",
    body=[],
    answer=(200, [], b"", "none"),
)
@example(
    mount="crm",
    method="GET",
    first_slash=False,
    tail="/..%2F..%2Fadmin",
    query="",
    headers=[],
    placeholder_elsewhere="no",
    body=[],
    answer=(200, [], b"", "body"),
)
def test_proxy_never_leaks_never_escapes_never_5xx(
    *,
    mount: str,
    method: str,
    first_slash: bool,
    tail: str,
    query: str,
    headers: list[tuple[bytes, bytes]],
    placeholder_elsewhere: str,
    body: list[bytes],
    answer: tuple[int, list[tuple[str, str]], bytes, str],
) -> None:
    gateway = proxy_gateway()
    key = gateway.key
    place, key_query = placeholder_headers(mount, key)
    if placeholder_elsewhere == "authorization":
        place.append((b"authorization", b"Bearer " + key.encode()))
    elif placeholder_elsewhere == "dpop":
        place.append((b"dpop", key.encode()))
    elif placeholder_elsewhere == "twice":
        place = place + place
        key_query = "&".join(q for q in (key_query, key_query) if q)
    elif placeholder_elsewhere == "missing":
        place, key_query = [], ""
    full_query = "&".join(q for q in (query, key_query) if q)
    real = gateway.credentials[mount]
    status, answer_headers, answer_body, echo = answer
    if echo == "body":
        answer_body += real.encode()
    elif echo == "header":
        answer_headers = [*answer_headers, ("x-echo", real)]
    elif echo == "location":
        answer_headers = [*answer_headers, ("location", "https://v.test/?k=" + real)]
    gateway.scripted[:] = [(status, answer_headers, answer_body)]
    for fake in gateway.upstreams.values():
        fake.requests.clear()

    raw = target(f"/{mount}/" if first_slash else f"/{mount}", tail, full_query)
    reply = anyio.run(call, gateway.app, method, raw, place + headers, body)

    event(f"status {reply.status}")
    event(
        "reached the upstream" if any(f.requests for f in gateway.upstreams.values()) else "refused"
    )
    assert allowed(reply.status, 502, 504), (reply.status, reply.body[:300])
    everything = reply.body + b"".join(n + b": " + v for n, v in reply.headers)
    for secret in gateway.credentials.values():
        assert secret.encode() not in everything, "a real credential reached the agent"
    for name, fake in gateway.upstreams.items():
        for seen in fake.requests:
            assert name == mount, "a request reached another service's upstream"
            assert key not in seen.raw, "the placeholder reached the upstream"
            assert not escapes(seen.path, gateway.bases[name]), seen.path


@pytest.mark.parametrize(
    ("mount", "headers", "query"),
    [
        ("projects", [(b"x-api-key", b"{key}")], ""),  # Bearer service; key also in a header
        ("crm", [(b"x-copy", b"{key}")], ""),  # header service; key also in another header
        ("crm", [], "api_key={key}"),  # header service; key also in the query
    ],
)
def test_proxy_strips_a_placeholder_copied_elsewhere(
    mount: str, headers: list[tuple[bytes, bytes]], query: str
) -> None:
    """The proxy strips the placeholder from its own place, ``Authorization`` and ``DPoP`` only.

    A copy the agent sends anywhere else (another header, the query) reaches the vendor: the
    vendor then holds a live gateway key. Found by the proxy fuzz target; reported, not fixed
    here. When the proxy strips every copy this test XPASSes and the marker must go.
    """
    gateway = proxy_gateway()
    key = gateway.key
    for fake in gateway.upstreams.values():
        fake.requests.clear()
    gateway.scripted[:] = []
    place, key_query = placeholder_headers(mount, key)
    copies = [(n, v.replace(b"{key}", key.encode())) for n, v in headers]
    full_query = "&".join(q for q in (key_query, query.replace("{key}", key)) if q)
    raw = target(f"/{mount}/items", "", full_query)
    reply = anyio.run(call, gateway.app, "GET", raw, place + copies, None)
    seen = gateway.upstreams[mount].requests
    assert reply.status == 400 or not seen or key not in seen[0].raw


@pytest.mark.parametrize("location", ["A:0", "mailto:ops@vendor.test", "x:y"])
def test_malformed_upstream_location_is_a_502(location: str) -> None:
    """An upstream 3xx whose ``Location`` httpx cannot parse must not crash the proxy.

    ``ProxyApp`` sends with ``follow_redirects=False``, but httpx still builds
    ``response.next_request`` for a 3xx and raises ``httpx.InvalidURL`` (not an
    ``httpx.HTTPError``), which ``ProxyApp.__call__`` does not catch: the ASGI server answers 500
    with a traceback in its log. Found by the proxy fuzz target; reported, not fixed here.
    """
    gateway = proxy_gateway()
    gateway.scripted[:] = [(301, [("location", location)], b"")]
    place, _ = placeholder_headers("crm", gateway.key)
    try:
        reply = anyio.run(call, gateway.app, "GET", b"/crm/items", place, None)
    finally:
        gateway.scripted[:] = []
    assert reply.status in (301, 502)
