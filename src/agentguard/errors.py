"""One exception root for everything agentguard raises on purpose.

``except AgentGuardError`` catches every error the library raises deliberately, and nothing
else (a bug's ``TypeError``, a cancellation). Refusals of a request live under
:class:`RequestRefused`, which knows how it renders on the wire: its HTTP status, its OAuth error
code (RFC 6749 §5.2, RFC 6750 §3.1), a safe description a developer can act on, and whether a
``WWW-Authenticate`` challenge goes with it. The web layers call :meth:`RequestRefused.to_http`,
so the WSGI adapter never needs ASGI code and no layer builds error bodies of its own. Every
other branch is raised to a Python caller and has no HTTP form::

    AgentGuardError                      root; no HTTP
    ├── RequestRefused                   500 server_error (the HTTP subtree)
    │   ├── AuthenticationError          401 (challenge)
    │   │   ├── MissingCredentials       401, no error code (RFC 6750 §3.1)
    │   │   ├── InvalidToken             401 invalid_token
    │   │   │   └── MalformedKey         401 invalid_token (bad prefix, length, checksum)
    │   │   ├── InvalidDPoPProof         401 invalid_dpop_proof (400 at the token endpoint)
    │   │   └── UseDPoPNonce             401 use_dpop_nonce + DPoP-Nonce (400 at the token endpoint)
    │   ├── InvalidRequest               400 invalid_request
    │   │   ├── MethodNotAllowed         405 invalid_request
    │   │   ├── RequestTimeout           408 invalid_request (the agent's body stalled)
    │   │   ├── PayloadTooLarge          413 invalid_request
    │   │   └── UnsupportedMediaType     415 invalid_request
    │   ├── TooManyRequests              429 too_many_requests + Retry-After
    │   ├── InsufficientScope            403 insufficient_scope
    │   ├── ReviewBlocked                403 request_blocked / response_blocked (review.errors)
    │   ├── TokenEndpointError           400 (no challenge)
    │   │   ├── InvalidGrant             400 invalid_grant
    │   │   ├── InvalidClient            401 invalid_client
    │   │   ├── UnsupportedGrantType     400 unsupported_grant_type
    │   │   └── InvalidScope             400 invalid_scope
    │   ├── IssuanceRefused              400 (operator API: user cannot get keys now)
    │   ├── BadGateway                   502 bad_gateway (names the service)
    │   │   └── GatewayTimeout           504 gateway_timeout
    │   └── ServiceUnavailable           503 temporarily_unavailable
    │       ├── StoreUnavailable         (CorruptRecord under it)
    │       └── AuditUnavailable
    ├── ConfigurationError               raised at start-up, never on a request (SettingsError,
    │                                    MissingExtra, also an ImportError; KeyMissing)
    ├── UsageError                       an API called wrongly; also a ValueError
    ├── StorageError                     a backend failed (storage.protocols); IntegrityError,
    │                                    SchemaVersionError
    ├── VaultError, MintingError, SecretEchoed                        (credentials)
    ├── CheckpointError, CheckpointRefused, ArchiveRefused            (audit)
    ├── PatternError, ReviewDeadlineExceeded                          (review)
    ├── JOSEError, JWKError, AmbiguousContentType                     (parsers)
    ├── AgentAuthError                                                (client)
    └── CommandError, CommandRefused                                  (cli)

Errors that used to be a built-in exception keep it as a second base (``PatternError`` is a
``ValueError``, ``ReviewDeadlineExceeded`` a ``TimeoutError``, ``MissingExtra`` an
``ImportError``), so ``except ValueError`` still catches them.

Errors are immutable: once constructed, setting or deleting an attribute raises
``AttributeError``. Python's own exception state (``__traceback__``, ``__cause__``,
``__context__``, ``__suppress_context__``, ``__notes__``) is untouched, so ``raise ... from
...``, ``add_note`` and tracebacks work as usual. :meth:`RequestRefused.with_context` returns a
new error; to add ids to an error on its way out, re-raise the copy::

    except InvalidToken as error:
        raise error.with_context(key_id=key_id) from None

Copies and pickles (``copy.copy``, ``pickle``) keep the class and every field, and never the
traceback.

Descriptions are fixed strings written here or by the raiser; no error ever carries a key, a
credential or other input the client sent, so ``str(error)``, ``repr(error)`` and the response
body are safe to log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from typing_extensions import Self

from agentguard._reasons import Reason, describe

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
    "InvalidTarget",
    "InvalidToken",
    "IssuanceRefused",
    "MalformedKey",
    "MethodNotAllowed",
    "MissingCredentials",
    "PayloadTooLarge",
    "Reason",
    "RequestRefused",
    "RequestTimeout",
    "ServiceUnavailable",
    "StoreUnavailable",
    "TokenEndpointError",
    "TooManyRequests",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
    "UsageError",
    "UseDPoPNonce",
    "describe",
    "render_challenges",
]

HTTPResponseParts = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class Challenge:
    """How a resource server introduces itself in ``WWW-Authenticate`` (RFC 6750 §3).

    ``schemes`` lists the authorization schemes offered, each rendered as its own challenge.
    ``extra`` holds further auth-params for every scheme, such as ``resource_metadata``
    (RFC 9728); ``dpop_algs`` is rendered as ``algs`` on the ``DPoP`` challenge only
    (RFC 9449 §7.1). ``scope`` is the space-separated scopes the resource offers, rendered as
    ``scope`` on every challenge (RFC 6750 §3, RFC 9449 §7.1) unless the error names the
    scope it needs itself (``insufficient_scope``).
    """

    realm: str = "agentguard"
    schemes: tuple[str, ...] = ("Bearer",)
    extra: tuple[tuple[str, str], ...] = ()
    dpop_algs: tuple[str, ...] = ()
    scope: str | None = None


def _quote(value: str) -> str:
    """An RFC 9110 quoted-string; only printable ASCII survives."""
    cleaned = "".join(ch for ch in value if " " <= ch <= "~")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Python's own exception state: settable on any error, at any time.
_PYTHON_STATE = frozenset(
    {"__traceback__", "__cause__", "__context__", "__suppress_context__", "__notes__"}
)
_SEALED = "_agentguard_sealed"  # in __dict__ once the constructor has returned


class _Sealing(type):
    """Seals each instance once its whole constructor (every ``__init__`` in the MRO) returned."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__call__(*args, **kwargs)
        BaseException.__setattr__(instance, _SEALED, True)
        return instance


def _restore(cls: type[AgentGuardError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """Rebuild a sealed error from its args and fields, without running its constructor."""
    error = cls.__new__(cls, *args)
    BaseException.__init__(error, *args)
    for name, value in state.items():
        BaseException.__setattr__(error, name, value)
    BaseException.__setattr__(error, _SEALED, True)
    return error


class AgentGuardError(Exception, metaclass=_Sealing):
    """Root of every error agentguard raises on purpose.

    Instances are immutable: setting or deleting an attribute after construction raises
    ``AttributeError`` (Python's ``__traceback__``, ``__cause__``, ``__context__`` and
    ``__notes__`` excepted). It carries no HTTP rendering: refusals of a request are
    :class:`RequestRefused`.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name not in _PYTHON_STATE and self.__dict__.get(_SEALED, False):
            raise AttributeError(f"{type(self).__name__} is immutable; cannot set {name!r}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name not in _PYTHON_STATE and self.__dict__.get(_SEALED, False):
            raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name!r}")
        super().__delattr__(name)

    def _fields(self) -> dict[str, Any]:
        state = {name: value for name, value in vars(self).items() if name != _SEALED}
        if "__notes__" in state:  # the copy gets its own list
            state["__notes__"] = list(state["__notes__"])
        if isinstance(self, ImportError):  # slots, not in __dict__
            state.update(name=self.name, path=self.path, msg=self.msg)
        return state

    def _evolve(self, **changes: Any) -> Self:
        """A copy with the same class, args and fields, ``changes`` applied; no traceback."""
        copy: Self = _restore(type(self), self.args, {**self._fields(), **changes})
        return copy

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), self.args, self._fields())


class RequestRefused(AgentGuardError):
    """A refusal of a request or token operation, with its HTTP rendering.

    Attributes:
        status: HTTP status code of the response that reports it.
        error: OAuth error code, or ``None`` where the RFCs ask for none.
        reason: the precise :class:`Reason`, recorded in audit events.
        description: safe, human-readable explanation (never contains secrets).
        audit_context: ids (``key_id``, ``user_id``, ...) for the audit event, read-only.
    """

    status: ClassVar[int] = 500
    error: ClassVar[str | None] = "server_error"
    default_reason: ClassVar[Reason] = Reason.INTERNAL_ERROR
    sends_challenge: ClassVar[bool] = False
    challenge_scheme: ClassVar[str | None] = None  # error params only on this scheme's challenge

    reason: Reason
    description: str

    def __init__(self, description: str | None = None, *, reason: Reason | None = None) -> None:
        self.reason = reason if reason is not None else self.default_reason
        self.description = description if description is not None else describe(self.reason)
        self._audit_context: dict[str, str] = {}
        super().__init__(self.description)

    @property
    def code(self) -> str | None:
        """The OAuth error code this instance renders."""
        return self.error

    @property
    def audit_context(self) -> Mapping[str, str]:
        """Ids for the audit event (``key_id``, ``user_id``, ...); never secrets."""
        return MappingProxyType(self._audit_context)

    def with_context(self, **ids: str | None) -> Self:
        """A new error like this one whose audit context also holds ``ids`` (``None`` skipped).

        This error is unchanged; the copy has no traceback. Re-raise it to send it on:
        ``raise error.with_context(key_id=...) from None``.
        """
        merged = {**self._audit_context, **{k: v for k, v in ids.items() if v is not None}}
        return self._evolve(_audit_context=merged)

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


def render_challenges(challenge: Challenge, error: RequestRefused | None = None) -> list[str]:
    """One ``WWW-Authenticate`` value per scheme, with the error's params on each.

    Errors that belong to one scheme (DPoP proof errors) put their params on that scheme's
    challenge only (RFC 9449 §7.1); the others get a bare challenge.
    """
    values = []
    for scheme in challenge.schemes:
        params: list[tuple[str, str]] = [("realm", challenge.realm)]
        if error is not None and error.challenge_scheme in (None, scheme):
            params.extend(error.challenge_params())
        if challenge.scope and all(name != "scope" for name, _ in params):
            params.append(("scope", challenge.scope))
        params.extend(challenge.extra)
        rendered = ", ".join(f"{name}={_quote(value)}" for name, value in params)
        value = f"{scheme} {rendered}"
        if scheme == "DPoP" and challenge.dpop_algs:
            value += f", algs={_quote(' '.join(challenge.dpop_algs))}"
        values.append(value)
    return values


class AuthenticationError(RequestRefused):
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
        return _TokenProofError(self.description, reason=self.reason)


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
        return _TokenNonceError(self.nonce, self.description, reason=self.reason)


class InvalidRequest(RequestRefused):
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


class TooManyRequests(RequestRefused):
    """One caller already holds its share of a service's upstream connections: 429."""

    status = 429
    error: ClassVar[str | None] = "too_many_requests"
    default_reason = Reason.CALLER_CONCURRENCY_LIMIT
    retry_after: ClassVar[int] = 1

    def response_headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class InsufficientScope(RequestRefused):
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


class TokenEndpointError(RequestRefused):
    """Errors of the token, revocation and introspection endpoints (RFC 6749 §5.2)."""

    status = 400
    error = "invalid_request"
    default_reason = Reason.MALFORMED_REQUEST


class _TokenProofError(TokenEndpointError):
    """:class:`InvalidDPoPProof` as the token endpoint reports it (400, RFC 9449 §5)."""

    error = "invalid_dpop_proof"
    default_reason = Reason.DPOP_PROOF_MALFORMED


class _TokenNonceError(TokenEndpointError):
    """:class:`UseDPoPNonce` as the token endpoint reports it (400 and ``DPoP-Nonce``)."""

    error = "use_dpop_nonce"
    default_reason = Reason.DPOP_NONCE_REQUIRED

    def __init__(
        self, nonce: str, description: str | None = None, *, reason: Reason | None = None
    ) -> None:
        self.nonce = nonce
        super().__init__(description, reason=reason)

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


class InvalidTarget(TokenEndpointError):
    """RFC 8707 §2: the ``resource`` asked for is malformed or not allowed for this key (400)."""

    error = "invalid_target"
    default_reason = Reason.INVALID_TARGET


class IssuanceRefused(RequestRefused):
    """Keys cannot be issued for this user and workspace right now (operator-facing)."""

    status = 400
    error = "invalid_request"
    default_reason = Reason.UNKNOWN_USER


class ServiceUnavailable(RequestRefused):
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


class BadGateway(RequestRefused):
    """An upstream service failed on a proxied request: 502 naming the service, never its secret."""

    status = 502
    error: ClassVar[str | None] = "bad_gateway"
    default_reason = Reason.UPSTREAM_UNREACHABLE

    def __init__(
        self, service: str, description: str | None = None, *, reason: Reason | None = None
    ) -> None:
        self.service = service
        if description is None:
            why = describe(self.default_reason if reason is None else reason)
            description = f"{service}: {why}"
        super().__init__(description, reason=reason)

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
    """The library was configured inconsistently; raised at start-up, not per request.

    Not a refusal of a request, so it has no HTTP form; nor a ``ValueError``: it is about the
    settings and the environment (files, extras, keys), not one argument's value.
    """


class UsageError(AgentGuardError, ValueError):
    """An API was called wrongly: the caller's mistake, never reported as an outage.

    Also a ``ValueError``, as Python's own misuse errors are.
    """
