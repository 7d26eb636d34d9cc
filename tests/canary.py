"""Session-wide secret scanning: every key and credential the run creates, and where it went.

Recorded while the tests run:

- secrets: every :class:`agentguard._secret.Secret` created (issued keys, vault plaintexts, minted
  tokens, agent credentials), plus the fixed ``CANARY`` credential the proxy tests configure;
- places a secret must never reach: every log record (message and exception), every audit
  event body, every rendered error body, and every error's message.

At the end of the session the places are searched: agentguard keys by their pattern, other
secrets (16 characters or longer) by substring. Any hit fails the run and is reported with the
place it was found, never with the secret.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_KEY = re.compile(r"ag_(?:at|rt)_[0-9A-Za-z]{49}")
_lock = threading.Lock()
_keys: set[str] = set()
_others: set[str] = set()
_places: dict[str, list[str]] = {"log": [], "audit": [], "error body": [], "error message": []}
_log_origins: list[str] = []  # per log record: its logger and message template (no arguments)
_error_origins: list[str] = []  # per error message record: the error's type and the test
_test: list[str] = [""]  # the test running now (set by tests/conftest.py)


def running(nodeid: str) -> None:
    """Note which test is running, so a leak can be traced to it."""
    _test[0] = nodeid


def _remember_secret(value: str) -> None:
    with _lock:
        if _KEY.fullmatch(value):
            _keys.add(value)
        elif len(value) >= 16:
            _others.add(value)


def _remember(place: str, text: str) -> None:
    with _lock:
        _places[place].append(text)


class _LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken log call is the code's bug, not the canary's
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        with _lock:
            _places["log"].append(text)
            _log_origins.append(f"{record.name}: {str(record.msg)[:80]!r} in {_test[0]}")


def install(extra_secrets: tuple[str, ...] = ()) -> None:
    """Start recording (call once, from ``pytest_configure``)."""
    from agentguard import Secret
    from agentguard.audit import AuditEvent
    from agentguard.errors import RequestRefused as AgentGuardError

    for value in extra_secrets:
        _remember_secret(value)

    secret_init = Secret.__init__

    def recording_init(self: Secret, value: str) -> None:
        secret_init(self, value)
        if isinstance(value, str):
            _remember_secret(value)

    Secret.__init__ = recording_init  # type: ignore[method-assign]

    body = AuditEvent.body

    def recording_body(self: AuditEvent, seq: int, prev: str) -> Any:
        document = body(self, seq, prev)
        _remember("audit", repr(document))
        return document

    AuditEvent.body = recording_body  # type: ignore[method-assign]

    to_http = AgentGuardError.to_http

    def recording_to_http(self: AgentGuardError, challenge: Any = None) -> Any:
        status, headers, rendered = to_http(self, challenge)
        _remember("error body", rendered.decode("utf-8", "replace") + repr(headers))
        return status, headers, rendered

    AgentGuardError.to_http = recording_to_http  # type: ignore[method-assign]

    error_init = AgentGuardError.__init__

    def recording_error_init(self: AgentGuardError, *args: Any, **kwargs: Any) -> None:
        error_init(self, *args, **kwargs)
        with _lock:
            _places["error message"].append(f"{self} {self!r}")
            _error_origins.append(f"{type(self).__name__} ({self.reason.value}) in {_test[0]}")

    AgentGuardError.__init__ = recording_error_init  # type: ignore[method-assign]

    root = logging.getLogger()
    root.addHandler(_LogRecorder())
    if root.level > logging.DEBUG or root.level == logging.NOTSET:
        root.setLevel(logging.DEBUG)


def findings() -> list[str]:
    """One line per place where a recorded secret appears (the secret itself is not shown)."""
    with _lock:
        keys, others = set(_keys), set(_others)
        places = {place: list(texts) for place, texts in _places.items()}
        origins = {"log": list(_log_origins), "error message": list(_error_origins)}
    found: list[str] = []
    for place, texts in places.items():
        leaked_keys = {match for text in texts for match in _KEY.findall(text)} & keys
        if leaked_keys:
            found.append(f"{len(leaked_keys)} agentguard key(s) in {place} records")
            found += _where(texts, origins.get(place, []), leaked_keys)
        joined = "\n".join(texts)
        leaked = [secret for secret in others if secret in joined]
        if leaked:
            found.append(f"{len(leaked)} credential(s) in {place} records")
            found += _where(texts, origins.get(place, []), set(leaked))
    return found


def _where(texts: list[str], origins: list[str], secrets: set[str]) -> list[str]:
    """For log and error message records: where the first few records a secret reached came
    from (a log record's logger and message template, never its arguments, which hold the
    secret; an error's type and reason), with the test that was running."""
    seen: list[str] = []
    for text, origin in zip(texts, origins, strict=False):
        if origin not in seen and any(secret in text for secret in secrets):
            seen.append(origin)
            if len(seen) == 3:
                break
    return [f"    from {origin}" for origin in seen]


def counts() -> str:
    """How much was watched, for the summary line."""
    with _lock:
        watched = sum(len(texts) for texts in _places.values())
        return f"{len(_keys)} keys and {len(_others)} other secrets across {watched} records"
