"""The suite is typed against the Protocols: ``mypy --strict`` checks an integrator's backend.

Each contract declares ``store_type: ClassVar[type[P]]`` for the Protocol ``P`` it tests; the
class an integrator assigns is checked against every Protocol of every contract inherited.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentguard.testing.conformance import KeyStoreContract

INTEGRATOR = """
from datetime import datetime

from agentguard.storage import MemoryStore
from agentguard.testing.conformance import MultiInstanceContract, ReplayCacheContract


class GoodStore(MemoryStore):
    pass


class WrongReplayStore:
    async def check_and_store(self, replay_id: int, expires_at: datetime) -> bool:
        return True


class TestGood(ReplayCacheContract, MultiInstanceContract):
    store_type = GoodStore


class TestWrong(ReplayCacheContract, MultiInstanceContract):
    store_type = WrongReplayStore
"""


def test_mypy_checks_store_type_against_every_inherited_protocol(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    module = tmp_path / "test_integrator.py"
    module.write_text(INTEGRATOR, encoding="utf-8")
    out, err, status = api.run(
        [
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--python-executable",
            sys.executable,
            str(module),
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    wrong_line = INTEGRATOR.splitlines().index("    store_type = WrongReplayStore") + 1
    assert status == 1, out + err
    # Only TestWrong's assignment is refused: GoodStore satisfies every Protocol of both.
    assert len(errors) == 1, out
    assert f"test_integrator.py:{wrong_line}: error: Incompatible types in assignment" in out
    assert '"type[WrongReplayStore]"' in errors[0], out


class _Unset(KeyStoreContract):
    """A test class that forgot ``store_type``."""


@pytest.mark.anyio
async def test_contract_fails_when_store_type_is_not_declared() -> None:
    from agentguard.storage import MemoryStore
    from agentguard.testing import FakeClock

    with pytest.raises(pytest.fail.Exception, match="set `store_type = YourStore` on _Unset"):
        await _Unset().test_store_implements_key_store(MemoryStore(clock=FakeClock()))


@pytest.mark.anyio
async def test_contract_fails_when_the_fixture_returns_another_class() -> None:
    from agentguard.storage import MemoryStore, SQLiteStore
    from agentguard.testing import FakeClock

    class Declared(KeyStoreContract):
        store_type = SQLiteStore

    with pytest.raises(AssertionError, match="returned a MemoryStore, not the declared"):
        await Declared().test_store_implements_key_store(MemoryStore(clock=FakeClock()))


def test_a_keyword_only_parameter_may_be_taken_positionally_but_not_the_reverse() -> None:
    from agentguard.storage import DirectoryStore, KeyStore, MemoryStore
    from agentguard.testing import FakeClock
    from agentguard.testing.conformance._base import assert_implements

    class PositionalMember(MemoryStore):
        async def set_membership(self, user_id: str, workspace_id: str, member: bool) -> None:
            await super().set_membership(user_id, workspace_id, member=member)

    class KeywordOnlyHash(MemoryStore):
        async def lookup(self, *, key_hash: bytes) -> object:  # type: ignore[override]
            return await super().lookup(key_hash)

    assert_implements(PositionalMember(clock=FakeClock()), DirectoryStore)
    with pytest.raises(AssertionError, match=r"KeywordOnlyHash\.lookup"):
        assert_implements(KeywordOnlyHash(clock=FakeClock()), KeyStore)
