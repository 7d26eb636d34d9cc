"""The proxy holds back every gated call before any byte goes upstream, over real sockets.

The upstream is a :class:`~tests.gates.support.Recorder` on loopback: it counts what reached it.
A held call, with a body, a chunked body or none at all, never reaches it; the approved retry
reaches it once, with exactly the approved body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from agentguard import CredentialOwner, CredentialScope, ServiceConfig
from agentguard.asgi import ProxyApp
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock
from tests.conftest import CANARY
from tests.gates.support import APPROVAL, Recorder, World, approve, build_world
from tests.support.servers import LoopbackServer

ROUTES = [
    {"path": "/", "approval": ["DELETE"]},
    {"path": "/costly", "cost": {"DELETE": 50}},
    {"path": "/reports", "approval": True},
    {"path": "/payments", "approval": ["POST"]},
    {"path": "/notes", "approval": ["POST"]},
]


@dataclass
class Proxied:
    world: World
    upstream: Recorder
    url: str

    def send(
        self, method: str, path: str, approval: str | None = None, **kwargs: object
    ) -> httpx.Response:
        headers = {**self.world.alice.auth(approval), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def approve(self, approval_id: str) -> None:
        anyio.run(approve, self.world.guard, approval_id)


def _serve(max_request_bytes: int | None) -> Iterator[Proxied]:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    world = anyio.run(build_world, store, clock)
    upstream = Recorder()
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)

    async def credential() -> None:
        await vault.put("crm", CredentialOwner.USER, "alice", CANARY, scope=CredentialScope.USER)

    anyio.run(credential)
    with LoopbackServer(upstream) as upstream_server:
        service = ServiceConfig(
            name="crm",
            base_url=upstream_server.url,
            allow_insecure_http=True,
            routes=ROUTES,  # type: ignore[arg-type]
            max_request_bytes=max_request_bytes,
        )
        proxy = ProxyApp(world.guard, service, CredentialSwapper(vault, clock=clock))
        with LoopbackServer(proxy, lifespan="on") as server:
            yield Proxied(world, upstream, server.url)


@pytest.fixture(params=[10_000, None], ids=["capped", "streamed"])
def proxied(request: pytest.FixtureRequest) -> Iterator[Proxied]:
    yield from _serve(request.param)


def _held(response: httpx.Response) -> str:
    assert response.status_code == 403, response.text
    document = response.json()
    assert document["error"] == "approval_required"
    assert document["reason"] in ("approval_required", "approval_pending")
    assert CANARY not in response.text
    return str(document["approval_id"])


def test_a_held_call_never_reaches_the_upstream(proxied: Proxied) -> None:
    body = b'{"wire": 1000000}'
    approval_id = _held(proxied.send("POST", "/payments", content=body))
    assert _held(proxied.send("POST", "/payments", content=body)) == approval_id
    assert proxied.upstream.calls == []
    proxied.approve(approval_id)
    assert proxied.send("POST", "/payments", approval_id, content=body + b" ").status_code == 403
    assert proxied.upstream.calls == []
    ran = proxied.send("POST", "/payments", approval_id, content=body)
    assert ran.status_code == 200, ran.text
    [call] = proxied.upstream.calls
    assert (call.method, call.path, call.body) == ("POST", "/payments", body)
    assert proxied.send("POST", "/payments", approval_id, content=body).status_code == 403
    assert len(proxied.upstream.calls) == 1


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/contacts/1"), ("GET", "/reports/q3")])
def test_a_held_call_without_a_body_is_held(proxied: Proxied, method: str, path: str) -> None:
    approval_id = _held(proxied.send(method, path))
    assert proxied.upstream.calls == []
    proxied.approve(approval_id)
    assert proxied.send(method, path, approval_id, content=b"x").json()["reason"] == (
        "approval_mismatch"
    )
    assert proxied.send(method, path, approval_id).status_code == 200
    assert [(c.method, c.path, c.body) for c in proxied.upstream.calls] == [(method, path, b"")]


def test_a_chunked_body_is_bound_whole(proxied: Proxied) -> None:
    parts = [b"part-one;", b"part-two;", b"part-three"]
    approval_id = _held(proxied.send("POST", "/notes", content=iter(parts)))
    proxied.approve(approval_id)
    changed = iter([*parts[:2], b"part-THREE"])
    assert proxied.send("POST", "/notes", approval_id, content=changed).status_code == 403
    assert proxied.send("POST", "/notes", approval_id, content=iter(parts)).status_code == 200
    assert [c.body for c in proxied.upstream.calls] == [b"".join(parts)]


def test_a_body_over_max_body_is_413(proxied: Proxied) -> None:
    response = proxied.send("POST", "/notes", content=b"x" * 4097)  # ApprovalPolicy.max_body 4096
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "invalid_request"
    chunked = proxied.send("POST", "/notes", content=iter([b"x" * 4000, b"y" * 97]))
    assert chunked.status_code == 413
    assert proxied.upstream.calls == []
    assert _held(proxied.send("POST", "/notes", content=b"x" * 4096))


def test_a_method_override_in_the_body_is_held_like_the_method(proxied: Proxied) -> None:
    """An override naming a held method is refused (400): the approval binds the method sent,
    so the agent must send the held method itself."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method in ("POST", "PUT"):
        response = proxied.send(method, "/things/1", headers=form, content=b"_method=DELETE")
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"
        assert "method override" in response.json()["error_description"]
    assert proxied.upstream.calls == []


def test_the_approval_header_is_not_forwarded(proxied: Proxied) -> None:
    """The approval header is the guard's: the upstream never sees it."""
    approval_id = _held(proxied.send("DELETE", "/contacts/2"))
    proxied.approve(approval_id)
    assert proxied.send("DELETE", "/contacts/2", approval_id).status_code == 200
    [call] = proxied.upstream.calls
    assert APPROVAL.lower() not in call.headers


def test_a_key_shaped_query_field_cannot_ride_an_approval(proxied: Proxied) -> None:
    approval_id = _held(proxied.send("DELETE", "/contacts/3?hard=no"))
    proxied.approve(approval_id)
    smuggled = "/contacts/3?hard=no&hard=yes" + "ag_at_" + "Bc4" * 16 + "B"
    response = proxied.send("DELETE", smuggled, approval_id)
    assert response.status_code in (400, 403), response.text
    assert proxied.upstream.calls == []


MULTIPART = (
    b'--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n'
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
    b"hello\r\n--XyZ--\r\n"
)


@pytest.mark.parametrize("media", ["multipart/form-data", "multipart/mixed"])
def test_a_multipart_method_override_to_a_held_method_is_refused(
    proxied: Proxied, media: str
) -> None:
    """Rails, Laravel and Symfony read ``_method`` from multipart forms too."""
    headers = {"Content-Type": f"{media}; boundary=XyZ"}
    response = proxied.send("POST", "/items/7", headers=headers, content=MULTIPART)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert proxied.upstream.calls == []


@pytest.mark.parametrize(
    ("media", "body"),
    [
        ("application/x-www-form-urlencoded", b"_method=DELETE"),
        ("application/json", b'{"_method": "DELETE"}'),
    ],
)
def test_an_override_to_a_costlier_method_is_refused(
    proxied: Proxied, media: str, body: bytes
) -> None:
    """``/costly`` charges 50 for a DELETE: a POST naming DELETE must not be charged as a
    POST and then run as a DELETE by a vendor that honours the override."""
    response = proxied.send("POST", "/costly/1", headers={"Content-Type": media}, content=body)
    assert response.status_code == 400, response.text
    assert "method override" in response.json()["error_description"]
    assert proxied.upstream.calls == []


def test_a_held_body_with_nul_bytes_is_held(proxied: Proxied) -> None:
    """The operator's preview is text: a NUL byte is shown replaced, and the call is held
    (on PostgreSQL a NUL in a text column used to look like an outage)."""
    body = b"binary\x00payload"
    headers = {"Content-Type": "application/octet-stream"}
    response = proxied.send("DELETE", "/items/9", headers=headers, content=body)
    approval_id = _held(response)
    store = proxied.world.guard.approval_store
    assert store is not None
    record = anyio.run(store.get_approval, approval_id)
    assert record is not None and "\x00" not in record.body_preview
    assert record.body_bytes == len(body)


def test_a_vendor_approval_header_never_reaches_the_agent(proxied: Proxied) -> None:
    """Only the guard names approvals: an upstream's ``agentguard-approval`` header is
    dropped, so a vendor's 403 cannot pass for a held call."""
    proxied.upstream.extra_headers = [(b"agentguard-approval", b"apr_" + b"A" * 22)]
    response = proxied.send("GET", "/items/1")
    assert response.status_code == 200, response.text
    assert APPROVAL.lower() not in response.headers
