"""One exception hierarchy for every refusal agentguard makes.

Each error knows how it renders on the wire: its HTTP status, its OAuth error code (RFC 6749 §5.2,
RFC 6750 §3.1), a safe description a developer can act on, and whether a ``WWW-Authenticate``
challenge goes with it. The web layers call :meth:`AgentGuardError.to_http`, so the WSGI adapter
never needs ASGI code and no layer builds error bodies of its own::

    AgentGuardError                      500 server_error
    ├── AuthenticationError              401 (challenge)
    │   ├── MissingCredentials           401, no error code (RFC 6750 §3.1)
    │   ├── InvalidToken                 401 invalid_token
    │   │   └── MalformedKey             401 invalid_token (bad prefix, length, checksum)
    │   ├── InvalidDPoPProof             401 invalid_dpop_proof (400 at the token endpoint)
    │   └── UseDPoPNonce                 401 use_dpop_nonce + DPoP-Nonce (400 at the token endpoint)
    ├── InvalidRequest                   400 invalid_request
    │   ├── MethodNotAllowed             405 invalid_request
    │   ├── RequestTimeout               408 invalid_request (the agent's body stalled)
    │   ├── PayloadTooLarge              413 invalid_request
    │   └── UnsupportedMediaType         415 invalid_request
    ├── TooManyRequests                  429 too_many_requests + Retry-After
    ├── InsufficientScope                403 insufficient_scope
    ├── TokenEndpointError               400 (no challenge)
    │   ├── InvalidGrant                 400 invalid_grant
    │   ├── InvalidClient                401 invalid_client
    │   ├── UnsupportedGrantType         400 unsupported_grant_type
    │   └── InvalidScope                 400 invalid_scope
    ├── IssuanceRefused                  400 (operator API: user cannot get keys now)
    ├── BadGateway                       502 bad_gateway (names the service)
    │   └── GatewayTimeout               504 gateway_timeout
    ├── ServiceUnavailable               503 temporarily_unavailable
    │   ├── StoreUnavailable
    │   └── AuditUnavailable
    └── ConfigurationError               raised at start-up, never on a request

Descriptions are fixed strings written here or by the raiser; no error ever carries a key, a
credential or other input the client sent, so ``str(error)``, ``repr(error)`` and the response
body are safe to log.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from typing_extensions import Self

__all__ = [
    "AgentGuardError",
    "AuditUnavailable",
    "AuthenticationError",
    "BadGateway",
    "Challenge",
    "ConfigurationError",
    "CorruptRecord",
    "GatewayTimeout",
    "HTTPResponseParts",
    "InsufficientScope",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidToken",
    "IssuanceRefused",
    "MalformedKey",
    "MethodNotAllowed",
    "MissingCredentials",
    "PayloadTooLarge",
    "Reason",
    "RequestTimeout",
    "ServiceUnavailable",
    "StoreUnavailable",
    "TokenEndpointError",
    "TooManyRequests",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
    "UseDPoPNonce",
    "describe",
    "render_challenges",
]

HTTPResponseParts = tuple[int, list[tuple[str, str]], bytes]


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
}


def describe(reason: Reason) -> str:
    """The safe, client-facing sentence for ``reason``."""
    return _REASON_TEXT[reason]


@dataclass(frozen=True)
class Challenge:
    """How a resource server introduces itself in ``WWW-Authenticate`` (RFC 6750 §3).

    ``schemes`` lists the authorization schemes offered, each rendered as its own challenge.
    ``extra`` holds further auth-params for every scheme, such as ``resource_metadata``
    (RFC 9728); ``dpop_algs`` is rendered as ``algs`` on the ``DPoP`` challenge only
    (RFC 9449 §7.1).
    """

    realm: str = "agentguard"
    schemes: tuple[str, ...] = ("Bearer",)
    extra: tuple[tuple[str, str], ...] = ()
    dpop_algs: tuple[str, ...] = ()


def _quote(value: str) -> str:
    """An RFC 9110 quoted-string; only printable ASCII survives."""
    cleaned = "".join(ch for ch in value if " " <= ch <= "~")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AgentGuardError(Exception):
    """Root of every error agentguard raises on purpose.

    Attributes:
        status: HTTP status code of the response that reports it.
        error: OAuth error code, or ``None`` where the RFCs ask for none.
        reason: the precise :class:`Reason`, recorded in audit events.
        description: safe, human-readable explanation (never contains secrets).
    """

    status: ClassVar[int] = 500
    error: ClassVar[str | None] = "server_error"
    default_reason: ClassVar[Reason] = Reason.INTERNAL_ERROR
    sends_challenge: ClassVar[bool] = False
    challenge_scheme: ClassVar[str | None] = None  # error params only on this scheme's challenge

    def __init__(self, description: str | None = None, *, reason: Reason | None = None) -> None:
        self.reason: Reason = reason if reason is not None else self.default_reason
        self.description: str = description if description is not None else describe(self.reason)
        self.audit_context: dict[str, str] = {}
        self.error_override: str | None = None
        super().__init__(self.description)

    @property
    def code(self) -> str | None:
        """The OAuth error code this instance renders (``error`` unless overridden)."""
        return self.error_override if self.error_override is not None else self.error

    def with_context(self, **values: str | None) -> Self:
        """Attach ids (``key_id``, ``user_id``, ...) for the audit event; never secrets."""
        self.audit_context.update({k: v for k, v in values.items() if v is not None})
        return self

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(reason={self.reason.value!r}, description={self.description!r})"

    def challenge_params(self) -> list[tuple[str, str]]:
        """Auth-params this error adds to a challenge (``error``, ``error_description``, ...)."""
        params: list[tuple[str, str]] = []
        if self.code is not None:
            params.append(("error", self.code))
            params.append(("error_description", self.description))
        return params

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers besides content type and challenge (``Allow``, ``Retry-After``, ...)."""
        return []

    def body(self) -> dict[str, str]:
        """The JSON error body (RFC 6749 §5.2 members plus ``reason``)."""
        body: dict[str, str] = {}
        if self.code is not None:
            body["error"] = self.code
        body["error_description"] = self.description
        body["reason"] = self.reason.value
        return body

    def to_http(self, challenge: Challenge | None = None) -> HTTPResponseParts:
        """Render as ``(status, headers, body)``.

        A ``WWW-Authenticate`` header per scheme is added when this error sends a challenge and
        ``challenge`` is given (resource servers give one; the token endpoint does not).
        """
        headers = [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ]
        if challenge is not None and self.sends_challenge:
            headers.extend(
                ("www-authenticate", value) for value in render_challenges(challenge, self)
            )
        headers.extend(self.response_headers())
        body = json.dumps(self.body(), separators=(",", ":"), ensure_ascii=True).encode()
        return self.status, headers, body


def render_challenges(challenge: Challenge, error: AgentGuardError | None = None) -> list[str]:
    """One ``WWW-Authenticate`` value per scheme, with the error's params on each.

    Errors that belong to one scheme (DPoP proof errors) put their params on that scheme's
    challenge only (RFC 9449 §7.1); the others get a bare challenge.
    """
    values = []
    for scheme in challenge.schemes:
        params: list[tuple[str, str]] = [("realm", challenge.realm)]
        if error is not None and error.challenge_scheme in (None, scheme):
            params.extend(error.challenge_params())
        params.extend(challenge.extra)
        rendered = ", ".join(f"{name}={_quote(value)}" for name, value in params)
        value = f"{scheme} {rendered}"
        if scheme == "DPoP" and challenge.dpop_algs:
            value += f", algs={_quote(' '.join(challenge.dpop_algs))}"
        values.append(value)
    return values


class AuthenticationError(AgentGuardError):
    """The caller is not (or no longer) authenticated: 401 with a challenge."""

    status = 401
    error: ClassVar[str | None] = "invalid_token"
    default_reason = Reason.UNKNOWN_KEY
    sends_challenge = True


class MissingCredentials(AuthenticationError):
    """No credential was presented; RFC 6750 §3.1 asks for a challenge with no error code."""

    error = None
    default_reason = Reason.MISSING_CREDENTIALS


class InvalidToken(AuthenticationError):
    """The presented key is malformed, unknown, expired, revoked, or its owner is not live."""


class MalformedKey(InvalidToken):
    """The string is not an agentguard key at all; detected before any storage lookup."""

    default_reason = Reason.MALFORMED_KEY


class InvalidDPoPProof(AuthenticationError):
    """The DPoP proof is missing, malformed, or fails a check of RFC 9449 §4.3.

    At a resource server: 401 with a ``DPoP`` challenge; at the token endpoint, render
    :meth:`at_token_endpoint` instead (400, RFC 9449 §5).
    """

    error: ClassVar[str | None] = "invalid_dpop_proof"
    default_reason = Reason.DPOP_PROOF_MALFORMED
    challenge_scheme: ClassVar[str | None] = "DPoP"

    def at_token_endpoint(self) -> TokenEndpointError:
        """The same refusal as the token endpoint reports it (400 ``invalid_dpop_proof``)."""
        error = TokenEndpointError(self.description, reason=self.reason)
        error.error_override = "invalid_dpop_proof"
        return error


class UseDPoPNonce(AuthenticationError):
    """The server wants a proof carrying its nonce (RFC 9449 §8/§9); the nonce rides along."""

    error: ClassVar[str | None] = "use_dpop_nonce"
    default_reason = Reason.DPOP_NONCE_REQUIRED
    challenge_scheme: ClassVar[str | None] = "DPoP"

    def __init__(self, nonce: str, description: str | None = None) -> None:
        self.nonce = nonce
        super().__init__(description)

    def response_headers(self) -> list[tuple[str, str]]:
        return [("dpop-nonce", self.nonce)]

    def at_token_endpoint(self) -> TokenEndpointError:
        """400 ``use_dpop_nonce`` with the ``DPoP-Nonce`` header (RFC 9449 §8)."""
        error = _TokenNonceError(self.description, reason=self.reason)
        error.nonce = self.nonce
        return error


class InvalidRequest(AgentGuardError):
    """The request is malformed (RFC 6750 §3.1 / RFC 6749 §5.2 ``invalid_request``)."""

    status = 400
    error = "invalid_request"
    default_reason = Reason.MALFORMED_REQUEST
    sends_challenge = True


class MethodNotAllowed(InvalidRequest):
    """An OAuth endpoint was called with a method other than the ones in ``allow``."""

    status = 405
    sends_challenge = False

    def __init__(self, allow: Sequence[str] = ("POST",)) -> None:
        self.allow = tuple(allow)
        super().__init__(f"use {' or '.join(self.allow)}")

    def response_headers(self) -> list[tuple[str, str]]:
        return [("allow", ", ".join(self.allow))]


class PayloadTooLarge(InvalidRequest):
    """A request body exceeded the configured cap."""

    status = 413
    sends_challenge = False


class RequestTimeout(InvalidRequest):
    """The agent's request body stalled (idle deadline) or took too long in all: 408."""

    status = 408
    sends_challenge = False
    default_reason = Reason.REQUEST_BODY_TIMEOUT

    def response_headers(self) -> list[tuple[str, str]]:
        return [("connection", "close")]


class UnsupportedMediaType(InvalidRequest):
    """The request body uses a content coding the gateway does not accept: 415."""

    status = 415
    sends_challenge = False
    default_reason = Reason.UNSUPPORTED_CONTENT_ENCODING

    def response_headers(self) -> list[tuple[str, str]]:
        return [("accept-encoding", "identity")]


class TooManyRequests(AgentGuardError):
    """One caller already holds its share of a service's upstream connections: 429."""

    status = 429
    error: ClassVar[str | None] = "too_many_requests"
    default_reason = Reason.CALLER_CONCURRENCY_LIMIT
    retry_after: ClassVar[int] = 1

    def response_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class InsufficientScope(AgentGuardError):
    """The user's live grants, narrowed by the key's scope, do not cover the request."""

    status = 403
    error = "insufficient_scope"
    default_reason = Reason.INSUFFICIENT_SCOPE
    sends_challenge = True

    def __init__(
        self,
        description: str | None = None,
        *,
        required: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.required = required
        if description is None and required is not None:
            description = f"this request needs {required}"
        super().__init__(description, reason=reason)

    def challenge_params(self) -> list[tuple[str, str]]:
        params = super().challenge_params()
        if self.required is not None:
            params.append(("scope", self.required))
        return params

    def body(self) -> dict[str, str]:
        body = super().body()
        if self.required is not None:
            body["scope"] = self.required
        return body


class TokenEndpointError(AgentGuardError):
    """Errors of the token, revocation and introspection endpoints (RFC 6749 §5.2)."""

    status = 400
    error = "invalid_request"
    default_reason = Reason.MALFORMED_REQUEST


class _TokenNonceError(TokenEndpointError):
    error = "use_dpop_nonce"
    nonce: str = ""

    def response_headers(self) -> list[tuple[str, str]]:
        return [("dpop-nonce", self.nonce)]


class InvalidGrant(TokenEndpointError):
    """The refresh key is malformed, unknown, expired, revoked, reused, or its owner is not live."""

    error = "invalid_grant"
    default_reason = Reason.UNKNOWN_KEY


class InvalidClient(TokenEndpointError):
    """Client authentication failed (introspection callers)."""

    status = 401
    error = "invalid_client"
    default_reason = Reason.INVALID_CLIENT
    sends_challenge = True


class UnsupportedGrantType(TokenEndpointError):
    """A grant type other than ``refresh_token`` was requested."""

    error = "unsupported_grant_type"
    default_reason = Reason.UNSUPPORTED_GRANT_TYPE


class InvalidScope(TokenEndpointError):
    """The scope asked for at the token endpoint is malformed or wider than allowed."""

    error = "invalid_scope"
    default_reason = Reason.INVALID_SCOPE


class IssuanceRefused(AgentGuardError):
    """Keys cannot be issued for this user and workspace right now (operator-facing)."""

    status = 400
    error = "invalid_request"
    default_reason = Reason.UNKNOWN_USER


class ServiceUnavailable(AgentGuardError):
    """A dependency needed to decide safely is down; the request is refused (fail closed)."""

    status = 503
    error = "temporarily_unavailable"
    default_reason = Reason.STORE_UNAVAILABLE
    retry_after: ClassVar[int] = 1

    def response_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class StoreUnavailable(ServiceUnavailable):
    """The storage backend failed or timed out."""


class CorruptRecord(StoreUnavailable):
    """A stored record does not parse (edited outside agentguard, or a foreign writer).

    Refused like an outage (503) wherever nothing better is known; the credential swapper
    reports a corrupt credential row as the service's credential being unavailable (502).
    """


class AuditUnavailable(ServiceUnavailable):
    """The audit store refused an append; no unrecorded action is allowed."""

    default_reason = Reason.AUDIT_UNAVAILABLE


class BadGateway(AgentGuardError):
    """An upstream service failed on a proxied request: 502 naming the service, never its secret."""

    status = 502
    error: ClassVar[str | None] = "bad_gateway"
    default_reason = Reason.UPSTREAM_UNREACHABLE

    def __init__(
        self, service: str, description: str | None = None, *, reason: Reason | None = None
    ) -> None:
        self.service = service
        super().__init__(description, reason=reason)
        if description is None:
            self.description = f"{service}: {self.description}"
            self.args = (self.description,)

    def body(self) -> dict[str, str]:
        body = super().body()
        body["service"] = self.service
        return body


class GatewayTimeout(BadGateway):
    """The upstream service did not answer in time: 504."""

    status = 504
    error: ClassVar[str | None] = "gateway_timeout"
    default_reason = Reason.UPSTREAM_TIMEOUT


class ConfigurationError(AgentGuardError):
    """The library was configured inconsistently; raised at start-up, not per request."""

    default_reason = Reason.INTERNAL_ERROR
