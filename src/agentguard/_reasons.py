"""Reason codes: the precise, machine-readable cause of every refusal, and its safe sentence.

Exported from :mod:`agentguard.errors`; kept apart because the table is long.
"""

from __future__ import annotations

import enum

__all__ = ["Reason", "describe"]


class Reason(str, enum.Enum):
    """Why a request or a token operation was refused; recorded in the audit log.

    Each member is a stable, machine-readable code. Clients see it in the ``reason`` member of
    the JSON error body; operators see it in audit events.
    """

    MISSING_CREDENTIALS = "missing_credentials"
    MALFORMED_KEY = "malformed_key"
    UNKNOWN_KEY = "unknown_key"
    WRONG_KEY_KIND = "wrong_key_kind"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USER_DISABLED = "user_disabled"
    NOT_A_MEMBER = "not_a_member"
    ACCOUNT_CLOSED = "account_closed"
    REFRESH_REUSED = "refresh_reused"
    UNKNOWN_USER = "unknown_user"
    UNKNOWN_WORKSPACE = "unknown_workspace"
    DPOP_BINDING_MISMATCH = "dpop_binding_mismatch"
    WRONG_AUDIENCE = "wrong_audience"
    AUDIENCE_REQUIRED = "audience_required"
    INVALID_TARGET = "invalid_target"
    INVALID_SCOPE = "invalid_scope"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    NO_ROUTE_RULE = "no_route_rule"
    MALFORMED_REQUEST = "malformed_request"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_CLIENT = "invalid_client"
    DPOP_PROOF_MISSING = "dpop_proof_missing"
    DPOP_PROOF_MALFORMED = "dpop_proof_malformed"
    DPOP_ALG_NOT_ALLOWED = "dpop_alg_not_allowed"
    DPOP_BAD_KEY = "dpop_bad_key"
    DPOP_BAD_SIGNATURE = "dpop_bad_signature"
    DPOP_HTM_MISMATCH = "dpop_htm_mismatch"
    DPOP_HTU_MISMATCH = "dpop_htu_mismatch"
    DPOP_IAT_OUT_OF_WINDOW = "dpop_iat_out_of_window"
    DPOP_REPLAYED = "dpop_replayed"
    DPOP_ATH_MISMATCH = "dpop_ath_mismatch"
    DPOP_NONCE_REQUIRED = "dpop_nonce_required"
    DPOP_REQUIRED = "dpop_required"
    CREDENTIAL_UNAVAILABLE = "credential_unavailable"
    MINTING_FAILED = "minting_failed"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_REJECTED_CREDENTIAL = "upstream_rejected_credential"
    UPSTREAM_PROTOCOL_ERROR = "upstream_protocol_error"
    REVIEW_BLOCKED = "review_blocked"
    SECRET_ECHO_BLOCKED = "secret_echo_blocked"  # noqa: S105 - a reason code, not a secret
    STORE_UNAVAILABLE = "store_unavailable"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    INTERNAL_ERROR = "internal_error"
    REQUEST_BODY_TIMEOUT = "request_body_timeout"
    CALLER_CONCURRENCY_LIMIT = "caller_concurrency_limit"
    KEY_OUTSIDE_CREDENTIAL_POSITION = "key_outside_credential_position"
    UNSUPPORTED_CONTENT_ENCODING = "unsupported_content_encoding"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_PENDING = "approval_pending"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_USED = "approval_used"
    APPROVAL_MISMATCH = "approval_mismatch"
    UNKNOWN_APPROVAL = "unknown_approval"
    APPROVAL_QUEUE_FULL = "approval_queue_full"
    BUDGET_EXHAUSTED = "budget_exhausted"
    RATE_LIMITED = "rate_limited"
    CONNECTION_REQUIRED = "connection_required"
    CONNECTION_BROKEN = "connection_broken"
    VENDOR_UNAVAILABLE = "vendor_unavailable"
    CONNECT_REFUSED = "connect_refused"


_REASON_TEXT: dict[Reason, str] = {
    Reason.MISSING_CREDENTIALS: "no access key was presented in the Authorization header",
    Reason.MALFORMED_KEY: "the key is not a well-formed agentguard key",
    Reason.UNKNOWN_KEY: "the key is not known to this server",
    Reason.WRONG_KEY_KIND: (
        "a refresh key cannot be used as an access key; exchange it at the token endpoint"
    ),
    Reason.EXPIRED: "the key has expired; use the refresh key to obtain a new access key",
    Reason.REVOKED: "the key has been revoked",
    Reason.USER_DISABLED: "the user who owns this key is disabled",
    Reason.NOT_A_MEMBER: "the user who owns this key is no longer a member of its workspace",
    Reason.ACCOUNT_CLOSED: "the account that owns this key is closed",
    Reason.REFRESH_REUSED: (
        "the refresh key was already used; every key of this session has been revoked"
    ),
    Reason.UNKNOWN_USER: "no such user",
    Reason.UNKNOWN_WORKSPACE: "no such workspace",
    Reason.DPOP_BINDING_MISMATCH: (
        "the key is bound to a different DPoP key, or needs a DPoP proof"
    ),
    Reason.WRONG_AUDIENCE: "the key was issued for another resource (RFC 8707 audience)",
    Reason.AUDIENCE_REQUIRED: (
        "this resource accepts only keys issued for it; issue or refresh the key with its"
        " resource (RFC 8707)"
    ),
    Reason.INVALID_TARGET: (
        "the requested resource is malformed or not one this key may be narrowed to (RFC 8707)"
    ),
    Reason.INVALID_SCOPE: "the requested scope is malformed or exceeds the key's scope",
    Reason.INSUFFICIENT_SCOPE: "the key's user lacks the permission this request needs",
    Reason.NO_ROUTE_RULE: "no permission rule covers this path, so it is denied",
    Reason.MALFORMED_REQUEST: "the request is malformed",
    Reason.UNSUPPORTED_SCHEME: "unsupported authorization scheme; use Bearer",
    Reason.UNSUPPORTED_GRANT_TYPE: "only grant_type=refresh_token is supported",
    Reason.INVALID_CLIENT: "client authentication failed",
    Reason.DPOP_PROOF_MISSING: "this key is DPoP-bound: send exactly one DPoP proof header",
    Reason.DPOP_PROOF_MALFORMED: "the DPoP proof is not a well-formed dpop+jwt",
    Reason.DPOP_ALG_NOT_ALLOWED: "the DPoP proof's alg is not in the server's allow-list",
    Reason.DPOP_BAD_KEY: "the DPoP proof's jwk is missing, private, or not an allowed public key",
    Reason.DPOP_BAD_SIGNATURE: "the DPoP proof's signature does not verify with its jwk",
    Reason.DPOP_HTM_MISMATCH: "the DPoP proof's htm does not match the request method",
    Reason.DPOP_HTU_MISMATCH: "the DPoP proof's htu does not match the request URL",
    Reason.DPOP_IAT_OUT_OF_WINDOW: "the DPoP proof's iat is outside the accepted time window",
    Reason.DPOP_REPLAYED: "this DPoP proof (jti) was already used",
    Reason.DPOP_ATH_MISMATCH: "the DPoP proof's ath does not match the presented key",
    Reason.DPOP_NONCE_REQUIRED: "a fresh server nonce is required in the DPoP proof",
    Reason.DPOP_REQUIRED: "this server only accepts DPoP-bound keys presented with a proof",
    Reason.CREDENTIAL_UNAVAILABLE: "no usable credential is configured for this service and user",
    Reason.MINTING_FAILED: "the service refused to mint a user-scoped token",
    Reason.UPSTREAM_UNREACHABLE: "the service could not be reached",
    Reason.UPSTREAM_TIMEOUT: "the service did not answer in time",
    Reason.UPSTREAM_REJECTED_CREDENTIAL: "the service rejected the credential it was sent",
    Reason.UPSTREAM_PROTOCOL_ERROR: "the service sent an invalid response",
    Reason.REVIEW_BLOCKED: "a reviewer blocked the request or the response",
    Reason.SECRET_ECHO_BLOCKED: "the service's response contained a credential and was withheld",
    Reason.STORE_UNAVAILABLE: "the key store is unavailable; retry later",
    Reason.AUDIT_UNAVAILABLE: (
        "the audit log is unavailable, so no action can be recorded; retry later"
    ),
    Reason.INTERNAL_ERROR: "internal error",
    Reason.REQUEST_BODY_TIMEOUT: "the request body did not arrive in time",
    Reason.CALLER_CONCURRENCY_LIMIT: (
        "too many of your requests to this service are in flight; retry when one finishes"
    ),
    Reason.KEY_OUTSIDE_CREDENTIAL_POSITION: (
        "the request carries an agentguard key outside the credential position"
    ),
    Reason.UNSUPPORTED_CONTENT_ENCODING: (
        "compressed request bodies are not accepted; send the body uncompressed"
    ),
    Reason.APPROVAL_REQUIRED: (
        "this call needs a human's approval; an approval was requested: wait until it is "
        "approved, then send the same request again naming the approval"
    ),
    Reason.APPROVAL_PENDING: "the approval for this call has not been decided yet",
    Reason.APPROVAL_DENIED: "an operator denied the approval for this call",
    Reason.APPROVAL_EXPIRED: "the approval for this call expired; send it again for a new one",
    Reason.APPROVAL_USED: "the approval was already used; an approval allows one call",
    Reason.APPROVAL_MISMATCH: (
        "this request is not the call that was approved (key, user, service, method, target, "
        "body or rule differ); send it without the approval header to request a new approval"
    ),
    Reason.UNKNOWN_APPROVAL: "no approval with this id exists for you",
    Reason.APPROVAL_QUEUE_FULL: (
        "too many of your calls are already waiting for approval; retry once one of them is "
        "decided or has expired"
    ),
    Reason.BUDGET_EXHAUSTED: "the budget for this service is spent until the window resets",
    Reason.RATE_LIMITED: "too many calls in a short time; retry after the interval given",
    Reason.CONNECTION_REQUIRED: (
        "this service acts with the user's own connected account, and the user has not "
        "connected one; a human must connect it (see connect_uri)"
    ),
    Reason.CONNECTION_BROKEN: (
        "the user's connected account for this service no longer works; a human must "
        "connect it again (see connect_uri)"
    ),
    Reason.VENDOR_UNAVAILABLE: (
        "the vendor's authorization server could not be reached or answered with an error"
    ),
    Reason.CONNECT_REFUSED: "the account connection could not be completed",
}


def describe(reason: Reason) -> str:
    """The safe, client-facing sentence for ``reason``."""
    return _REASON_TEXT[reason]
