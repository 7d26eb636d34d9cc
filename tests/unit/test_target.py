"""The canonicaliser: one meaning per accepted target, checked against an independent oracle."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agentguard import GuardRequest
from agentguard._target import (
    PATH_CHARACTERS,
    Target,
    canonical_target,
    parse_decoded_path,
    parse_raw_path,
)
from agentguard.errors import InvalidRequest
from tests.fuzz.conftest import FUZZ
from tests.support.path_readings import RULE_READINGS, readings, remove_dot_segments, rfc_reading

#: Pieces a hostile target is made of: every escape class the issue names, and plain text.
# fmt: off
HOSTILE = [
    "/", "//", ".", "..", "...", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c", "%5C", "\\", ";",
    ";x=1", "..;", "%3b", "%25", "%252e%252e", "%252f", "%", "%zz", "%u002e", "%c0%ae", "%c0%af",
    "%e0%80%ae", "%ef%bc%a1", "\uff21", "%00", "%09", "%20", " ", "\t", "%7f", "?", "%3f", "#",
    "%23", "admin", "ADMIN", "Admin", "%61dmin", "adm%69n", "admin.", "admin%20", "admin%2e", "a",
    "users", "%41", "~", "+", ":", "@", "'",
]
# fmt: on
PIECES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=sorted(PATH_CHARACTERS), min_size=1, max_size=6),
    st.integers(0, 255).map(lambda b: f"%{b:02x}"),
    st.integers(0, 255).map(lambda b: f"%{b:02X}"),
)
TARGETS = st.lists(PIECES, max_size=10).map(lambda pieces: "/" + "".join(pieces))


def _accepted(raw: str, **options: bool) -> Target | None:
    try:
        return parse_raw_path(raw.encode("utf-8"), **options)
    except InvalidRequest as error:
        refused = error
    assert refused.status == 400 and refused.error == "invalid_request"
    assert "refused" in refused.description or "must be" in refused.description
    return None


@FUZZ
@given(raw=TARGETS)
@example(raw="/cr%6d/contacts/%252e%252e/admin/users")
@example(raw="/crm/%61dmin/users")
def test_accepted_targets_have_one_meaning(raw: str) -> None:
    target = _accepted(raw)
    if target is None:
        return
    forwarded = target.raw.decode("ascii")
    # What is forwarded means what the client sent, under RFC 3986 normalisation ...
    assert rfc_reading(forwarded) == rfc_reading(raw) == target.path
    # ... and under every lenient reading, up to letter case, format suffixes and '+'/'~' at
    # segment edges (which the rules handle: tests/unit/test_permissions.py).
    lenient = readings(forwarded, without=RULE_READINGS - {"casefold"})
    assert {reading.casefold() for reading in lenient} == {target.path.casefold()}
    # Canonical is a fixed point.
    assert parse_raw_path(target.raw) == target
    assert parse_decoded_path(target.path) == target


@FUZZ
@given(raw=TARGETS)
def test_encoded_slashes_opt_in_is_authorised_decoded(raw: str) -> None:
    target = _accepted(raw, allow_encoded_slash=True)
    if target is None:
        return
    forwarded = target.raw.decode("ascii")
    assert rfc_reading(forwarded) == target.path  # decoded, the slash is a separator
    assert remove_dot_segments(target.path) == target.path  # and no '..' hides behind it
    # A vendor that keeps '%2F' in its segment reads the same path with that one difference.
    lenient = readings(forwarded, without=RULE_READINGS - {"casefold"})
    decoded = {r.replace("%2F", "/").replace("%2f", "/") for r in lenient}
    assert {reading.casefold() for reading in decoded} == {target.path.casefold()}


#: Segments made of what the lenient readings act on: ``+``, ``~`` and ``.`` around a letter.
EDGE_SEGMENTS = st.lists(st.text(alphabet="+~.a0-", min_size=1, max_size=7), min_size=1, max_size=4)


@FUZZ
@given(segments=EDGE_SEGMENTS, trailing=st.booleans())
@example(segments=["+...0"], trailing=False)  # '+..' once the format goes, then '..'
@example(segments=["..~+~", "x"], trailing=False)
@example(segments=["..+.a"], trailing=True)
def test_no_reading_of_an_accepted_target_climbs_or_vanishes(
    segments: list[str], trailing: bool
) -> None:
    """Under every reading, the rule readings included, composed in any order, an accepted
    target keeps all its segments: none reads as ``.``, ``..`` or nothing."""
    raw = "/v1/" + "/".join(segments) + ("/" if trailing else "")
    target = _accepted(raw)
    if target is None:
        return
    forwarded = target.raw.decode("ascii")
    for reading in readings(forwarded):
        parts = reading.split("/")
        assert len(parts) == len(forwarded.split("/")), (raw, reading)
        assert parts[1] == "v1", (raw, reading)
        inner = parts[1:-1] if trailing else parts[1:]
        assert all(part not in ("", ".", "..") for part in inner), (raw, reading)


def test_plus_tilde_and_suffix_edges_stay_legitimate() -> None:
    for raw in ("/tags/c++", "/a/+1", "/report.csv", "/x/..a", "/v/1.0~", "/a~b/c+d.json"):
        assert _accepted(raw) is not None, raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/crm/contacts/%252e%252e/admin", "encoded '%'"),
        ("/crm/%2e%2e/admin", "encoded '.'"),
        ("/crm/.%2E/admin", "encoded '.'"),
        ("/crm/a%2Fb", "encoded '/'"),
        ("/crm/a%5cb", "encoded '\\'"),
        ("/crm/a\\b", "backslash"),
        ("/crm/..;/admin", "';'"),
        ("/crm/admin;x=1/users", "';'"),
        ("/crm/a%3Bb", "';'"),
        ("/crm//admin", "empty segment"),
        ("/crm/./admin", "'.' or '..' segment"),
        ("/crm/../admin", "'.' or '..' segment"),
        ("/crm/admin./users", "ending in '.'"),
        ("/crm/admin%20/users", "whitespace"),
        ("/crm/admin%09", "whitespace"),
        ("/crm/a%7Fb", "control"),
        ("/crm/a%00b", "control"),
        ("/crm/%c0%ae%c0%ae/admin", "non-ASCII"),
        ("/crm/%ef%bc%a1dmin", "non-ASCII"),
        ("/crm/%ff", "non-ASCII"),
        ("/crm/%zz", "malformed"),
        ("/crm/%u002e%u002e/admin", "malformed"),
        ("/crm/%2", "malformed"),
        ("/crm/a%3Fb", "'?'"),
        ("/crm/a%23b", "'#'"),
        ("crm/a", "starting with '/'"),
        ("*", "starting with '/'"),
        ("/crm/..%2B", "once '+', '~' or a suffix go"),
        ("/crm/..+/admin", "once '+', '~' or a suffix go"),
        ("/crm/+", "once '+', '~' or a suffix go"),
        ("/crm/.~/admin", "once '+', '~' or a suffix go"),
        ("/crm/+.+/admin", "once '+', '~' or a suffix go"),
        ("/crm/+...0", "a suffix go"),
        ("/crm/..+.json/admin", "a suffix go"),
        ("/crm/..~.~/admin", "a suffix go"),
    ],
)
def test_ambiguous_targets_are_refused_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_raw_path(raw.encode("latin-1"))
    assert why in str(refused.value.description)


def test_raw_non_ascii_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="non-ASCII"):
        parse_raw_path("/crm/\uff21dmin".encode())


def test_escaped_letters_are_decoded_to_their_one_form() -> None:
    target = parse_raw_path(b"/cr%6d/%41dmin/%7euser/")
    assert target == Target(("crm", "Admin", "~user", ""))
    assert (target.path, target.raw) == ("/crm/Admin/~user/", b"/crm/Admin/~user/")


def test_mount_is_matched_on_decoded_segments() -> None:
    target = parse_raw_path(b"/cr%6d/contacts")
    assert target.under("/crm") == Target(("contacts",))
    assert target.under("/crm").raw == b"/contacts"
    assert parse_raw_path(b"/crm").under("/crm").raw == b""
    assert parse_raw_path(b"/crm/").under("/crm/").raw == b"/"
    with pytest.raises(InvalidRequest, match="mount point"):
        parse_raw_path(b"/crmx/contacts").under("/crm")
    with pytest.raises(InvalidRequest, match="mount point"):
        parse_raw_path(b"/CRM/contacts").under("/crm")


def test_encoded_slash_opt_in_forwards_it_encoded() -> None:
    target = parse_raw_path(b"/crm/files/a%2fb", allow_encoded_slash=True).under("/crm")
    assert (target.path, target.raw) == ("/files/a/b", b"/files/a%2Fb")
    for hidden in (b"/crm/x/..%2fadmin", b"/crm/%2Fadmin", b"/crm/a%2F", b"/crm/a%2F%2Fb"):
        with pytest.raises(InvalidRequest):
            parse_raw_path(hidden, allow_encoded_slash=True)


def test_raw_path_is_evidence_for_the_decoded_path() -> None:
    # ASGI: path includes the mount; WSGI: PATH_INFO below SCRIPT_NAME.
    assert canonical_target("/crm/a", b"/cr%6d/a", "/crm") == Target(("crm", "a"))
    assert canonical_target("/a", b"/app/a", "/app") == Target(("a",))
    # A rewritten path (raw decodes to something else) is judged on its own ...
    assert canonical_target("/rewritten", b"/original", "") == Target(("rewritten",))
    # ... but an ambiguous raw target is refused whatever the decoded path says.
    with pytest.raises(InvalidRequest):
        canonical_target("/crm/admin", b"/crm/x/%2e%2e/admin", "")
    # Without the raw target, a literal '%' in the decoded path can only have been %25.
    with pytest.raises(InvalidRequest, match="%25"):
        canonical_target("/crm/%2e%2e/admin")


def test_guard_request_target_and_public_paths() -> None:
    request = GuardRequest("GET", "/health/../admin", raw_path=b"/health/%2e%2e/admin")
    assert not request.in_public_paths(["/health"])
    with pytest.raises(InvalidRequest):
        request.target()
    plain = GuardRequest("GET", "/health/live", raw_path=b"/health/live")
    assert plain.in_public_paths(["/health"]) and not plain.in_public_paths([])
    slash = GuardRequest("GET", "/f/a/b", raw_path=b"/f/a%2Fb", allow_encoded_slash=True)
    assert slash.target().raw == b"/f/a%2Fb"
