"""An authorization server's JWKS on a real loopback socket, and a way to mint its tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from agentguard.asgi._types import Receive, Scope, Send
from agentguard.dpop._jose import b64url_encode, dumps_compact
from agentguard.dpop._jwk import public_jwk
from agentguard.testing import FakeClock
from tests.support.servers import LoopbackServer

ISSUER = "https://login.example.test/realms/acme"
AUDIENCE = "https://api.example.test/mcp"

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign_jwt(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = (
        b64url_encode(dumps_compact(header)) + "." + b64url_encode(dumps_compact(claims))
    ).encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input.decode() + "." + b64url_encode(signature)


@dataclass
class Issuer:
    """The authorization server: its keys (published in the JWKS) and a token minter."""

    clock: FakeClock
    url: str = ""
    keys: dict[str, SigningKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    fetches: int = 0
    failing: bool = False

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    def jwks(self) -> bytes:
        entries = []
        for kid in self.published:
            jwk: dict[str, str] = dict(public_jwk(self.keys[kid].public_key()))
            entries.append({**jwk, "kid": kid, "use": "sig"})
        return json.dumps({"keys": entries}).encode()

    def add_key(self, kid: str, key: SigningKey | None = None, *, publish: bool = True) -> None:
        self.keys[kid] = key or new_rsa()
        if publish:
            self.published.append(kid)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = self.clock.timestamp()
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "client_id": "agent-app",
            "iat": now,
            "exp": now + 300,
            "jti": "token-1",
            "workspace": "ws-1",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "k1", *, header: dict[str, Any] | None = None, **claims: Any) -> str:
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        full_header = {"alg": alg, "typ": "at+jwt", "kid": kid, **(header or {})}
        return sign_jwt(
            key, {k: v for k, v in full_header.items() if v is not None}, self.claims(**claims)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.fetches += 1
        status, body = (500, b"down") if self.failing else (200, self.jwks())
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server_issuer = Issuer(FakeClock())
    server_issuer.add_key("k1")
    with LoopbackServer(server_issuer) as server:
        server_issuer.url = server.url
        yield server_issuer
