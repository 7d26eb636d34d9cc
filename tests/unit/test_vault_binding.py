"""The vault binds every stored field that decides how a credential is used (issue 15, item 2).

Any edit of service, owner kind, owner id, scope, id, key id or creation time makes the row
refuse to open; v1 rows (scope not bound) are refused until re-sealed with a confirmed scope.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import CredentialOwner, CredentialScope, Principal, ServiceConfig, StoredCredential
from agentguard.credentials import CredentialSwapper, CredentialVault, KeyRing, VaultError
from agentguard.credentials import _sealing as sealing
from agentguard.credentials._vault import KeyMissing, ResealRequired
from agentguard.errors import BadGateway, Reason
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock, make_user
from tests.support.vault_rows import as_v1

pytestmark = pytest.mark.anyio
SECRET = "sk-admin-" + "a" * 32
USER, ACCOUNT = CredentialOwner.USER, CredentialOwner.ACCOUNT

# One changed value per bound field: each must make the row refuse to open.
EDITS: dict[str, Any] = {
    "service": "projects",
    "owner_kind": USER,
    "owner_id": "acct-2",
    "scope": CredentialScope.USER,
    "id": "cred_forged",
    "key_id": "kek-b",
}

# Field values for the AAD property: any text (the encoding must not depend on Identifier rules).
_text = st.text(max_size=12)
_fields = st.tuples(_text, _text, _text, _text, _text, _text, _text)


def _decode(aad: bytes) -> tuple[str, ...]:
    """The differential oracle: parse the length-prefixed encoding back into its fields."""
    parts: list[str] = []
    at = 0
    while at < len(aad):
        size = int.from_bytes(aad[at : at + 4], "big")
        parts.append(aad[at + 4 : at + 4 + size].decode())
        at += 4 + size
    assert at == len(aad)
    return tuple(parts)


@settings(max_examples=300, deadline=None)
@given(_fields)
def test_aad_decodes_back_to_its_fields(fields: tuple[str, ...]) -> None:
    assert _decode(sealing.associated_data(fields)) == ("agentguard/credential/v2", *fields)


@settings(max_examples=300, deadline=None)
@given(_fields, _fields)
def test_distinct_field_tuples_never_share_aad(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert (sealing.associated_data(a) == sealing.associated_data(b)) == (a == b)


@settings(max_examples=300, deadline=None)
@given(_fields, st.integers(0, 6), st.integers(0, 6), _text)
def test_moving_text_across_a_boundary_changes_aad(
    fields: tuple[str, ...], left: int, right: int, moved: str
) -> None:
    # The classic shift: "ab"|"c" vs "a"|"bc". A delimiter-joined encoding fails this.
    shifted = list(fields)
    shifted[left] += moved
    shifted[right] = moved + shifted[right] if left != right else shifted[right]
    if tuple(shifted) != fields:
        assert sealing.associated_data(shifted) != sealing.associated_data(fields)


def _ring() -> KeyRing:
    return KeyRing({"kek-a": b"A" * 32, "kek-b": b"B" * 32}, "kek-a")


async def _admin(store: MemoryStore, clock: FakeClock) -> tuple[CredentialVault, StoredCredential]:
    vault = CredentialVault(store, _ring(), clock=clock)
    record = await vault.put("crm", ACCOUNT, "acct-1", SECRET, scope=CredentialScope.ADMIN)
    return vault, record


@pytest.mark.parametrize("column", sorted(EDITS))
async def test_editing_a_bound_field_is_refused(
    store: MemoryStore, clock: FakeClock, column: str
) -> None:
    vault, record = await _admin(store, clock)
    edited = record.model_copy(update={column: EDITS[column]})
    await store.delete_credential("crm", ACCOUNT, "acct-1")
    await store.put_credential(edited)
    with pytest.raises(VaultError) as caught:
        await vault.get(edited.service, edited.owner_kind, edited.owner_id)
    assert SECRET not in str(caught.value) and edited.id in str(caught.value)


async def test_editing_the_creation_time_is_refused(store: MemoryStore, clock: FakeClock) -> None:
    vault, record = await _admin(store, clock)
    moved = record.created_at + timedelta(microseconds=1)
    await store.put_credential(record.model_copy(update={"created_at": moved}))
    with pytest.raises(VaultError):
        await vault.get("crm", ACCOUNT, "acct-1")


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "service": st.sampled_from(["crm", "projects", "billing"]),
            "owner_kind": st.sampled_from(list(CredentialOwner)),
            "owner_id": st.sampled_from(["acct-1", "acct-2", "user-1"]),
            "scope": st.sampled_from(list(CredentialScope)),
            "id": st.from_regex(r"cred_[a-z0-9]{1,8}", fullmatch=True),
            "key_id": st.sampled_from(["kek-a", "kek-b"]),
            "created_at": st.integers(-(10**9), 10**9).map(
                lambda us: FakeClock().now() + timedelta(microseconds=us)
            ),
        },
    )
)
async def test_any_combination_of_edits_is_refused(changes: dict[str, Any]) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    vault, record = await _admin(store, clock)
    edited = record.model_copy(update=changes)
    await store.delete_credential("crm", ACCOUNT, "acct-1")
    await store.put_credential(edited)
    found = vault.get(edited.service, edited.owner_kind, edited.owner_id)
    if edited == record:
        assert (await found) is not None
        return
    with pytest.raises(VaultError):
        await found


async def test_unknown_key_id_is_a_vault_error_naming_the_key(
    store: MemoryStore, clock: FakeClock
) -> None:
    vault, record = await _admin(store, clock)
    await store.put_credential(record.model_copy(update={"key_id": "kek-gone"}))
    with pytest.raises(KeyMissing, match="kek-gone is not configured"):
        await vault.get("crm", ACCOUNT, "acct-1")


async def test_version_downgrade_is_refused(store: MemoryStore, clock: FakeClock) -> None:
    vault, record = await _admin(store, clock)
    downgraded = b"\x01" + record.ciphertext[1:]
    await store.put_credential(record.model_copy(update={"ciphertext": downgraded}))
    with pytest.raises(ResealRequired):
        await vault.get("crm", ACCOUNT, "acct-1")
    assert await vault.values() == []  # it does not open as v1 either
    with pytest.raises(VaultError, match="does not decrypt"):
        await vault.reseal({record.id: CredentialScope.ADMIN})


async def _swapper_setup(
    store: MemoryStore, clock: FakeClock
) -> tuple[CredentialSwapper, CredentialVault, StoredCredential, Principal]:
    vault, record = await _admin(store, clock)
    user = await make_user(store, grants="crm:read")
    principal = Principal(
        user_id=user.id,
        account_id=user.account_id,
        workspace_id="ws-1",
        key_id="key-1",
        family_id="fam-1",
        grants=user.grants,
        expires_at=clock.now() + timedelta(hours=1),
    )
    return CredentialSwapper(vault, clock=clock), vault, record, principal


CRM = ServiceConfig(name="crm", base_url="https://crm.example/v2")


async def test_admin_turned_user_is_refused_by_the_swapper(
    store: MemoryStore, clock: FakeClock
) -> None:
    swapper, _vault, record, principal = await _swapper_setup(store, clock)
    await store.put_credential(record.model_copy(update={"scope": CredentialScope.USER}))
    with pytest.raises(BadGateway) as caught:
        await swapper.credential_for(principal, CRM)
    assert caught.value.status == 502 and caught.value.service == "crm"
    assert caught.value.reason is Reason.CREDENTIAL_UNAVAILABLE
    assert SECRET not in repr(caught.value) + str(caught.value.body())


async def test_v1_rows_are_refused_until_resealed(store: MemoryStore, clock: FakeClock) -> None:
    swapper, vault, record, principal = await _swapper_setup(store, clock)
    legacy = as_v1(record.model_copy(update={"scope": CredentialScope.USER}), SECRET, _ring())
    await store.put_credential(legacy)  # an old row whose scope someone edited to "user"
    with pytest.raises(ResealRequired, match="reseal"):
        await vault.get("crm", ACCOUNT, "acct-1")
    with pytest.raises(BadGateway):
        await swapper.credential_for(principal, CRM)
    assert [s.reveal() for s in await vault.values()] == [SECRET]  # still indexed for leaks
    assert [c.id for c in await vault.legacy()] == [record.id]
    assert await vault.rekey() == 0  # under the primary key already; nothing is trusted
    report = await vault.reseal({record.id: CredentialScope.ADMIN})  # the operator knows
    assert report.resealed == {record.id: CredentialScope.ADMIN}
    assert report.narrowed == [record.id] and report.unconfirmed == []
    found = await vault.get("crm", ACCOUNT, "acct-1")
    assert found is not None and found[0].scope is CredentialScope.ADMIN
    with pytest.raises(BadGateway, match="no minter"):  # admin: never sent as is
        await swapper.credential_for(principal, CRM)


async def test_reseal_rules(store: MemoryStore, clock: FakeClock) -> None:
    ring = _ring()
    vault = CredentialVault(store, ring, clock=clock)
    rows = {}
    for owner, scope in (("a1", "admin"), ("a2", "admin"), ("u1", "user"), ("u2", "user")):
        stored = await vault.put(
            "crm", ACCOUNT, owner, f"{SECRET}{owner}", scope=CredentialScope(scope)
        )
        rows[owner] = as_v1(stored, f"{SECRET}{owner}", ring)
        await store.put_credential(rows[owner])
    confirmed = {
        rows["a1"].id: CredentialScope.ADMIN,  # stored admin, confirmed admin
        rows["a2"].id: CredentialScope.USER,  # stored admin, "confirmed" user: refused
        rows["u1"].id: CredentialScope.ADMIN,  # stored user, confirmed admin: narrowed
    }
    report = await vault.reseal(confirmed)
    assert report.resealed == {
        rows["a1"].id: CredentialScope.ADMIN,
        rows["u1"].id: CredentialScope.ADMIN,
    }
    assert report.narrowed == [rows["u1"].id] and report.refused == [rows["a2"].id]
    assert {c.id for c in report.unconfirmed} == {rows["a2"].id, rows["u2"].id}
    assert report.rewritten == 2
    for owner, scope in (("a1", CredentialScope.ADMIN), ("u1", CredentialScope.ADMIN)):
        found = await vault.get("crm", ACCOUNT, owner)
        assert found is not None and found[0].scope is scope
        assert found[1].reveal() == f"{SECRET}{owner}"
    for owner in ("a2", "u2"):
        with pytest.raises(ResealRequired):
            await vault.get("crm", ACCOUNT, owner)


async def test_rekey_moves_v1_rows_without_trusting_them(
    store: MemoryStore, clock: FakeClock
) -> None:
    old = KeyRing({"kek-a": b"A" * 32}, "kek-a")
    vault = CredentialVault(store, old, clock=clock)
    user = await vault.put("crm", USER, "u1", SECRET, scope=CredentialScope.USER)
    admin = await vault.put("crm", ACCOUNT, "acct-1", SECRET + "x", scope=CredentialScope.ADMIN)
    await store.put_credential(as_v1(user, SECRET, old))
    await store.put_credential(as_v1(admin, SECRET + "x", old))
    vault.keyring = KeyRing({"kek-n": b"N" * 32, "kek-a": b"A" * 32}, "kek-n")
    assert await vault.rekey() == 2  # both moved to the new key, both still v1
    assert {c.key_id for c in await store.list_credentials()} == {"kek-n"}
    assert len(await vault.legacy()) == 2
    vault.keyring = KeyRing({"kek-n": b"N" * 32}, "kek-n")  # the old key can go
    # Under the primary key but old format: rekey re-seals the rows the operator confirmed.
    assert await vault.rekey(confirmed={user.id: CredentialScope.USER}) == 1
    found = await vault.get("crm", USER, "u1")
    assert found is not None and found[1].reveal() == SECRET
    assert [c.id for c in await vault.legacy()] == [admin.id]
    assert await vault.rekey(confirmed={admin.id: CredentialScope.ADMIN}) == 1
    assert await vault.legacy() == []
