"""Revocation event payloads (parsed without ever raising) and the ``[streams]`` settings."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from agentguard._stream_lease import StreamLease
from agentguard.config import Settings, StreamSettings
from agentguard.storage import MemoryStore, SQLiteStore
from agentguard.storage._revocation_feeds import (
    EVERYTHING,
    FIELDS,
    Change,
    encode_change,
    feed_for,
    parse_change,
)
from agentguard.storage._revocation_feeds._local import DataVersionFeed, PollFeed
from agentguard.storage._revocation_feeds._redis import RedisFeed

pytestmark = pytest.mark.anyio

LEASE = StreamLease("key-1", "user-1", "ws-1", "acct-1", family_id="fam-1")
ids = st.text(min_size=1, max_size=40)


@given(st.one_of(st.text(), st.binary(), st.none()))
def test_any_payload_parses_to_a_change_without_raising(payload: str | bytes | None) -> None:
    change = parse_change(payload)
    assert isinstance(change, Change)


@given(st.dictionaries(st.sampled_from(FIELDS), ids, min_size=1))
def test_a_change_round_trips_through_its_payload(named: dict[str, str]) -> None:
    change = parse_change(encode_change(**named))
    assert dict(change.ids) == named
    assert not change.everything


@given(st.recursive(st.none() | st.integers() | st.text(), st.lists))
def test_a_payload_that_is_not_an_object_means_everything(value: object) -> None:
    assert parse_change(json.dumps(value)) == EVERYTHING


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "{",
        '{"user_id": 7}',
        '{"user_id": ""}',
        '{"user_id": "' + "u" * 300 + '"}',
        "[" * 5000 + "]" * 5000,
        '{"table": "users"}',
    ],
)
def test_unreadable_or_unnamed_payloads_recheck_every_stream(payload: str) -> None:
    change = parse_change(payload)
    assert change.everything
    assert change.matches(LEASE)


def test_a_change_matches_the_streams_it_names() -> None:
    assert parse_change('{"table":"users","user_id":"user-1"}').matches(LEASE)
    assert parse_change('{"family_id":"fam-1"}').matches(LEASE)
    assert parse_change('{"account_id":"acct-1"}').matches(LEASE)
    assert not parse_change('{"user_id":"user-2"}').matches(LEASE)
    assert not parse_change('{"key_id":"key-2","table":"keys"}').matches(LEASE)


def test_encoding_refuses_unknown_ids() -> None:
    with pytest.raises(ValueError, match="names only"):
        encode_change(password="x")


def test_stream_settings_defaults_and_bounds() -> None:
    settings = Settings(public_origin="https://api.example.com").streams
    assert settings == StreamSettings()
    assert settings.recheck_interval == 5.0
    assert settings.events == "auto"
    assert settings.redis_url is None
    for bad in ({"recheck_interval": 0}, {"outage_grace": -1}, {"max_concurrency": 0}):
        with pytest.raises(ValidationError):
            StreamSettings(**bad)  # type: ignore[arg-type]


def test_events_takes_auto_off_or_a_redis_url_and_never_shows_its_password() -> None:
    url = "redis://:hunter2-secret@cache:6379/0"
    settings = StreamSettings(events=url)
    assert settings.redis_url == url
    assert "hunter2-secret" not in repr(settings)
    with pytest.raises(ValidationError) as refused:
        StreamSettings(events="postgresql://u:hunter3-secret@db/x")
    assert 'events is "auto", "off" or a redis:// URL' in str(refused.value)


def test_settings_load_a_streams_table(tmp_path: object) -> None:
    from pathlib import Path

    from agentguard.config import SettingsError, load_settings

    path = Path(str(tmp_path)) / "agentguard.toml"
    path.write_text(
        'public_origin = "https://api.example.com"\n'
        '[streams]\nrecheck_interval = 2.5\nevents = "off"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    assert settings.streams.recheck_interval == 2.5
    assert settings.streams.events == "off"
    path.write_text(
        'public_origin = "https://api.example.com"\n[streams]\nevents = "nats://x"\n',
        encoding="utf-8",
    )
    with pytest.raises(SettingsError, match=r"streams\.events"):
        load_settings(path)


def test_the_feed_follows_the_store_and_the_settings(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(feed_for(MemoryStore(), StreamSettings()), PollFeed)
    assert feed_for(MemoryStore(), StreamSettings(events="off")) is None
    redis = feed_for(MemoryStore(), StreamSettings(events="redis://127.0.0.1:6379/0"))
    assert isinstance(redis, RedisFeed)
    path = Path(str(tmp_path)) / "a.db"
    sqlite = feed_for(SQLiteStore(path), StreamSettings(poll_interval=0.1))
    assert isinstance(sqlite, DataVersionFeed)
    assert sqlite.period == 0.1
    assert isinstance(feed_for(SQLiteStore(":memory:"), StreamSettings()), PollFeed)
    assert feed_for(object(), StreamSettings()) is None


async def test_a_failed_announcement_is_logged_and_the_write_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agentguard.storage._revocation_feeds import announce_changes
    from agentguard.testing import make_user

    store = MemoryStore()
    announcing = announce_changes(store, "redis://127.0.0.1:1/0")  # nothing listens there
    user = await make_user(announcing)
    await announcing.put_user(user.model_copy(update={"enabled": False}))
    assert (await store.get_user(user.id)).enabled is False  # type: ignore[union-attr]
    assert "could not announce a revocation on Redis (ConnectionError)" in caplog.text
    assert isinstance(announcing, type(announcing))
    from agentguard.storage import KeyStore

    assert isinstance(announcing, KeyStore)  # the wrapper passes for the store it wraps
    await announcing.close()


def test_a_redis_bus_without_the_redis_extra_is_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a loop of failed announcements at run time: build_gateway names the extra."""
    import agentguard.gateway._app as gateway_app
    from agentguard._extras import missing_extra
    from agentguard.config import Settings
    from agentguard.errors import ConfigurationError
    from agentguard.gateway import build_gateway

    def missing(module: str) -> object:
        raise missing_extra(ImportError(f"No module named {module!r}", name="redis"))

    monkeypatch.setattr(gateway_app, "import_extra", missing)
    settings = Settings.model_validate(
        {"dpop": {"enabled": False}, "streams": {"events": "redis://127.0.0.1:6379/0"}}
    )
    with pytest.raises(ConfigurationError, match=r"pip install 'agentguard\[redis\]'"):
        build_gateway(settings, store=MemoryStore())
