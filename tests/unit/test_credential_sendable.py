"""A credential that cannot travel in a header or a URL is refused where it enters, and refused
(502, never a 500 or a split header) where it would leave."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard import CredentialOwner, CredentialScope, Placement, Secret, ServiceConfig
from agentguard.credentials import CredentialVault, KeyRing
from agentguard.credentials._placement import attach_credential
from agentguard.errors import BadGateway, Reason, UsageError
from agentguard.storage import MemoryStore
from agentguard.testing import FakeClock

SERVICES = [
    ServiceConfig(name="crm", base_url="https://crm.example"),
    ServiceConfig(
        name="hdr", base_url="https://h.example", placement=Placement.HEADER, parameter="X-Key"
    ),
    ServiceConfig(
        name="qry", base_url="https://q.example", placement=Placement.QUERY, parameter="key"
    ),
]
pytestmark = pytest.mark.anyio
# At most 15 characters: a Secret of 16 or more is watched by tests/canary.py, and Hypothesis draws
# texts from the string constants of the code under test too ("application/json", an error
# message), which rightly appear in logs and error bodies: a generated credential that happened to
# be one failed the whole run as a leak.
UNSENDABLE = st.text(min_size=1, max_size=15).filter(
    lambda text: not (text.isascii() and text.isprintable())
)
PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=15)


def _vault() -> CredentialVault:
    return CredentialVault(MemoryStore(), KeyRing({"k": b"K" * 32}, "k"), clock=FakeClock())


@pytest.mark.parametrize(
    "value", ["crm-live-\u2026", "key\r\nX-Injected: 1", "a\x00b", "tab\there"]
)
async def test_the_vault_refuses_what_cannot_be_sent(value: str) -> None:
    with pytest.raises(UsageError, match="printable ASCII"):
        await _vault().put("crm", CredentialOwner.USER, "u1", value, scope=CredentialScope.USER)


@given(value=UNSENDABLE)
def test_placement_refuses_an_unsendable_credential_as_unavailable(value: str) -> None:
    for service in SERVICES:
        with pytest.raises(BadGateway) as caught:
            attach_credential([], b"", service, Secret(value))
        assert caught.value.reason is Reason.CREDENTIAL_UNAVAILABLE
        assert value not in str(caught.value)


@given(value=PRINTABLE)
def test_placement_sends_every_printable_ascii_credential(value: str) -> None:
    for service in SERVICES:
        headers, query = attach_credential([], b"", service, Secret(value))
        assert headers or query
        for _, header_value in headers:
            assert b"\r" not in header_value and b"\n" not in header_value
