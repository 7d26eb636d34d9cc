"""Mutation-round pins for the vendor's answers: discovery allow-list entries and token
endpoint JSON."""

from __future__ import annotations

import pytest

from agentguard.connect._errors import VendorRefused
from agentguard.connect._token_response import (
    INVALID_RESPONSE,
    parse_json_object,
    parse_token_response,
)
from agentguard.testing import FakeClock


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_constants_make_the_document_unreadable(constant: bytes) -> None:
    body = b'{"access_token": "at-1", "token_type": "Bearer", "extra": ' + constant + b"}"
    assert parse_json_object(body) is None
    with pytest.raises(VendorRefused) as refused:
        parse_token_response("crm", 200, body, now=FakeClock().now())
    assert refused.value.error == INVALID_RESPONSE
