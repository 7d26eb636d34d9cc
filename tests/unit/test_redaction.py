from __future__ import annotations

import logging

import pytest

from agentguard._redaction import install_log_redaction


def test_httpx_request_lines_lose_their_query(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"',
            "GET",
            "https://v.example/runs?api_key=REAL",
            "HTTP/1.1",
            200,
            "OK",
        )
        trace = "receive_response_headers.complete return_value="
        logging.getLogger("httpcore.http11").debug(
            trace + "(b'HTTP/1.1', 200, [(b'x-key', b'REAL')])"
        )
        logging.getLogger("httpcore.http11").debug("send_request_body.started")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "REAL" not in text
    assert "https://v.example/runs?<redacted>" in text
    assert "send_request_body.started" in text  # other traces stay
