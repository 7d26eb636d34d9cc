"""In-test fakes for the connected-accounts tests: a dict store and a programmable vendor."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from agentguard import Grants, Principal
from agentguard._model import ConnectedAccount, ConnectFlow, FlowKind
from agentguard._secret import Secret
from agentguard.connect import OAuthClientConfig, VendorTokens
from agentguard.connect._refresh import REFRESH_HINT
from agentguard.testing import FakeClock


def token(kind: str) -> str:
    """A random token value (no long one-character runs: the canary would flag them)."""
    return f"{kind}-{secrets.token_urlsafe(24)}"


def principal(user_id: str, clock: FakeClock) -> Principal:
    return Principal(
        user_id=user_id,
        workspace_id="w1",
        account_id="a1",
        key_id=f"key_{user_id}",
        family_id=f"fam_{user_id}",
        grants=Grants.from_scope("crm:write"),
        expires_at=clock.now() + timedelta(hours=1),
    )


class DictStore:
    """ConnectionStore and the leases of ConnectFlowStore, in dicts, as the Protocols say."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], ConnectedAccount] = {}
        self.leases: dict[str, tuple[str, datetime]] = {}
        self.updates = 0

    async def put_connection(self, record: ConnectedAccount) -> None:
        self.rows[(record.service, record.user_id)] = record

    async def get_connection(self, service: str, user_id: str) -> ConnectedAccount | None:
        return self.rows.get((service, user_id))

    async def update_connection(self, record: ConnectedAccount, *, version: int) -> bool:
        if record.version != version + 1:
            raise ValueError("version")
        stored = self.rows.get((record.service, record.user_id))
        if stored is None or stored.id != record.id or stored.version != version:
            return False
        self.rows[(record.service, record.user_id)] = record
        self.updates += 1
        return True

    async def delete_connection(
        self, service: str, user_id: str, *, connection_id: str | None = None
    ) -> ConnectedAccount | None:
        stored = self.rows.get((service, user_id))
        if stored is None or (connection_id is not None and stored.id != connection_id):
            return None
        return self.rows.pop((service, user_id))

    async def list_connections(
        self, *, user_id: str | None = None, service: str | None = None
    ) -> list[ConnectedAccount]:
        return [
            row
            for key, row in sorted(self.rows.items())
            if (user_id is None or row.user_id == user_id)
            and (service is None or row.service == service)
        ]

    async def put_flow(self, record: ConnectFlow) -> None:
        raise NotImplementedError

    async def take_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        raise NotImplementedError

    async def peek_flow(
        self, token_hash: bytes, *, kind: FlowKind, now: datetime
    ) -> ConnectFlow | None:
        raise NotImplementedError

    async def acquire_lease(
        self, name: str, *, holder: str, now: datetime, until: datetime
    ) -> bool:
        current = self.leases.get(name)
        if current is None or current[1] <= now or current[0] == holder:
            self.leases[name] = (holder, until)
            return True
        return False

    async def release_lease(self, name: str, *, holder: str) -> bool:
        current = self.leases.get(name)
        if current is not None and current[0] == holder:
            del self.leases[name]
            return True
        return False


Refresh = Callable[[Secret], Awaitable[VendorTokens]]


class StubVendor:
    """A vendor whose refresh answers are programmed; records what it was sent."""

    def __init__(self, clock: FakeClock, *, refresh_ahead: float = 60.0) -> None:
        self.clock = clock
        self.config = OAuthClientConfig(
            client_id="agentguard-crm",
            authorization_endpoint="https://auth.crm.example/authorize",
            token_endpoint="https://auth.crm.example/token",
            refresh_ahead=refresh_ahead,
        )
        self.presented: list[str] = []
        self.revoked: list[tuple[str, str]] = []
        self.rotate = True
        self.lifetime = 3600
        self.failure: Exception | None = None
        self.revoke_failure: Exception | None = None
        self.revocation = True
        self.before_answer: Callable[[], Awaitable[None]] | None = None
        self.issued: list[VendorTokens] = []

    async def refresh(self, refresh_token: Secret) -> VendorTokens:
        self.presented.append(refresh_token.reveal())
        if self.before_answer is not None:
            await self.before_answer()
        if self.failure is not None:
            raise self.failure
        tokens = VendorTokens(
            access_token=Secret(token("at")),
            refresh_token=Secret(token("rt")) if self.rotate else None,
            expires_at=self.clock.now() + timedelta(seconds=self.lifetime),
            scopes=("contacts.read",),
        )
        self.issued.append(tokens)
        return tokens

    async def revoke(self, token: Secret, *, token_type_hint: str = REFRESH_HINT) -> bool:
        if self.revoke_failure is not None:
            raise self.revoke_failure
        if not self.revocation:
            return False
        self.revoked.append((token_type_hint, token.reveal()))
        return True


def tokens_for(
    clock: FakeClock, *, lifetime: int | None = 3600, refresh: bool = True
) -> VendorTokens:
    return VendorTokens(
        access_token=Secret(token("at")),
        refresh_token=Secret(token("rt")) if refresh else None,
        expires_at=None if lifetime is None else clock.now() + timedelta(seconds=lifetime),
        scopes=("contacts.read", "contacts.write"),
    )
