"""Errors are values: read-only once built; with_context gives a new error; copies keep fields."""

from __future__ import annotations

import copy
import pickle
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard._config_source import SourceError
from agentguard._extras import MissingExtra
from agentguard.cli._errors import CommandError
from agentguard.config import SettingsError
from agentguard.errors import (
    AgentGuardError,
    AuditUnavailable,
    AuthenticationError,
    BadGateway,
    Challenge,
    ConfigurationError,
    CorruptRecord,
    GatewayTimeout,
    InsufficientScope,
    InvalidClient,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    IssuanceRefused,
    MalformedKey,
    MethodNotAllowed,
    MissingCredentials,
    PayloadTooLarge,
    Reason,
    RequestRefused,
    RequestTimeout,
    ServiceUnavailable,
    StoreUnavailable,
    TokenEndpointError,
    TooManyRequests,
    UnsupportedGrantType,
    UnsupportedMediaType,
    UsageError,
    UseDPoPNonce,
)
from agentguard.review import RequestBlocked, Verdict
from agentguard.review._budget import ReviewDeadlineExceeded
from agentguard.review._linear import PatternError
from agentguard.storage import StorageError

CHALLENGE = Challenge(realm="api", schemes=("Bearer", "DPoP"), dpop_algs=("ES256",))
PLAIN = [
    RequestRefused,
    AuthenticationError,
    MissingCredentials,
    InvalidToken,
    MalformedKey,
    InvalidDPoPProof,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    TooManyRequests,
    TokenEndpointError,
    InvalidGrant,
    InvalidClient,
    UnsupportedGrantType,
    InvalidScope,
    IssuanceRefused,
    ServiceUnavailable,
    StoreUnavailable,
    CorruptRecord,
    AuditUnavailable,
]
ID_NAMES = ["key_id", "family_id", "user_id", "workspace_id", "account_id"]

texts = st.text(max_size=40)
reasons = st.sampled_from(list(Reason))
ids = st.dictionaries(st.sampled_from(ID_NAMES), st.none() | st.text(min_size=1, max_size=12))


@st.composite
def refusals(draw: st.DrawFn) -> RequestRefused:
    """Any refusal errors.py defines, built through its own constructor."""
    description = draw(st.none() | texts)
    reason = draw(st.none() | reasons)
    error: RequestRefused = draw(
        st.one_of(
            st.sampled_from(PLAIN).map(lambda cls: cls(description, reason=reason)),
            st.builds(InsufficientScope, st.none() | texts, required=st.none() | texts),
            st.builds(UseDPoPNonce, texts, st.none() | texts),
            st.builds(MethodNotAllowed, st.lists(st.sampled_from(["GET", "POST"]), min_size=1)),
            st.builds(BadGateway, texts, st.none() | texts, reason=st.none() | reasons),
            st.builds(GatewayTimeout, texts),
            st.builds(lambda r: RequestBlocked(Verdict.block("secrets", r)), st.just("leak")),
        )
    )
    return error.with_context(**draw(ids))


def _fields(error: BaseException) -> dict[str, Any]:
    return {name: value for name, value in vars(error).items() if name != "_agentguard_sealed"}


def _sent(error: RequestRefused) -> tuple[int, list[tuple[str, str]], bytes]:
    return error.to_http(CHALLENGE)


def _twins(error: AgentGuardError) -> list[AgentGuardError]:
    pickled = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
    return [copy.copy(error), copy.deepcopy(error), pickled]


@given(error=refusals(), name=st.sampled_from(["reason", "description", "args", "other"]))
def test_a_built_error_is_read_only(error: RequestRefused, name: str) -> None:
    before, sent = _fields(error), _sent(error)
    for attribute in [*vars(error), name]:
        with pytest.raises(AttributeError, match="immutable"):
            setattr(error, attribute, "changed")
        if hasattr(error, attribute):
            with pytest.raises(AttributeError, match="immutable"):
                delattr(error, attribute)
    with pytest.raises(TypeError):
        error.audit_context["key_id"] = "changed"  # type: ignore[index]
    assert (_fields(error), _sent(error)) == (before, sent)


@given(error=refusals(), more=ids)
def test_with_context_returns_a_new_error_and_leaves_the_old_one(
    error: RequestRefused, more: dict[str, str | None]
) -> None:
    before = dict(error.audit_context)
    try:
        raise error
    except RequestRefused as caught:
        named = caught.with_context(**more)
    assert named is not error and type(named) is type(error)
    assert dict(error.audit_context) == before
    assert dict(named.audit_context) == {
        **before,
        **{k: v for k, v in more.items() if v is not None},
    }
    assert named.__traceback__ is None and error.__traceback__ is not None
    same = {k: v for k, v in _fields(named).items() if k != "_audit_context"}
    assert same == {k: v for k, v in _fields(error).items() if k != "_audit_context"}
    assert (named.args, repr(named), _sent(named)) == (error.args, repr(error), _sent(error))


@given(error=refusals())
def test_copies_and_pickles_keep_class_and_fields(error: RequestRefused) -> None:
    if sys.version_info >= (3, 11):
        error.add_note("a note")
    for twin in _twins(error):
        assert isinstance(twin, RequestRefused)
        assert type(twin) is type(error) and twin is not error
        assert (_fields(twin), twin.args, _sent(twin)) == (_fields(error), error.args, _sent(error))
        with pytest.raises(AttributeError):
            twin.description = "changed"
        if sys.version_info >= (3, 11):
            twin.add_note("only on the copy")
            assert error.__notes__ == ["a note"]


def test_python_exception_state_still_works_on_a_sealed_error() -> None:
    cause = OSError("driver")
    error = StoreUnavailable()
    with pytest.raises(StoreUnavailable) as raised:
        raise error from cause
    assert raised.value is error and error.__cause__ is cause and error.__traceback__ is not None
    error.__suppress_context__ = False
    error.__context__ = None
    error.__cause__ = None
    assert error.with_traceback(None) is error and error.__traceback__ is None
    if sys.version_info >= (3, 11):
        error.add_note("seen by the guard")
        assert error.__notes__ == ["seen by the guard"]


def _refuse_named() -> None:
    """What the guard does with a refusal about a key: re-raise it, naming the key."""
    try:
        raise InvalidToken(reason=Reason.REVOKED) from OSError("driver")
    except InvalidToken as error:
        raise error.with_context(key_id="key_1", user_id="u1") from None


def test_the_guard_pattern_re_raises_the_named_copy_and_keeps_the_original() -> None:
    with pytest.raises(InvalidToken) as raised:
        _refuse_named()
    named = raised.value
    original = named.__context__
    assert isinstance(original, InvalidToken)
    assert named is not original and dict(named.audit_context) == {
        "key_id": "key_1",
        "user_id": "u1",
    }
    assert named.__cause__ is None and named.__suppress_context__
    assert isinstance(original.__cause__, OSError) and named.reason is original.reason
    assert original.audit_context == {}


def _verdict() -> Verdict:
    return Verdict.block("secrets", "credential_in_body")


@pytest.mark.parametrize(
    "error",
    [
        ConfigurationError("no key-encryption key"),
        SettingsError([("agentguard.toml:3", "store.url", "not a URL")]),
        SourceError("agentguard.toml", "not valid TOML", field="store"),
        MissingExtra("asyncpg"),
        UsageError("revoke takes exactly one of key_id, family_id, user_id"),
        StorageError("the backend failed"),
        PatternError("not a linear-time (RE2) pattern"),
        ReviewDeadlineExceeded("the reviewer ran past its timeout"),
        CommandError("--token-url must be an http(s) URL"),
        RequestBlocked(_verdict()),
    ],
    ids=type,
)
def test_every_branch_is_sealed_and_copies_faithfully(error: AgentGuardError) -> None:
    for name in [*vars(error), "args", "extra"]:
        if name == "_agentguard_sealed":
            continue
        with pytest.raises(AttributeError, match="immutable"):
            setattr(error, name, None)
    for twin in _twins(error):
        assert type(twin) is type(error) and twin.args == error.args and str(twin) == str(error)
        assert _fields(twin) == _fields(error)
        if isinstance(error, ImportError):
            assert isinstance(twin, ImportError) and twin.name == error.name


def test_token_endpoint_forms_are_built_not_patched() -> None:
    proof = InvalidDPoPProof(reason=Reason.DPOP_HTU_MISMATCH).at_token_endpoint()
    nonce = UseDPoPNonce("n-1").at_token_endpoint()
    assert (proof.status, proof.code, proof.reason) == (
        400,
        "invalid_dpop_proof",
        Reason.DPOP_HTU_MISMATCH,
    )
    assert (nonce.status, nonce.code, ("dpop-nonce", "n-1") in nonce.response_headers()) == (
        400,
        "use_dpop_nonce",
        True,
    )
    assert isinstance(proof, TokenEndpointError) and isinstance(nonce, TokenEndpointError)
