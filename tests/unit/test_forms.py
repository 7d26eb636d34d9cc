"""The OAuth form reader: bounded, strict, and it raises only library errors."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard.asgi._forms import read_form
from agentguard.errors import AgentGuardError, InvalidRequest, PayloadTooLarge

FORM = (b"content-type", b"application/x-www-form-urlencoded")


def receiver(chunks: list[bytes]) -> Any:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


def read(
    chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None, cap: int = 1024
) -> dict[str, str]:
    scope = {"headers": headers if headers is not None else [FORM]}
    return anyio.run(read_form, scope, receiver(chunks), cap)


def test_reads_chunked_form() -> None:
    assert read([b"a=1&b=", b"two%20words"]) == {"a": "1", "b": "two words"}


def test_empty_body_is_empty_form() -> None:
    assert read([]) == {}


def test_content_type_parameters_are_ignored() -> None:
    headers = [(b"content-type", b"Application/X-WWW-Form-Urlencoded; charset=UTF-8")]
    assert read([b"a=1"], headers) == {"a": "1"}


def test_wrong_content_type() -> None:
    with pytest.raises(InvalidRequest):
        read([b"a=1"], [(b"content-type", b"application/json")])


def test_cap_enforced_by_length_header_and_by_bytes() -> None:
    with pytest.raises(PayloadTooLarge):
        read([b"a=1"], [FORM, (b"content-length", b"5000")])
    with pytest.raises(PayloadTooLarge):
        read([b"a=" + b"x" * 600, b"y" * 600])
    with pytest.raises(InvalidRequest):
        read([b"a=1"], [FORM, (b"content-length", b"-1")])


def test_disconnect_mid_body() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(InvalidRequest):
        anyio.run(read_form, {"headers": [FORM]}, receive, 100)


def test_too_many_fields() -> None:
    with pytest.raises(InvalidRequest):
        read([b"&".join(b"f%d=1" % i for i in range(40))])


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=4))
def test_arbitrary_bodies_raise_only_library_errors(chunks: list[bytes]) -> None:
    try:
        form = read(chunks)
    except AgentGuardError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in form.items())
