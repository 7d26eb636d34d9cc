from __future__ import annotations

import json

import pytest

from agentguard.errors import (
    AuditUnavailable,
    Challenge,
    InsufficientScope,
    InvalidClient,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidToken,
    MethodNotAllowed,
    MissingCredentials,
    Reason,
    RequestRefused,
    StoreUnavailable,
    UseDPoPNonce,
    describe,
)

CHALLENGE = Challenge(realm="api")


def render(
    error: RequestRefused, challenge: Challenge | None = CHALLENGE
) -> tuple[int, dict[str, list[str]], dict[str, str]]:
    status, headers, body = error.to_http(challenge)
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name, []).append(value)
    return status, grouped, json.loads(body)


def test_every_reason_has_a_description() -> None:
    for reason in Reason:
        assert describe(reason)


def test_missing_credentials_has_challenge_without_error_code() -> None:
    status, headers, body = render(MissingCredentials())
    assert status == 401
    assert headers["www-authenticate"] == ['Bearer realm="api"']
    assert "error" not in body
    assert body["reason"] == "missing_credentials"


@pytest.mark.parametrize(
    "reason", [Reason.EXPIRED, Reason.REVOKED, Reason.USER_DISABLED, Reason.UNKNOWN_KEY]
)
def test_invalid_token_is_401_with_error_in_challenge(reason: Reason) -> None:
    status, headers, body = render(InvalidToken(reason=reason))
    assert status == 401
    assert headers["www-authenticate"] == [
        f'Bearer realm="api", error="invalid_token", error_description="{describe(reason)}"'
    ]
    assert body == {
        "error": "invalid_token",
        "error_description": describe(reason),
        "reason": reason.value,
    }
    assert headers["cache-control"] == ["no-store"]


def test_insufficient_scope_names_required_scope() -> None:
    status, headers, body = render(InsufficientScope(required="crm:write"))
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"][0]
    assert 'scope="crm:write"' in headers["www-authenticate"][0]
    assert body["scope"] == "crm:write"


def test_invalid_request_is_400() -> None:
    status, _, body = render(InvalidRequest("send exactly one Authorization header"))
    assert status == 400
    assert body["error"] == "invalid_request"


def test_token_endpoint_errors_have_no_challenge() -> None:
    status, headers, body = render(InvalidGrant(reason=Reason.REFRESH_REUSED), None)
    assert status == 400
    assert "www-authenticate" not in headers
    assert body["error"] == "invalid_grant"
    assert body["reason"] == "refresh_reused"


def test_invalid_client_is_401() -> None:
    status, headers, _ = render(InvalidClient())
    assert status == 401
    assert headers["www-authenticate"][0].startswith("Bearer ")


def test_method_not_allowed_sets_allow() -> None:
    status, headers, _ = render(MethodNotAllowed(("POST",)), None)
    assert status == 405
    assert headers["allow"] == ["POST"]


@pytest.mark.parametrize("error", [StoreUnavailable(), AuditUnavailable()])
def test_unavailable_is_503_with_retry_after(error: RequestRefused) -> None:
    status, headers, body = render(error)
    assert status == 503
    assert headers["retry-after"] == ["1"]
    assert body["error"] == "temporarily_unavailable"


def test_several_schemes_give_several_challenges() -> None:
    challenge = Challenge(realm="api", schemes=("Bearer", "DPoP"), extra=(("algs", "ES256 EdDSA"),))
    _, headers, _ = render(InvalidToken(), challenge)
    assert len(headers["www-authenticate"]) == 2
    assert headers["www-authenticate"][1].startswith('DPoP realm="api", error="invalid_token"')
    assert headers["www-authenticate"][1].endswith('algs="ES256 EdDSA"')


def test_quoted_strings_are_escaped() -> None:
    _, headers, _ = render(InvalidToken('bad "quote" \\ and \r\n newline'))
    value = headers["www-authenticate"][0]
    assert '\\"quote\\"' in value
    assert "\r" not in value and "\n" not in value


def test_dpop_errors_render_for_both_endpoints() -> None:
    status, _, body = render(InvalidDPoPProof(reason=Reason.DPOP_HTU_MISMATCH))
    assert status == 401
    assert body["error"] == "invalid_dpop_proof"
    token_status, _, token_body = render(
        InvalidDPoPProof(reason=Reason.DPOP_HTU_MISMATCH).at_token_endpoint(), None
    )
    assert token_status == 400
    assert token_body["error"] == "invalid_dpop_proof"
    nonce_status, nonce_headers, nonce_body = render(UseDPoPNonce("n-1"))
    assert (nonce_status, nonce_body["error"], nonce_headers["dpop-nonce"]) == (
        401,
        "use_dpop_nonce",
        ["n-1"],
    )
    t_status, t_headers, t_body = render(UseDPoPNonce("n-2").at_token_endpoint(), None)
    assert (t_status, t_body["error"], t_headers["dpop-nonce"]) == (400, "use_dpop_nonce", ["n-2"])


def test_repr_and_str_are_safe() -> None:
    error = InvalidToken(reason=Reason.EXPIRED)
    assert (
        repr(error) == f"InvalidToken(reason='expired', description={describe(Reason.EXPIRED)!r})"
    )
    assert str(error) == describe(Reason.EXPIRED)


def test_with_context_only_keeps_given_ids() -> None:
    error = InvalidToken().with_context(key_id="key_1", user_id=None)
    assert error.audit_context == {"key_id": "key_1"}
