"""AgentGuardWSGIMiddleware through Flask's test client."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agentguard._context import principal_var
from agentguard.wsgi import request_from_environ
from tests.wsgi.conftest import WSGISetup


def test_allowed_read_reaches_the_view_with_principal(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().get("/crm/contacts", headers=wsgi_setup.auth())
    assert response.status_code == 200
    assert response.json == {"user": "user-1", "method": "GET"}
    decision = wsgi_setup.events()[-1]
    assert (decision["decision"], decision["service"], decision["path"]) == (
        "allow",
        "crm",
        "/crm/contacts",
    )
    assert principal_var.get() is None  # reset after the request


def test_write_without_grant_is_403_with_challenge(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().post("/crm/contacts", headers=wsgi_setup.auth())
    assert response.status_code == 403
    assert response.json == {
        "error": "insufficient_scope",
        "error_description": "this request needs crm:write",
        "reason": "insufficient_scope",
        "scope": "crm:write",
    }
    assert response.headers["www-authenticate"] == (
        'Bearer realm="agentguard", error="insufficient_scope", '
        'error_description="this request needs crm:write", scope="crm:write"'
    )
    assert response.headers["cache-control"] == "no-store"
    assert wsgi_setup.events()[-1]["reason"] == "insufficient_scope"


def test_missing_key_is_401_without_error_code(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().get("/crm/contacts")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="agentguard"'
    assert response.json is not None
    assert response.json["reason"] == "missing_credentials"


def test_unknown_key_is_401_invalid_token(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().get(
        "/crm/contacts", headers=wsgi_setup.auth("ag_at_" + "A" * 49)
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_revoked_user_is_refused_on_the_next_request(wsgi_setup: WSGISetup) -> None:
    from agentguard.wsgi import default_portal

    client = wsgi_setup.app.test_client()
    assert client.get("/crm/contacts", headers=wsgi_setup.auth()).status_code == 200
    default_portal().call(lambda: wsgi_setup.store.set_membership("user-1", "ws-1", member=False))
    response = client.get("/crm/contacts", headers=wsgi_setup.auth())
    assert response.status_code == 401
    assert response.json is not None
    assert response.json["reason"] == "not_a_member"


def test_public_path_skips_the_guard(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().get("/healthz")
    assert response.status_code == 200


def test_dot_segments_under_a_public_path_are_guarded(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().get("/healthz/../crm/contacts")
    assert response.status_code in (400, 401)


def test_streamed_body_sees_the_principal(wsgi_setup: WSGISetup) -> None:
    response = wsgi_setup.app.test_client().get("/crm/stream", headers=wsgi_setup.auth())
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "user-1:0\nuser-1:1\nuser-1:2\n"


def _environ(**values: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "get",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "wsgi.url_scheme": "https",
    }
    environ.update(values)
    return environ


def test_environ_becomes_a_guard_request() -> None:
    request = request_from_environ(
        _environ(
            SCRIPT_NAME="/api",
            PATH_INFO="/crm/a b",
            RAW_URI="/api/crm/a%20b?x=1",
            QUERY_STRING="x=1",
            HTTP_AUTHORIZATION="Bearer k",
            HTTP_X_REQUEST_ID="abc",
            CONTENT_TYPE="application/json",
            CONTENT_LENGTH="",
        )
    )
    assert request.method == "GET"
    assert request.path == "/crm/a b"
    assert request.root_path == "/api"
    assert request.raw_path == b"/api/crm/a%20b"
    assert request.query_string == b"x=1"
    assert request.scheme == "https"
    assert request.header(b"authorization") == b"Bearer k"
    assert request.header(b"x-request-id") == b"abc"
    assert request.header(b"content-type") == b"application/json"
    assert request.header(b"content-length") is None


def test_utf8_path_is_decoded_like_werkzeug() -> None:
    raw = "/crm/caf\u00e9".encode().decode("latin-1")  # PEP 3333 bytes-as-latin-1
    request = request_from_environ(_environ(PATH_INFO=raw, REQUEST_URI="/crm/caf%C3%A9"))
    assert request.path == "/crm/caf\u00e9"
    assert request.raw_path == b"/crm/caf%C3%A9"


def test_raw_path_that_disagrees_with_path_info_is_ignored() -> None:
    request = request_from_environ(_environ(PATH_INFO="/rewritten", RAW_URI="/original"))
    assert request.raw_path is None
    absolute = request_from_environ(_environ(PATH_INFO="/x", RAW_URI="http://evil.test/x"))
    assert absolute.raw_path is None


@given(
    path=st.text(max_size=64),
    raw=st.one_of(st.none(), st.text(max_size=64)),
    header=st.text(max_size=32),
)
def test_any_environ_text_gives_a_request(path: str, raw: str | None, header: str) -> None:
    environ = _environ(PATH_INFO=path, HTTP_AUTHORIZATION=header)
    if raw is not None:
        environ["REQUEST_URI"] = raw
    request = request_from_environ(environ)
    assert isinstance(request.path, str)
    assert request.header(b"authorization") is not None
