"""Errors of the agent runtime.

These are raised in the agent's process, not rendered as HTTP responses, so they do not derive
from :class:`agentguard.errors.AgentGuardError`::

    AgentAuthError
    ├── CredentialsFileError   the credentials file is missing, unreadable, unsafe or malformed
    ├── RefreshFailed          the token endpoint refused to renew (carries error and reason)
    └── DPoPNonceLoop          a server kept demanding a new DPoP nonce

No error carries a key: messages hold only server error codes, reasons and file paths.
"""

from __future__ import annotations

__all__ = ["AgentAuthError", "CredentialsFileError", "DPoPNonceLoop", "RefreshFailed"]

_MAX_DESCRIPTION = 300


def _printable(text: str) -> str:
    cleaned = "".join(ch for ch in text if " " <= ch <= "~")
    return cleaned[:_MAX_DESCRIPTION]


class AgentAuthError(Exception):
    """Root of the errors :mod:`agentguard.client` raises on purpose."""


class CredentialsFileError(AgentAuthError):
    """The credentials file cannot be used; the message says what to do about it."""


class RefreshFailed(AgentAuthError):
    """The runtime could not obtain a working access key.

    Attributes:
        status: HTTP status of the refusing response (``None`` when no response applies).
        error: the OAuth ``error`` code, e.g. ``"invalid_grant"``.
        reason: agentguard's machine-readable ``reason``, e.g. ``"user_disabled"``, when given.
        description: the server's ``error_description`` (printable ASCII, truncated).

    ``terminal`` is true when retrying with the same refresh key cannot help (``invalid_grant``,
    or an access key refused again right after a successful refresh).
    """

    def __init__(
        self,
        *,
        status: int | None,
        error: str | None,
        reason: str | None = None,
        description: str | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.status = status
        self.error = _printable(error) if error else None
        self.reason = _printable(reason) if reason else None
        self.description = _printable(description) if description else None
        self.terminal = terminal if terminal is not None else self.error == "invalid_grant"
        detail = self.error or "no error code"
        if self.reason:
            detail += f" ({self.reason})"
        if self.description:
            detail += f": {self.description}"
        where = f" with HTTP {status}" if status is not None else ""
        super().__init__(f"key renewal failed{where}: {detail}")

    def __repr__(self) -> str:
        return (
            f"RefreshFailed(status={self.status!r}, error={self.error!r}, reason={self.reason!r})"
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
