"""Issue 20 attacks (approvals, budgets, rate limits) over real HTTP against ``agentguard serve``.

Each test is a bug an independent attacker found (each failed on the code as of ef01d58).
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gates.attack.conftest import Gateway

BOUNDARY = "agentguard-attack-20"


def _filler(size: int) -> str:
    """``size`` characters, never a run of one character (the secrets canary would take a test
    secret such as ``"a" * 32`` in a logged request line for a leak)."""
    return "".join(f"f{n:05d}" for n in range(size // 6 + 1))[:size]


def _multipart(fields: list[tuple[str, str]]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


def _status_line(out: bytes) -> int:
    return int(out.split(b"\r\n", 1)[0].split(b" ")[1])


@pytest.mark.parametrize("media", ["multipart/form-data", "multipart/mixed"])
def test_multipart_method_override_to_held_method_is_refused(gateway: Gateway, media: str) -> None:
    """``/items`` holds DELETE for approval. A POST whose multipart form carries
    ``_method=DELETE`` is a DELETE to Rack (Rails), Laravel and Symfony, which read ``_method``
    from every parsed form, multipart included. The docs promise a method override naming a
    held method is refused 400; the proxy only reads urlencoded, text/plain and JSON bodies, so
    the multipart one reaches the vendor with no approval."""
    response = httpx.post(
        gateway.url + "/crm/items/7",
        headers={"X-Api-Key": gateway.agent_key, "Content-Type": f"{media}; boundary={BOUNDARY}"},
        content=_multipart([("_method", "DELETE")]),
        timeout=10,
    )
    reached = [call for call in gateway.upstream() if "_method" in str(call["body"])]
    assert reached == [], "a DELETE override reached the vendor without an approval"
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


def test_operator_sees_the_whole_query_of_a_held_call(gateway: Gateway) -> None:
    """The approval binds the whole query, but the operator is shown only its first 1024
    characters, with nothing saying it was cut. An agent pads the query so the part that
    matters (``scope=all&hard=true``) is past the cut: the operator approves what looks like
    a harmless DELETE and the vendor receives the hidden parameters."""
    target = "/crm/contacts?note=" + _filler(1100) + "&scope=all&hard=true"
    key = {"X-Api-Key": gateway.agent_key}
    held = httpx.delete(gateway.url + target, headers=key, timeout=10)
    if held.status_code != 403:  # refusing a target that cannot be shown whole is also fine
        assert 400 <= held.status_code < 500 and "error" in held.json()
        return
    approval_id = held.json()["approval_id"]
    shown = gateway.op("GET", f"/approvals/{approval_id}").json()
    gateway.approve(approval_id)
    retry = httpx.delete(
        gateway.url + target, headers={**key, "AgentGuard-Approval": approval_id}, timeout=10
    )
    forwarded = [str(call["target"]) for call in gateway.upstream()]
    if retry.status_code == 200:
        assert "hard=true" in shown["query"], (
            f"the vendor got {forwarded[-1][-30:]!r} but the operator was shown a query "
            f"ending {shown['query'][-30:]!r}"
        )


def test_operator_sees_the_whole_path_of_a_held_call(gateway: Gateway) -> None:
    """The same with the path: the operator's ``path`` is cut at 1024 characters, silently."""
    target = "/crm/contacts/" + _filler(1020) + "/purge-everything"
    key = {"X-Api-Key": gateway.agent_key}
    held = httpx.delete(gateway.url + target, headers=key, timeout=10)
    if held.status_code != 403:
        assert 400 <= held.status_code < 500 and "error" in held.json()
        return
    approval_id = held.json()["approval_id"]
    shown = gateway.op("GET", f"/approvals/{approval_id}").json()
    assert shown["path"].endswith("/purge-everything"), shown["path"][-40:]


@pytest.mark.parametrize(
    ("method", "path"),
    [(b"delete", b"/crm/items/7"), (b"get", b"/pay/charges"), (b"X" * 40, b"/pay/charges")],
)
def test_unusual_method_on_held_route_is_a_refusal_not_a_500(
    gateway: Gateway, method: bytes, path: bytes
) -> None:
    """A held route and a method token the approval record's pattern rejects (lower case, or
    longer than 32 characters): the ``ApprovalRecord`` validation error escapes the pipeline,
    uvicorn answers a plain-text 500 and logs a traceback. It should be a JSON refusal (or an
    approval_required), never a 500."""
    auth = b"X-Api-Key: " if path.startswith(b"/crm") else b"Authorization: Bearer "
    out = gateway.raw(
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: gw\r\n"
        + auth
        + gateway.agent_key.encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert _status_line(out) != 500, out[:200]
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert "error" in body
    assert "Traceback" not in gateway.log.read_text()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"_method=DELETE"),
        ("application/json", b'{"_method": "DELETE"}'),
    ],
)
def test_method_override_does_not_dodge_the_cost_of_the_method_it_names(
    gateway: Gateway, content_type: str, body: bytes
) -> None:
    """``/costly`` charges 50 for a DELETE (not held), 1 for anything else; the budget is 60 per
    user. A POST whose body says ``_method=DELETE`` is a DELETE to the vendor (Rack, Laravel,
    Symfony, Express method-override); the proxy checks the override against the grants and
    the approval rules, forwards the body as is, but charges the POST's cost: the agent runs
    DELETEs at 1 unit each. At most one such DELETE fits the budget."""
    headers = {"X-Api-Key": gateway.agent_key, "Content-Type": content_type}
    answers = [
        httpx.post(gateway.url + f"/crm/costly/{n}", headers=headers, content=body, timeout=10)
        for n in range(3)
    ]
    deletes = [call for call in gateway.upstream() if "_method" in str(call["body"])]
    assert len(deletes) <= 1, (
        f"{len(deletes)} DELETE overrides ran on a budget that holds one "
        f"(answers {[a.status_code for a in answers]})"
    )


def test_held_call_with_nul_byte_body_is_held_on_postgres(pg_gateway: Gateway) -> None:
    """On PostgreSQL a held call whose body contains a NUL byte cannot be stored (the body
    preview is TEXT): the gateway answers 503 ``store_unavailable`` ("the key store is
    unavailable"), logs a storage failure, and the call can never be approved. On SQLite the
    same call is held (403 approval_required). Binary bodies are legitimate."""
    response = httpx.post(
        pg_gateway.url + "/crm/contacts/1",
        headers={"X-Api-Key": pg_gateway.agent_key, "Content-Type": "application/octet-stream"},
        content=b"binary\x00payload",
        timeout=10,
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "approval_required"


def test_retries_refused_approval_used_spend_no_budget(gateway: Gateway) -> None:
    """``pay`` holds every call; a call costs 3 of a budget of 6. One approval, retried 12 times
    at once: one call runs, the others are refused (``approval_used``) and charged nothing
    (room checked, approval consumed, then charged), so the next approved call still fits."""
    import anyio

    bearer = {"Authorization": f"Bearer {gateway.agent_key}"}

    def held(body: bytes) -> str:
        response = httpx.post(gateway.url + "/pay/charges", headers=bearer, content=body)
        assert response.status_code == 403, response.text
        approval_id: str = response.json()["approval_id"]
        gateway.approve(approval_id)
        return approval_id

    first = held(b'{"amount": 1}')

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            retry = {**bearer, "AgentGuard-Approval": first}
            answers: list[httpx.Response] = []

            async def one() -> None:
                answers.append(
                    await client.post(
                        gateway.url + "/pay/charges", headers=retry, content=b'{"amount": 1}'
                    )
                )

            async with anyio.create_task_group() as group:
                for _ in range(12):
                    group.start_soon(one)
            return answers

    answers = anyio.run(race)
    assert sum(answer.status_code == 200 for answer in answers) == 1
    assert len(gateway.upstream()) == 1  # one call of the race ran
    second = held(b'{"amount": 2}')
    retry = httpx.post(
        gateway.url + "/pay/charges",
        headers={**bearer, "AgentGuard-Approval": second},
        content=b'{"amount": 2}',
    )
    assert retry.status_code == 200, retry.text  # 3 + 3 of 6: the losers were charged nothing
    assert len(gateway.upstream()) == 2
