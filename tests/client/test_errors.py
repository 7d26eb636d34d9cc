"""RefreshFailed: what it says about a refusal, in one line a developer can act on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentguard.client import RefreshFailed


def test_invalid_grant_without_a_reason_is_permanent_and_names_the_fix() -> None:
    error = RefreshFailed(status=400, error="invalid_grant")
    assert error.permanent and not error.transient
    assert str(error) == (
        "refresh refused: invalid_grant (key revoked or user disabled); "
        "issue new keys with `agentguard keys issue`"
    )


def test_an_unknown_reason_is_shown_as_the_server_gave_it() -> None:
    error = RefreshFailed(status=400, error="invalid_grant", reason="policy_x", description="d")
    assert "invalid_grant (policy_x: d)" in str(error)


def test_other_client_errors_are_neither_permanent_nor_transient() -> None:
    error = RefreshFailed(status=400, error="invalid_dpop_proof", description="iat too old")
    assert not error.permanent and not error.transient
    assert str(error) == "refresh refused: HTTP 400 invalid_dpop_proof (iat too old)"
    assert RefreshFailed(status=429, error=None).transient


@given(
    status=st.none() | st.integers(100, 599),
    code=st.none() | st.text(max_size=400),
    reason=st.none() | st.text(max_size=400),
    description=st.none() | st.text(max_size=400),
)
def test_the_message_is_always_one_printable_bounded_line(
    status: int | None, code: str | None, reason: str | None, description: str | None
) -> None:
    text = str(RefreshFailed(status=status, error=code, reason=reason, description=description))
    assert text.isprintable() and text.isascii()
    assert len(text) < 1200


def test_a_reflected_key_never_reaches_the_message() -> None:
    from agentguard.client import RefreshFailed

    key = "ag_rt_" + "A" * 49
    error = RefreshFailed(
        status=400, error="invalid_grant", reason=f"bad {key}", description=f"you sent {key}"
    )
    assert key not in str(error) and key not in repr(error)
    assert "[key]" in str(error)
