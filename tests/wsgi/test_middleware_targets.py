"""The WSGI middleware decides on the canonical target, over a real socket (Werkzeug's server).

``RAW_URI``/``REQUEST_URI`` is the evidence of how ``PATH_INFO`` was encoded, so the WSGI
middleware refuses the same ambiguous targets as the ASGI one, before any key lookup.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from tests.asgi.test_middleware_targets import AMBIGUOUS
from tests.wsgi.conftest import WSGISetup


@pytest.fixture
def server(wsgi_setup: WSGISetup) -> Iterator[tuple[WSGISetup, BaseWSGIServer]]:
    httpd = make_server("127.0.0.1", 0, wsgi_setup.app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield wsgi_setup, httpd
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


def get(port: int, target: str, auth: str = "") -> tuple[int, bytes]:
    header = f"Authorization: {auth}\r\n" if auth else ""
    head = f"GET {target} HTTP/1.1\r\nHost: t\r\n{header}Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode("ascii"))
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_ambiguous_targets_are_refused_before_any_key_lookup(
    server: tuple[WSGISetup, BaseWSGIServer],
) -> None:
    setup, httpd = server
    key = setup.auth()["Authorization"]
    for target in AMBIGUOUS:
        for auth in (key, ""):
            status, body = get(httpd.server_port, target, auth)
            assert status == 400, (target, status, body)
            assert b'"invalid_request"' in body and b"refused as ambiguous" in body, body
    assert get(httpd.server_port, "/crm/contacts", key)[0] == 200
    assert get(httpd.server_port, "/crm/%63ontacts", key)[0] == 200
    assert get(httpd.server_port, "/healthz")[0] == 200
