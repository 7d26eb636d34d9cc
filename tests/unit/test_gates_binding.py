"""The approval binding: every bound field changes the hash; nothing else does."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from agentguard._request import GuardRequest
from agentguard.approvals._binding import (
    PREVIEW_BYTES,
    Placement,
    binding,
    body_digest,
    bound_headers,
    bound_target,
    display_headers,
    display_query,
    preview,
)

KEY = "ag_at_" + "A" * 49
FIELDS = {
    "family_id": "fam-1",
    "user_id": "user-1",
    "service": "crm",
    "method": "POST",
    "target": b"/crm/deals?x=1",
    "digest": body_digest(b"{}"),
    "rule_version": "0" * 32,
}
ALTERED = {
    "family_id": "fam-2",
    "user_id": "user-2",
    "service": "billing",
    "method": "PUT",
    "target": b"/crm/deals?x=2",
    "digest": body_digest(b"{ }"),
    "rule_version": "1" * 32,
}


def test_each_bound_field_changes_the_binding() -> None:
    base = binding(**FIELDS)  # type: ignore[arg-type]
    seen = {base}
    for name, value in ALTERED.items():
        changed = binding(**{**FIELDS, name: value})  # type: ignore[arg-type]
        assert changed != base, name
        seen.add(changed)
    assert len(seen) == len(ALTERED) + 1


def test_service_none_differs_from_the_string_none() -> None:
    none = binding(**{**FIELDS, "service": None})  # type: ignore[arg-type]
    text = binding(**{**FIELDS, "service": "None"})  # type: ignore[arg-type]
    assert none != text


@given(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))
def test_fields_cannot_run_into_each_other(a: str, b: str, c: str, d: str) -> None:
    """The encoding is unambiguous: moving characters between fields changes the hash."""
    first = binding(**{**FIELDS, "family_id": a + b, "user_id": c + d})  # type: ignore[arg-type]
    second = binding(**{**FIELDS, "family_id": a, "user_id": b + c + d})  # type: ignore[arg-type]
    assert (first == second) == (a + b == a and c + d == b + c + d)


@given(st.binary(max_size=256), st.binary(max_size=256))
def test_body_digest_is_sha256_and_separates_bodies(one: bytes, two: bytes) -> None:
    assert body_digest(one) == "sha-256:" + hashlib.sha256(one).hexdigest()
    assert (body_digest(one) == body_digest(two)) == (one == two)


def test_method_case_does_not_matter_but_target_case_does() -> None:
    assert binding(**{**FIELDS, "method": "post"}) == binding(**FIELDS)  # type: ignore[arg-type]
    upper = binding(**{**FIELDS, "target": b"/CRM/deals?x=1"})  # type: ignore[arg-type]
    assert upper != binding(**FIELDS)  # type: ignore[arg-type]


def test_bound_target_drops_only_the_field_of_a_query_placement() -> None:
    other = "ag_at_" + "B" * 49
    query = f"a=1&api_key={KEY}&b=2&x=y{other}&z={KEY}".encode()
    request = GuardRequest("GET", "/crm/deals", query_string=query)
    expected = f"/crm/deals?a=1&b=2&x=y{other}&z={KEY}".encode()
    assert bound_target(request, Placement("query", "api_key")) == expected
    assert bound_target(request) == b"/crm/deals?" + query  # no placement: every field bound
    assert bound_target(request, Placement("header", "api_key")) == b"/crm/deals?" + query
    assert KEY not in display_query(request)
    assert "[key]" in display_query(request)


def test_bound_target_holds_the_mount_point() -> None:
    sandbox = GuardRequest("DELETE", "/crm/x", root_path="/sandbox")
    prod = GuardRequest("DELETE", "/crm/x", root_path="/prod")
    assert bound_target(sandbox) != bound_target(prod)


def test_bound_headers_keep_host_and_the_exchange_and_drop_the_placement() -> None:
    headers = [(b"host", b"a.example"), (b"x-api-key", KEY.encode()), (b"user-agent", b"u")]
    http = GuardRequest("GET", "/x", headers=headers)
    socket = GuardRequest("GET", "/x", headers=headers, scheme="ws")
    kept = bound_headers(http, Placement("header", "X-Api-Key"))
    assert ("host", "a.example") in kept and all(name != "x-api-key" for name, _ in kept)
    assert all(name != "user-agent" for name, _ in kept)
    assert bound_headers(http) != bound_headers(socket)
    assert ("x-api-key", KEY) in bound_headers(http)  # behind the middleware: bound
    assert KEY not in display_headers(bound_headers(http))


@given(st.lists(st.sampled_from(["a=1", "b=2", "a=2", "c", "d=%20"]), max_size=5))
def test_bound_target_keeps_the_query_exactly_otherwise(fields: list[str]) -> None:
    query = "&".join(fields).encode()
    request = GuardRequest("GET", "/crm/x", query_string=query)
    expected = b"/crm/x" + (b"?" + b"&".join(f for f in query.split(b"&") if f) if fields else b"")
    assert bound_target(request) == expected


def test_preview_is_bounded_and_never_holds_a_key() -> None:
    body = (b"x" * 2040) + KEY.encode() + b"y" * 5000
    shown = preview(body)
    assert len(shown) <= PREVIEW_BYTES
    assert KEY not in shown
    assert KEY[:20] not in shown


@given(st.binary(max_size=5000))
def test_preview_never_exceeds_its_bound(body: bytes) -> None:
    assert len(preview(body)) <= PREVIEW_BYTES
