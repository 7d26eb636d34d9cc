"""Errors of the agent runtime.

These are raised in the agent's process, not rendered as HTTP responses: they sit under the
library's root :class:`agentguard.errors.AgentGuardError`, beside (not under) the HTTP refusals::

    AgentAuthError
    ├── CredentialsFileError   the credentials file is missing, unreadable, unsafe or malformed
    ├── RefreshFailed          no working access key: permanent (invalid_grant) or transient
    ├── DPoPNonceLoop          a server kept demanding a new DPoP nonce
    ├── ApprovalPending        the call waits for a human's approval (403 approval_required)
    ├── AccountConnectionRequired  the service needs the user's connected account (403
    │                              connection_required): a human must connect it
    ├── ApprovalRefused        the approval cannot let the call run (denied, expired, used, ...)
    │   ├── ApprovalDenied     an operator said no
    │   └── ApprovalExpired    nobody decided (or the agent did not retry) in time
    └── ApprovalWaitFailed     waiting for a decision stopped without one
        └── ApprovalTimeout    the wait's deadline passed (also a ``TimeoutError``)

No error carries a key: messages hold only server error codes, reasons and file paths.
"""

from __future__ import annotations

import re
from datetime import datetime

from agentguard.errors import AgentGuardError

__all__ = [
    "CONNECTION_RESPONSE_HEADER",
    "AccountConnectionRequired",
    "AgentAuthError",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalPending",
    "ApprovalRefused",
    "ApprovalTimeout",
    "ApprovalWaitFailed",
    "CredentialsFileError",
    "DPoPNonceLoop",
    "RefreshFailed",
    "printable",
]

_MAX_DESCRIPTION = 300
_KEY_LIKE = re.compile(r"ag_(?:at|rt)_[0-9A-Za-z]{8,}")
_NEW_KEYS = "issue new keys with `agentguard keys issue`"

# what agentguard's ``reason`` codes on an invalid_grant mean, for a person reading the message
_WHY: dict[str, str] = {
    "user_disabled": "the user is disabled",
    "revoked": "the keys were revoked",
    "refresh_reused": "the refresh key was used twice, so its whole family was revoked",
    "expired": "the refresh key expired",
    "unknown_key": "the server does not know this key",
    "not_a_member": "the user is no longer a member of the workspace",
    "account_closed": "the account is closed",
    "unknown_user": "the user no longer exists",
    "unknown_workspace": "the workspace no longer exists",
    "dpop_binding_mismatch": "the keys are bound to another DPoP key",
}


def printable(text: str) -> str:
    """A server's text made safe to show: printable ASCII, short, and without anything shaped
    like an agentguard key (a hostile token endpoint could reflect the refresh key)."""
    cleaned = "".join(ch for ch in text if " " <= ch <= "~")
    return _KEY_LIKE.sub("[key]", cleaned)[:_MAX_DESCRIPTION]


class AgentAuthError(AgentGuardError):
    """Root of the errors :mod:`agentguard.client` raises on purpose."""


class CredentialsFileError(AgentAuthError):
    """The credentials file cannot be used; the message says what to do about it."""


class RefreshFailed(AgentAuthError):
    """The runtime could not obtain a working access key.

    ``str(error)`` is one line a developer can act on, e.g.
    ``refresh refused: invalid_grant (user_disabled: the user is disabled); issue new keys
    with `agentguard keys issue```. It never contains a key.

    Attributes:
        status: HTTP status of the refusing response (``None`` when no response came back).
        error: the OAuth error code (RFC 6749 section 5.2), e.g. ``"invalid_grant"``;
            ``"temporarily_unavailable"`` when the token endpoint could not be reached.
        reason: agentguard's machine-readable ``reason``, e.g. ``"user_disabled"``, when given.
        description: the server's ``error_description`` (printable ASCII, truncated).
        permanent: retrying cannot help; only a person can (new keys, re-enabling the user).
            True for ``invalid_grant`` (the user was disabled, the keys revoked, expired or
            reused) and for a 200 answer without a usable key pair (the refresh key is spent).
        transient: no answer, ``429`` or a ``5xx``: the same keys may work later.

    An error that is neither (another ``4xx``, or a renewed access key refused at once) points
    at configuration: a wrong token URL, DPoP clock skew, a service that does not share the
    token endpoint's store.
    """

    def __init__(
        self,
        *,
        status: int | None,
        error: str | None,
        reason: str | None = None,
        description: str | None = None,
        permanent: bool | None = None,
    ) -> None:
        self.status = status
        self.error = printable(error) if error else None
        self.reason = printable(reason) if reason else None
        self.description = printable(description) if description else None
        self.permanent = permanent if permanent is not None else self.error == "invalid_grant"
        super().__init__(self._message())

    @property
    def transient(self) -> bool:
        """No answer, ``429`` or ``5xx``: the same keys may work later."""
        if self.permanent:
            return False
        return self.status is None or self.status == 429 or self.status >= 500

    def _detail(self) -> str:
        why = _WHY.get(self.reason or "")
        parts = [f"{self.reason}: {why}" if why else self.reason] if self.reason else []
        if self.description and why is None:
            parts.append(self.description)
        if parts:
            return ": ".join(part for part in parts if part)
        return "key revoked or user disabled" if self.error == "invalid_grant" else "no detail"

    def _message(self) -> str:
        code = self.error or "no error code"
        if self.permanent:
            return f"refresh refused: {code} ({self._detail()}); {_NEW_KEYS}"
        if self.status is None:
            return (
                f"refresh failed: no answer from the token endpoint ({self._detail()}); retry later"
            )
        if self.transient:
            return f"refresh failed: HTTP {self.status} {code} ({self._detail()}); retry later"
        return f"refresh refused: HTTP {self.status} {code} ({self._detail()})"

    def __repr__(self) -> str:
        return (
            f"RefreshFailed(status={self.status!r}, error={self.error!r}, "
            f"reason={self.reason!r}, permanent={self.permanent!r})"
        )


class DPoPNonceLoop(AgentAuthError):
    """A server asked for a new DPoP nonce again right after the runtime sent the one it gave.

    The runtime retries a ``use_dpop_nonce`` refusal once; a second demand means the server and
    client disagree (clock skew, instances not sharing a nonce secret), so it stops instead of
    looping.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"{url} demanded a new DPoP nonce twice in a row; check that every server "
            "instance shares its nonce secret and that the clocks agree"
        )


APPROVAL_REQUEST_HEADER = "AgentGuard-Approval"


class ApprovalPending(AgentAuthError):
    """The guard held the call back for a human's approval (``403 approval_required``).

    Nothing was forwarded. Wait for the decision outside the model, with
    :meth:`AgentAuth.wait_for_approval <agentguard.client.AgentAuth.wait_for_approval>`, then
    send the *same* request again (same method, URL and body) with :attr:`retry_headers`; it
    runs once. Sending it again without the header returns the same approval, not a new one.

    Attributes:
        approval_id: the approval to wait for (``apr_...``).
        approval_uri: where the server says its status can be polled, or ``None`` (the runtime
            then derives it from its token endpoint).
        expires_at: the approval must be decided and used before this instant (``None`` when
            the server did not say).
        reason: ``"approval_required"`` (just requested) or ``"approval_pending"`` (a retry
            named it before anyone decided).
        description: the server's ``error_description`` (printable ASCII, truncated).
    """

    def __init__(
        self,
        approval_id: str,
        *,
        approval_uri: str | None = None,
        expires_at: datetime | None = None,
        reason: str | None = None,
        description: str | None = None,
    ) -> None:
        self.approval_id = approval_id
        self.approval_uri = approval_uri
        self.expires_at = expires_at
        self.reason = printable(reason) if reason else "approval_required"
        self.description = printable(description) if description else None
        until = f" until {expires_at.isoformat()}" if expires_at is not None else ""
        super().__init__(f"approval {approval_id} is pending a human's decision{until}")

    @property
    def retry_headers(self) -> dict[str, str]:
        """The header that names the approval on the retry: ``{"AgentGuard-Approval": id}``."""
        return {APPROVAL_REQUEST_HEADER: self.approval_id}

    def __repr__(self) -> str:
        return f"ApprovalPending(approval_id={self.approval_id!r}, reason={self.reason!r})"


CONNECTION_RESPONSE_HEADER = "agentguard-connection"
"""The response header that marks the gateway's own ``connection_required`` refusal (it names
the service); the gateway drops a vendor's header of that name."""


class AccountConnectionRequired(AgentAuthError):
    """The service acts with the user's own connected vendor account, and there is none that
    works (``403 connection_required``). Nothing was forwarded.

    Retrying cannot help, nor can a new key: a human must connect (or reconnect) the account
    at :attr:`connect_uri`, identified as themselves there (the link carries no ticket: the
    person signs in at the gateway, or an operator issues them a one-time link). Report it to
    the person; it is not an instruction for the model.

    Attributes:
        service: the service whose account must be connected.
        connect_uri: the gateway's connect page for it, or ``None`` when the gateway named
            none, or named one that is not on the origin the refused request went to, over
            ``https`` (``http`` only on a loopback host): such a link is dropped, never shown.
        reason: ``"connection_required"`` (never connected, or disconnected) or
            ``"connection_broken"`` (the vendor refused to renew it).
        description: the server's ``error_description`` (printable ASCII, truncated).
    """

    def __init__(
        self,
        service: str,
        *,
        connect_uri: str | None = None,
        reason: str | None = None,
        description: str | None = None,
    ) -> None:
        self.service = service
        self.connect_uri = connect_uri
        self.reason = printable(reason) if reason else "connection_required"
        self.description = printable(description) if description else None
        where = f" at {connect_uri}" if connect_uri is not None else ""
        why = "is broken" if self.reason == "connection_broken" else "is not connected"
        super().__init__(f"{service}: the user's account {why}; a human must connect it{where}")

    def __repr__(self) -> str:
        return (
            f"AccountConnectionRequired(service={self.service!r}, reason={self.reason!r}, "
            f"connect_uri={self.connect_uri!r})"
        )


class ApprovalRefused(AgentAuthError):
    """The approval cannot let the call run; the agent should not retry it with this approval.

    Raised by a retry that named the approval (``403 approval_invalid``) and by
    :meth:`AgentAuth.wait_for_approval <agentguard.client.AgentAuth.wait_for_approval>`.
    Catch this class for every case; :class:`ApprovalDenied` and :class:`ApprovalExpired`
    name the two a runtime usually treats differently (report a denial to the person; an
    expired approval may be requested again by sending the call without the header).

    Attributes:
        approval_id: the approval concerned.
        reason: ``approval_denied``, ``approval_expired``, ``approval_used`` (it already ran
            its one call), ``approval_mismatch`` (the retry is not the approved call) or
            ``unknown_approval``.
        description: the server's ``error_description``, when there was one.
    """

    default_reason = "approval_refused"

    def __init__(
        self, approval_id: str, *, reason: str | None = None, description: str | None = None
    ) -> None:
        self.approval_id = approval_id
        self.reason = printable(reason) if reason else self.default_reason
        self.description = printable(description) if description else None
        detail = f": {self.description}" if self.description else ""
        super().__init__(f"approval {approval_id} refused ({self.reason}){detail}")

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(approval_id={self.approval_id!r}, reason={self.reason!r})"


class ApprovalDenied(ApprovalRefused):
    """An operator denied the approval (``reason == "approval_denied"``)."""

    default_reason = "approval_denied"


class ApprovalExpired(ApprovalRefused):
    """The approval expired before it was decided or used (``reason == "approval_expired"``).

    Sending the call again without the approval header requests a new approval.
    """

    default_reason = "approval_expired"


class ApprovalWaitFailed(AgentAuthError):
    """Waiting for an approval stopped without a decision.

    Attributes:
        approval_id: the approval that was being waited for (still pending, as far as known).
        status: the HTTP status of the last answer from the status endpoint (``None`` when
            none came back).
    """

    def __init__(self, approval_id: str, message: str, *, status: int | None = None) -> None:
        self.approval_id = approval_id
        self.status = status
        super().__init__(message)


class ApprovalTimeout(ApprovalWaitFailed, TimeoutError):
    """The wait's deadline passed while the approval was still pending.

    The approval may still be approved later (until it expires): waiting again with the same
    :class:`ApprovalPending` is fine.
    """
