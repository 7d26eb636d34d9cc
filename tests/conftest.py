"""Shared fixtures and the credential canary.

``CANARY`` is a unique fake "real" credential the proxy tests configure as the CRM's key. Every
log record of the whole run is kept; at the end of the session the run fails if the canary (or
its base64/hex form) appears in any of them. The proxy tests also check their own responses and
audit events for it.
"""

from __future__ import annotations

import base64
import logging
import secrets

import pytest

CANARY = "crm-live-" + secrets.token_urlsafe(24)
_CANARY_FORMS = (CANARY, base64.b64encode(CANARY.encode()).decode(), CANARY.encode().hex())


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken log call is the code's bug, not the canary's
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.texts.append(text)


_RECORDER = _Recorder()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(_RECORDER)
    if root.level > logging.DEBUG or root.level == logging.NOTSET:
        root.setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = [text for text in _RECORDER.texts if any(form in text for form in _CANARY_FORMS)]
    if leaked:
        print(f"\nCANARY: the test credential appeared in {len(leaked)} log records:")
        for text in leaked[:5]:
            shown = text
            for form in _CANARY_FORMS:
                shown = shown.replace(form, "<CANARY>")
            print(f"  {shown[:300]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
