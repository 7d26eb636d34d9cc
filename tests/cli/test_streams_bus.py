"""Operator commands announce on the Redis bus when ``[streams] events`` names one.

A gateway whose store cannot notify other processes (SQLite shared by instances) learns of an
operator's revoke or disable through Redis; the CLI writes through the same announcing store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis

from tests.backends.services import random_name, redis_url
from tests.cli.conftest import RunCLI
from tests.cli.test_config_resolution import _setup


def _announcements(channel: str, url: str, act: Callable[[], None]) -> list[dict[str, object]]:
    """What ``act()`` publishes on ``channel`` (subscribed before it runs)."""
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        act()
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "message":
                seen.append(json.loads(message["data"]))
        return seen
    finally:
        pubsub.close()
        client.close()


@pytest.mark.parametrize(
    "argv",
    [("users", "disable", "alice"), ("keys", "revoke", "--user", "alice")],
    ids=" ".join,
)
def test_an_operator_write_is_announced_on_the_streams_bus(
    cli: RunCLI, clean_env: Path, argv: tuple[str, ...]
) -> None:
    url = anyio.run(redis_url)
    channel = random_name("agentguard:test:cli")
    _setup(cli, "agentguard.toml")
    config = clean_env / "agentguard.toml"
    config.write_text(
        config.read_text() + f'\n[streams]\nevents = "{url}"\nchannel = "{channel}"\n'
    )

    def act() -> None:
        result = cli(*argv)
        assert result.code == 0, result.err

    alice = json.loads(cli("users", "list", "--json").out)[0]["id"]
    seen = _announcements(channel, url, act)
    assert seen, "the operator's write was not announced"
    assert seen[0].get("user_id") == alice, seen  # the ids the change names, nothing secret


def test_read_only_commands_announce_nothing(cli: RunCLI, clean_env: Path) -> None:
    url = anyio.run(redis_url)
    channel = random_name("agentguard:test:cli")
    _setup(cli, "agentguard.toml")
    config = clean_env / "agentguard.toml"
    config.write_text(
        config.read_text() + f'\n[streams]\nevents = "{url}"\nchannel = "{channel}"\n'
    )

    def act() -> None:
        assert cli("users", "list").code == 0

    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        act()
        assert pubsub.get_message(timeout=0.5) is None
    finally:
        pubsub.close()
        client.close()
