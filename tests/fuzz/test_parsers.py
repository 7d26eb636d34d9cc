"""Fuzzing the parsers: whatever the input, each raises only its own documented error type.

Targets: the key parser, ``Authorization`` parsing, :class:`GuardRequest` built from arbitrary
ASGI scopes, the TOML config loader, the agent's credentials file, the JWT access-token
resolver, and ``verify_log`` (which never raises on log content).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import example, given
from hypothesis import strategies as st

from agentguard import KeyKind, generate_key, looks_like_key, parse_key
from agentguard._request import GuardRequest, parse_authorization
from agentguard.asgi._scope import request_from_scope, route_path
from agentguard.audit import Action, AuditEntry, AuditEvent, Decision, leaf_hash, verify_log
from agentguard.audit._chain import GENESIS_PREV, seal
from agentguard.client import CredentialsFileError
from agentguard.client._credentials_file import dump_credentials, parse_credentials
from agentguard.config import load_settings
from agentguard.dpop._jose import b64url_encode
from agentguard.dpop._jwk import public_jwk
from agentguard.errors import (
    ConfigurationError,
    InvalidRequest,
    InvalidToken,
    MalformedKey,
    MissingCredentials,
    ServiceUnavailable,
)
from agentguard.resolvers import JWTAccessTokenResolver
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.client.test_credentials_file import same_document
from tests.fuzz.conftest import FUZZ

# ---------------------------------------------------------------------------------------------
# Shared strategies

ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
#: Text a real ASGI server can hand over as ``path`` (percent-decoded UTF-8, no surrogates).
PATH_TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [b"authorization", b"dpop", b"host", b"x-request-id", b"content-type", b"content-length"]
    ),
    st.binary(min_size=1, max_size=20),
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=120)), max_size=6)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------------------------------------
# Key parser


def _mutated_key(data: st.DataObject) -> str:
    key = generate_key(data.draw(st.sampled_from(list(KeyKind)))).reveal()
    position = data.draw(st.integers(0, len(key)))
    replacement = data.draw(st.text(max_size=3))
    cut = data.draw(st.integers(0, 3))
    return key[:position] + replacement + key[position + cut :]


KEY_REFUSALS = {
    "the key must be a string",
    "an agentguard key is exactly 55 characters long",
    "an agentguard key starts with 'ag_at_' or 'ag_rt_'",
    "an agentguard key contains only base62 characters after its prefix",
    "the key's random part is out of range",
    "the key's checksum does not match; it was mistyped or truncated",
}


@FUZZ
@given(
    value=st.one_of(
        st.text(max_size=80),
        st.text(ASCII, min_size=50, max_size=60).map(lambda t: "ag_at_" + t),
        st.binary(max_size=60),
        st.none(),
        st.integers(),
    ),
    data=st.data(),
)
def test_key_parser_raises_only_malformed_key(value: object, data: st.DataObject) -> None:
    for candidate in (value, _mutated_key(data)):
        message = ""
        try:
            parsed = parse_key(candidate)
        except MalformedKey as error:
            message = str(error)
        if message:
            # Never echoes the key: every refusal is one of the fixed sentences (a candidate such
            # as "agentgua" may still be a substring of one of them).
            assert message in KEY_REFUSALS, message
        else:
            assert isinstance(candidate, str)
            assert candidate.startswith(("ag_at_", "ag_rt_"))
            assert parsed.kind in (KeyKind.ACCESS, KeyKind.REFRESH)
        if isinstance(candidate, str):
            looks_like_key(candidate)


# ---------------------------------------------------------------------------------------------
# Authorization parsing


AUTH_VALUES = st.one_of(
    st.binary(max_size=120),
    st.builds(
        lambda scheme, space, key: scheme + space + key,
        st.sampled_from([b"Bearer", b"bearer", b"DPoP", b"dpop", b"Basic", b""]),
        st.sampled_from([b" ", b"  ", b"\t", b"", b" \r\n "]),
        st.binary(max_size=80),
    ),
)


@FUZZ
@given(
    values=st.lists(AUTH_VALUES, max_size=3),
    schemes=st.sampled_from([("bearer",), ("bearer", "dpop"), ("dpop",)]),
)
def test_authorization_parser_raises_only_library_errors(
    values: list[bytes], schemes: tuple[str, ...]
) -> None:
    request = GuardRequest("GET", "/", headers=[(b"authorization", v) for v in values])
    try:
        credentials = parse_authorization(request, schemes)
    except (MissingCredentials, InvalidRequest):
        return
    assert len(values) == 1
    assert credentials.scheme in schemes
    assert credentials.key and " " not in credentials.key


# ---------------------------------------------------------------------------------------------
# GuardRequest from arbitrary ASGI scopes


@st.composite
def asgi_scopes(draw: st.DrawFn) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": draw(st.sampled_from(["http", "websocket"])),
        "path": draw(PATH_TEXT),
        "headers": draw(HEADERS),
    }
    if draw(st.booleans()):
        scope["method"] = draw(st.text(ASCII, max_size=12))
    if draw(st.booleans()):
        scope["raw_path"] = draw(st.binary(max_size=80))
    if draw(st.booleans()):
        scope["query_string"] = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        scope["root_path"] = draw(st.one_of(st.just("/crm"), PATH_TEXT))
    if draw(st.booleans()):
        scope["scheme"] = draw(st.sampled_from(["http", "https", "ws", "wss", ""]))
    return scope


@FUZZ
@given(scope=asgi_scopes())
def test_guard_request_from_any_scope(scope: dict[str, Any]) -> None:
    request = request_from_scope(scope)
    relative = route_path(scope)
    assert isinstance(relative, str)
    assert len(request.audit_path) <= 1024
    assert isinstance(request.has_dot_segments(), bool)
    assert 1 <= len(request.request_id) <= 64
    assert request.request_id.isascii() and "\r" not in request.request_id
    request.header(b"authorization")
    request.header_values(b"host")


# ---------------------------------------------------------------------------------------------
# Config loader

_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="agentguard-fuzz-config-"))

SECTION_NAMES = [
    "store",
    "dpop",
    "keys",
    "audit",
    "server",
    "logging",
    "secrets",
    "minters.crm",
    "minters",
    "bogus",
]
FIELD_NAMES = [
    "url",
    "public_origin",
    "enabled",
    "required",
    "trusted_hosts",
    "access_ttl",
    "refresh_ttl",
    "instance",
    "timeout",
    "origin",
    "checkpoint_dir",
    "checkpoint_key_file",
    "host",
    "port",
    "level",
    "format",
    "token_url",
    "kek_file",
    "kek",
    "name",
    "base_url",
    "placement",
    "parameter",
    "allow_insecure_http",
    "iat_window",
]


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string for these characters


TOML_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))
    ),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(_toml_string),
    st.sampled_from(
        [
            '"memory://"',
            '"sqlite:///x.db"',
            '"https://api.example.com"',
            '"http://127.0.0.1:9"',
            '"debug"',
            '"json"',
            '"header"',
            "1979-05-27T07:32:00Z",
            "[]",
            '["a", "b"]',
            "{}",
        ]
    ),
)


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["[{}]", "[[{}]]"]))
            section = draw(st.sampled_from([*SECTION_NAMES, "services"]))
            lines.append(kind.format(section))
        for _ in range(draw(st.integers(0, 4))):
            name = draw(st.sampled_from(FIELD_NAMES))
            lines.append(f"{name} = {draw(TOML_SCALARS)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(
    text=st.one_of(toml_documents(), st.text(max_size=200)),
    environ=st.dictionaries(
        st.sampled_from(
            [
                "AGENTGUARD_STORE_URL",
                "AGENTGUARD_PUBLIC_ORIGIN",
                "AGENTGUARD_SERVER_PORT",
                "AGENTGUARD_KEK",
                "AGENTGUARD_DPOP_ENABLED",
                "AGENTGUARD_LOGGING_LEVEL",
            ]
        ),
        st.text(ASCII, max_size=20),
        max_size=2,
    ),
)
@example(text='public_origin = "https://a.test"\n[store]\nurl = "memory://"\n', environ={})
@example(text="[[services]]\nname = 1\n", environ={})
@example(text="a = 1\na = 2\n", environ={})
@example(text="\x00", environ={})
@example(text="[server]\nport = 9001\n", environ={"AGENTGUARD_SERVER_PORT": ""})
@example(text='[audit]\ncheckpoint_dir = "~0"\n', environ={})  # pathlib's RuntimeError, once
def test_config_loader_raises_only_settings_errors(text: str, environ: dict[str, str]) -> None:
    path = _CONFIG_DIR / f"agentguard-{os.getpid()}.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        settings = load_settings(path, environ=environ)
    except ConfigurationError:  # SettingsError and its parent, raised by the settings models
        return
    # accepted: an environment variable, when given, wins over the file; an empty one is unset
    port = environ.get("AGENTGUARD_SERVER_PORT")
    if port:  # "8", " 8 ", "+8", "8.0" and "1_000" all read
        assert settings.server.port == float(port)
    elif port == "":
        without = {name: value for name, value in environ.items() if value}
        assert settings.server.port == load_settings(path, environ=without).server.port


# ---------------------------------------------------------------------------------------------
# Credentials file


def _credentials_document(draw: st.DrawFn) -> dict[str, Any]:
    key = st.one_of(st.text(max_size=30), st.just(generate_key(KeyKind.ACCESS).reveal()))
    when = st.one_of(
        st.sampled_from(
            ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00+00:00", "2026-01-01T00:00:00", "x"]
        ),
        st.integers(),
        st.floats(),
    )
    candidates: dict[str, st.SearchStrategy[Any]] = {
        "version": st.one_of(st.just(1), st.integers(), st.text(max_size=3)),
        "token_url": st.sampled_from(
            ["https://a.test/oauth/token", "http://a.test/t", "ftp://x", "", "https://"]
        ),
        "resource_url": st.one_of(st.none(), st.just("https://a.test/mcp")),
        "token_type": st.sampled_from(["DPoP", "Bearer", "bearer", ""]),
        "access_key": key,
        "refresh_key": key,
        "issued_at": when,
        "expires_at": when,
        "dpop_key": st.one_of(
            st.none(),
            st.text(max_size=40),
            st.just("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ),
        "extra": st.integers(),
    }
    names = draw(st.sets(st.sampled_from(sorted(candidates))))
    return {name: draw(candidates[name]) for name in names}


@st.composite
def credentials_bytes(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.binary(max_size=300))
    document = _credentials_document(draw)
    text = json.dumps(document, allow_nan=True)
    if choice == 2:  # damage the JSON a little
        position = draw(st.integers(0, len(text)))
        text = text[:position] + draw(st.text(max_size=4)) + text[position:]
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(data=credentials_bytes())
@example(data=b"[" * 100_000)
@example(data=b'{"version": 1, "version": 1}')
@example(data=b'{"version": NaN}')
@example(data=b"\xff\xfe")
def test_credentials_file_is_refused_or_round_trips(data: bytes) -> None:
    try:
        parsed = parse_credentials(data, source="fuzz")
    except CredentialsFileError:
        return
    # accepted: written back, it is the same document, and reads back the same
    dumped = dump_credentials(parsed)
    assert same_document(json.loads(dumped), json.loads(data)), data
    assert dump_credentials(parse_credentials(dumped, source="fuzz")) == dumped


# ---------------------------------------------------------------------------------------------
# JWT resolver

ISSUER = "https://login.example.test/realms/acme"
AUDIENCE = "https://api.example.test/mcp"


@cache
def _jwks() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return json.dumps({"keys": [{**public_jwk(key.public_key()), "kid": "k1"}]}).encode()


def _jwks_handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=_jwks(), headers={"content-type": "application/json"})


@cache
def _resolver() -> JWTAccessTokenResolver:
    clock = FakeClock()
    return JWTAccessTokenResolver(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url="https://login.example.test/jwks",
        directory=MemoryStore(clock=clock),
        clock=clock,
        algorithms=("RS256", "ES256", "EdDSA"),
        transport=httpx.MockTransport(_jwks_handler),
    )


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
)
JSON_VALUES = st.one_of(
    JSON_SCALARS,
    st.lists(JSON_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=6), JSON_SCALARS, max_size=3),
)


@st.composite
def jwt_like(draw: st.DrawFn) -> str:
    header: dict[str, Any] = {
        "alg": draw(st.sampled_from(["ES256", "RS256", "EdDSA", "HS256", "none", "PS256"])),
        "typ": draw(st.sampled_from(["at+jwt", "application/at+jwt", "JWT", "dpop+jwt"])),
        "kid": draw(st.sampled_from(["k1", "k2", ""])),
    }
    header.update(draw(st.dictionaries(st.sampled_from(["crit", "jwk", "b64", "x"]), JSON_VALUES)))
    now = FakeClock().timestamp()
    claims: dict[str, Any] = {
        "iss": draw(st.sampled_from([ISSUER, ISSUER + "/", ""])),
        "aud": draw(st.sampled_from([AUDIENCE, [AUDIENCE, "x"], [], "other"])),
        "sub": draw(st.sampled_from(["user-1", "", "nobody"])),
        "exp": draw(st.one_of(st.just(now + 300), st.integers(), st.floats(), st.text())),
        "iat": draw(st.one_of(st.just(now), st.integers(-(2**70), 2**70))),
    }
    claims.update(
        draw(st.dictionaries(st.sampled_from(["cnf", "scope", "nbf", "jti"]), JSON_VALUES))
    )
    raw_header = draw(st.one_of(st.just(json.dumps(header).encode()), st.binary(max_size=40)))
    raw_claims = draw(st.one_of(st.just(json.dumps(claims).encode()), st.binary(max_size=40)))
    signature = draw(st.binary(max_size=80))
    return f"{_b64(raw_header)}.{_b64(raw_claims)}.{_b64(signature)}"


@FUZZ
@given(
    token=st.one_of(
        jwt_like(),
        st.text(max_size=120),
        st.text(st.sampled_from("ABCxyz019-_."), max_size=120),
    )
)
@example(token="a.b.c")
@example(token=b64url_encode(b'{"alg":"ES256","typ":"at+jwt","kid":"k1"}') + ".e30.AAAA")
def test_jwt_resolver_raises_only_invalid_token(token: str) -> None:
    resolver = _resolver()
    resolver.accepts(token)

    async def resolve() -> None:
        try:
            await resolver.resolve(token)
        except (InvalidToken, ServiceUnavailable):
            return
        raise AssertionError("an unsigned fuzz token was accepted")

    anyio.run(resolve)


# ---------------------------------------------------------------------------------------------
# verify_log


@cache
def _clean_log() -> tuple[AuditEntry, ...]:
    log: list[AuditEntry] = []
    for i in range(6):
        ev = AuditEvent(action=Action.DECISION, ts=FakeClock().now(), decision=Decision.ALLOW)
        log.append(seal(ev, i, log[-1].hash if log else GENESIS_PREV))
    return tuple(log)


@st.composite
def audit_entries(draw: st.DrawFn) -> list[AuditEntry]:
    log = list(_clean_log())
    for _ in range(draw(st.integers(0, 4))):
        index = draw(st.integers(0, len(log)))
        kind = draw(st.integers(0, 4))
        if kind == 0:  # an arbitrary entry
            body = draw(
                st.one_of(st.binary(max_size=60), JSON_VALUES.map(lambda v: json.dumps(v).encode()))
            )
            entry = AuditEntry(
                draw(st.integers(-(2**64), 2**64)),
                draw(st.one_of(st.binary(max_size=40), st.just(leaf_hash(body)))),
                body,
            )
            log.insert(index, entry)
        elif kind == 1 and log:  # drop one
            log.pop(min(index, len(log) - 1))
        elif kind == 2 and log:  # duplicate one
            log.insert(index, log[draw(st.integers(0, len(log) - 1))])
        elif kind == 3 and log and isinstance(log[min(index, len(log) - 1)].body, bytes):
            # rewrite a body, resealed so only the content checks can see it
            at = min(index, len(log) - 1)
            text = log[at].body.decode("utf-8", "replace")
            cut = draw(st.integers(0, len(text)))
            body = (text[:cut] + draw(st.text(max_size=6)) + text[cut + 1 :]).encode(
                "utf-8", "surrogatepass"
            )
            log[at] = AuditEntry(log[at].seq, leaf_hash(body), body)
        elif kind == 4 and log:  # wrong types where the store promises bytes and ints
            at = min(index, len(log) - 1)
            odd: Any = draw(st.sampled_from([None, "text", 1.5, -1]))
            log[at] = AuditEntry(log[at].seq, log[at].hash, odd)
    return log


@FUZZ
@given(entries=audit_entries())
def test_verify_log_never_raises(entries: list[AuditEntry]) -> None:
    report = verify_log(entries)
    assert report.size == len(entries)
    if report.ok:
        assert all(e.seq == i for i, e in enumerate(entries))
