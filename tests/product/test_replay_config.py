"""``[dpop] replay``: the gateway's DPoP replay cache on Redis, configured, checked, explained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentguard.config import SettingsError, load_settings
from agentguard.errors import ConfigurationError
from agentguard.gateway import build_gateway
from agentguard.storage import RedisReplayCache
from tests.product.conftest import RunCLI, new_kek

PASSWORD = "hunter2-" + "p" * 16
ENV = {"AGENTGUARD_KEK": new_kek()}


def write(tmp_path: Path, dpop: str) -> Path:
    path = tmp_path / "agentguard.toml"
    path.write_text(
        'public_origin = "https://gw.example"\n[store]\nurl = "memory://"\n[dpop]\n' + dpop + "\n"
    )
    return path


def test_replay_on_redis_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, f'replay = "redis://:{PASSWORD}@127.0.0.1:6379/15"')
    settings = load_settings(path, environ=ENV)
    gateway = build_gateway(settings)
    cache = gateway.guard.replay_cache
    assert isinstance(cache, RedisReplayCache)
    assert PASSWORD not in repr(cache) and PASSWORD not in repr(gateway.guard)
    assert [check.name for check in gateway.health_checks] == [
        "key store",
        "audit store",
        "replay cache",
    ]
    environ = {**ENV, "AGENTGUARD_DPOP_REPLAY": "rediss://cache.internal:6380/0"}
    assert load_settings(path, environ=environ).dpop.replay == "rediss://cache.internal:6380/0"


def test_by_default_the_store_keeps_the_replay_cache(tmp_path: Path) -> None:
    gateway = build_gateway(load_settings(write(tmp_path, ""), environ=ENV))
    assert gateway.guard.replay_cache is gateway.store
    off = write(tmp_path, 'enabled = false\nreplay = "redis://127.0.0.1:6379/15"')
    assert build_gateway(load_settings(off, environ=ENV)).guard.replay_cache is None


@pytest.mark.parametrize(
    "url", ["postgresql://db/agentguard", f"http://:{PASSWORD}@cache", "127.0.0.1:6379", ""]
)
def test_a_replay_url_that_is_not_redis_names_the_line_and_hides_the_url(
    tmp_path: Path, url: str
) -> None:
    path = write(tmp_path, f'replay = "{url}"')
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ=ENV)
    message = str(info.value)
    assert message.startswith(f"{path}:5: dpop.replay: the replay cache is a Redis URL"), message
    assert PASSWORD not in message


def test_a_redis_url_the_driver_refuses_is_a_configuration_error_without_the_url(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, f'replay = "redis://:{PASSWORD}@cache:port/0"')
    with pytest.raises(ConfigurationError) as info:
        build_gateway(load_settings(path, environ=ENV))
    assert str(info.value).startswith("dpop.replay is not a valid Redis URL")
    assert PASSWORD not in str(info.value) and info.value.__cause__ is None


def test_serve_without_the_redis_extra_says_what_to_install(
    cli: RunCLI, kek: str, monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    write(clean_env, 'replay = "redis://127.0.0.1:6379/15"')
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    result = cli("serve", "--check")
    assert result.code == 2, result
    assert result.err.strip() == (
        "agentguard serve: Redis support (the replay cache, the limit store) needs redis: "
        "pip install 'agentguard[redis]' "
        "(from a checkout: pip install -e '.[redis]')"
    ), result.err
