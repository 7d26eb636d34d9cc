"""Connected accounts: a user's own vendor account, connected over OAuth, and the one-time
records of the connect flow (operator-issued links, authorizations in progress)."""

from __future__ import annotations

import enum

from pydantic import Field

from agentguard._model._base import Identifier, Record, UTCDateTime

__all__ = ["ConnectFlow", "ConnectedAccount", "ConnectionStatus", "FlowKind"]


class ConnectionStatus(str, enum.Enum):
    """``active``: usable. ``broken``: the vendor refused to renew it (``invalid_grant``); it
    stays refused until the user connects again."""

    ACTIVE = "active"
    BROKEN = "broken"


class ConnectedAccount(Record):
    """One user's connection to one service's vendor account, as it rests in storage.

    At most one per (``service``, ``user_id``). ``access_token`` and ``refresh_token`` are
    vault ciphertexts (AES-256-GCM under the key ring) whose associated data binds service,
    user id, connection id, key id, creation time and which token it is
    (:mod:`agentguard.connect._sealing`): a row moved to another user or service, or a refresh
    token put in the access token's place, no longer opens. A store returns every field
    exactly as written (times to the microsecond).

    Attributes:
        version: 1 when connected; each update (a refresh, marking it broken) writes
            ``version + 1`` through :meth:`ConnectionStore.update_connection`, a
            compare-and-set, so concurrent refreshes on several instances never lose a
            rotated refresh token.
        expires_at: when the vendor's access token expires (``None``: the vendor did not say).
        scopes: the scopes the vendor granted.
    """

    id: Identifier
    service: Identifier
    user_id: Identifier
    status: ConnectionStatus = ConnectionStatus.ACTIVE
    access_token: bytes = Field(repr=False)
    refresh_token: bytes | None = Field(default=None, repr=False)
    expires_at: UTCDateTime | None = None
    scopes: tuple[str, ...] = ()
    key_id: str
    created_at: UTCDateTime
    updated_at: UTCDateTime
    version: int = Field(default=1, ge=1)


class FlowKind(str, enum.Enum):
    """``ticket``: an operator-issued one-time connect link for a human. ``state``: an
    authorization in progress at the vendor (the OAuth ``state``)."""

    TICKET = "ticket"
    STATE = "state"


class ConnectFlow(Record):
    """A single-use record of the connect flow, found by the SHA-256 of its random token.

    The token itself (the link's ticket, the OAuth ``state``) is never stored.

    Attributes:
        token_hash: SHA-256 of the token, 32 raw bytes.
        browser_hash: ``state`` only: SHA-256 of the browser-binding cookie set when the
            authorization started; the callback must come from the same browser.
        verifier: ``state`` only: the PKCE code verifier, sealed under the key ring.
        created_by: who issued a ticket (an operator token's name, ``cli``), for the audit.
    """

    id: Identifier
    kind: FlowKind
    token_hash: bytes = Field(repr=False, min_length=32, max_length=32)
    service: Identifier
    user_id: Identifier
    created_at: UTCDateTime
    expires_at: UTCDateTime
    browser_hash: bytes | None = Field(default=None, repr=False)
    verifier: bytes | None = Field(default=None, repr=False)
    created_by: str | None = None
