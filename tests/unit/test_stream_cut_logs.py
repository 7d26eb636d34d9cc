"""A stream agentguard cuts is logged by the ASGI server as one warning, not a traceback."""

from __future__ import annotations

import logging
import sys

import pytest

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - anyio brings the backport on 3.10
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

from agentguard._redaction import _QuietStreamCuts
from agentguard.asgi._relay_stream import ResponseWithheld, StreamCut
from agentguard.errors import BadGateway, InvalidToken, Reason


def _record(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n", (), exc_info
    )


@pytest.mark.parametrize(
    ("error", "reasons"),
    [
        (StreamCut(InvalidToken(reason=Reason.REVOKED)), "revoked"),
        (
            ResponseWithheld(BadGateway("crm", reason=Reason.SECRET_ECHO_BLOCKED)),
            "secret_echo_blocked",
        ),
        (
            BaseExceptionGroup(
                "cut",
                [
                    StreamCut(InvalidToken(reason=Reason.USER_DISABLED)),
                    StreamCut(InvalidToken(reason=Reason.REVOKED)),
                ],
            ),
            "revoked, user_disabled",
        ),
    ],
)
def test_a_cut_becomes_one_warning_line(error: BaseException, reasons: str) -> None:
    record = _record(error)
    assert _QuietStreamCuts().filter(record)
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
    assert record.exc_info is None
    assert record.getMessage() == (
        f"agentguard cut a stream ({reasons}); the connection was closed without a clean end"
    )


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("a real bug"),
        BaseExceptionGroup("mixed", [StreamCut(InvalidToken()), ValueError("a real bug")]),
    ],
)
def test_anything_else_keeps_its_traceback(error: BaseException) -> None:
    record = _record(error)
    assert _QuietStreamCuts().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.getMessage() == "Exception in ASGI application\n"
