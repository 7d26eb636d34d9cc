from __future__ import annotations

import base64
import pickle

import pytest

from agentguard import CredentialOwner, CredentialScope
from agentguard.audit import AuditWriter
from agentguard.credentials import CredentialVault, KeyRing, VaultError
from agentguard.errors import ConfigurationError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

pytestmark = pytest.mark.anyio
SECRET = "sk-live-abcdefghijklmnopqrstuvwx"
USER, ACCOUNT = CredentialOwner.USER, CredentialOwner.ACCOUNT


async def test_round_trip_stores_only_ciphertext(store: MemoryStore, clock: FakeClock) -> None:
    vault = CredentialVault(store, KeyRing.generate(), clock=clock, audit=AuditWriter(store))
    record = await vault.put("crm", USER, "u1", SECRET, scope=CredentialScope.USER)
    assert SECRET.encode() not in record.ciphertext
    assert SECRET not in repr(record) and SECRET not in repr(vault)
    found = await vault.get("crm", USER, "u1")
    assert found is not None
    assert found[1].reveal() == SECRET
    assert await vault.get("crm", ACCOUNT, "u1") is None
    log = b"".join(e.body for e in await store.read())
    assert SECRET.encode() not in log
    assert b"credential.set" in log


async def test_ciphertext_is_bound_to_service_and_owner(
    store: MemoryStore, clock: FakeClock
) -> None:
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    record = await vault.put("crm", USER, "u1", SECRET, scope=CredentialScope.USER)
    await store.put_credential(record.model_copy(update={"owner_id": "u2"}))  # a misfiled row
    with pytest.raises(VaultError, match="does not decrypt"):
        await vault.get("crm", USER, "u2")
    await store.put_credential(record.model_copy(update={"service": "projects"}))
    with pytest.raises(VaultError):
        await vault.get("projects", USER, "u1")


async def test_tampered_ciphertext_fails(store: MemoryStore, clock: FakeClock) -> None:
    vault = CredentialVault(store, KeyRing.generate(), clock=clock)
    record = await vault.put("crm", USER, "u1", SECRET, scope=CredentialScope.USER)
    flipped = record.ciphertext[:-1] + bytes([record.ciphertext[-1] ^ 1])
    await store.put_credential(record.model_copy(update={"ciphertext": flipped}))
    with pytest.raises(VaultError):
        await vault.get("crm", USER, "u1")


async def test_rekey_moves_everything_to_the_new_primary(
    store: MemoryStore, clock: FakeClock
) -> None:
    old = KeyRing.generate("kek-old")
    vault = CredentialVault(store, old, clock=clock)
    for n in range(3):
        await vault.put("crm", USER, f"u{n}", f"{SECRET}{n}", scope=CredentialScope.USER)
    new_key = b"N" * 32
    vault.keyring = KeyRing({"kek-new": new_key, "kek-old": old.key("kek-old")}, "kek-new")
    seen: list[int] = []
    assert await vault.rekey(progress=seen.append) == 3
    assert seen == [1, 2, 3]
    assert {c.key_id for c in await store.list_credentials()} == {"kek-new"}
    vault.keyring = KeyRing({"kek-new": new_key}, "kek-new")  # the old key can now go
    assert sorted(s.reveal() for s in await vault.values()) == [f"{SECRET}{n}" for n in range(3)]
    assert await vault.rekey() == 0


async def test_unknown_key_id_is_a_clear_configuration_error(
    store: MemoryStore, clock: FakeClock
) -> None:
    vault = CredentialVault(store, KeyRing.generate("a"), clock=clock)
    await vault.put("crm", USER, "u1", SECRET, scope=CredentialScope.USER)
    vault.keyring = KeyRing.generate("b")
    with pytest.raises(ConfigurationError, match="key-encryption key a is not configured"):
        await vault.get("crm", USER, "u1")


@pytest.mark.parametrize("bad", ["", " padded ", "trailing\n"])
async def test_bad_values_are_refused(store: MemoryStore, bad: str) -> None:
    vault = CredentialVault(store, KeyRing.generate())
    with pytest.raises(ValueError):
        await vault.put("crm", USER, "u1", bad, scope=CredentialScope.USER)


async def test_listeners_learn_new_values(store: MemoryStore) -> None:
    vault = CredentialVault(store, KeyRing.generate())
    learned: list[str] = []
    vault.on_change(learned.append)
    await vault.put("crm", USER, "u1", SECRET, scope=CredentialScope.USER)
    assert learned == [SECRET]


def test_keyring_parsing_and_safety() -> None:
    key = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
    ring = KeyRing.from_string(f"kek-2:{key}, kek-1:{key}")
    assert ring.primary == "kek-2" and ring.ids == ("kek-2", "kek-1")
    assert key not in repr(ring)
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    for bad in ("", "nocolon", f"bad id!:{key}", "kek:!!!", f"kek:{key[:10]}"):
        with pytest.raises(ConfigurationError):
            KeyRing.from_string(bad)


def test_keyring_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTGUARD_KEK", raising=False)
    with pytest.raises(ConfigurationError, match="AGENTGUARD_KEK"):
        KeyRing.from_env()
    monkeypatch.setenv("AGENTGUARD_KEK", "k1:" + base64.b64encode(b"z" * 32).decode())
    assert KeyRing.from_env().key("k1") == b"z" * 32
