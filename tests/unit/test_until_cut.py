"""``until_cut``: the relay's work, raced against its stream lease without a watcher task."""

from __future__ import annotations

import anyio
import pytest

from agentguard._stream_lease import StreamLease
from agentguard.asgi._relay_stream import _Interrupted, until_cut
from agentguard.errors import InvalidToken

pytestmark = pytest.mark.anyio


def lease() -> StreamLease:
    return StreamLease("key", "user", "workspace", "account")


async def test_the_work_s_result_when_the_lease_stays_live() -> None:
    held = lease()

    async def work() -> int:
        await anyio.lowlevel.checkpoint()
        return 7

    assert await until_cut(held, work) == 7
    assert await until_cut(None, work) == 7
    assert held._callbacks == []  # the race leaves nothing registered behind


async def test_a_cut_while_the_work_waits_interrupts_it() -> None:
    held = lease()
    started = anyio.Event()
    finished: list[str] = []

    async def work() -> None:
        started.set()
        await anyio.sleep_forever()
        finished.append("ran on")  # pragma: no cover - must be cancelled

    async def cut() -> None:
        await started.wait()
        assert held.cut(InvalidToken("revoked"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(cut)
            with pytest.raises(_Interrupted):
                await until_cut(held, work)
    assert finished == []
    assert held._callbacks == []


async def test_a_lease_cut_before_the_work_starts_runs_nothing() -> None:
    held = lease()
    held.cut(InvalidToken("revoked"))
    ran: list[bool] = []

    async def work() -> None:  # pragma: no cover - never awaited
        ran.append(True)

    with pytest.raises(_Interrupted):
        await until_cut(held, work)
    assert ran == []


async def test_the_work_s_own_failure_propagates_unchanged() -> None:
    held = lease()

    async def work() -> None:
        await anyio.lowlevel.checkpoint()
        raise LookupError("upstream")

    with pytest.raises(LookupError, match="upstream"):
        await until_cut(held, work)
    assert held._callbacks == []
    assert held.cut(InvalidToken("later"))  # a later cut touches no finished work


def test_off_cut_forgets_one_callback_and_ignores_an_unknown_one() -> None:
    held = lease()
    calls: list[str] = []

    def first() -> None:
        calls.append("first")

    def second() -> None:
        calls.append("second")

    held.on_cut(first)
    held.on_cut(second)
    held.off_cut(first)
    held.off_cut(first)  # twice: nothing
    held.cut(InvalidToken("revoked"))
    assert calls == ["second"]


def test_every_cut_callback_runs_when_one_raises() -> None:
    held = lease()
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise LookupError("a broken callback")

    def cancel() -> None:
        calls.append("cancel")

    held.on_cut(broken)
    held.on_cut(cancel)
    with pytest.raises(LookupError, match="broken"):
        held.cut(InvalidToken("revoked"))
    assert calls == ["broken", "cancel"]
    assert held.is_cut
