"""The pytest11 plugin works in a user's own suite, run through pytester.

pytester runs a separate project whose only link to agentguard is the installed distribution: the
plugin is found through its ``pytest11`` entry point, as in any user's project.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HOW_TO = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "testing.md"


def _all_passed(result: pytest.RunResult, tests: int) -> None:
    """Each of ``tests`` passed on every backend anyio's default ``anyio_backend`` chose."""
    outcomes = result.parseoutcomes()
    assert set(outcomes) <= {"passed", "warnings"}, outcomes
    assert outcomes["passed"] % tests == 0 and outcomes["passed"] >= tests, outcomes


def _doc_examples() -> list[str]:
    """The complete test modules in the how-to page (python blocks that define a test)."""
    blocks = re.findall(r"```python\n(.*?)```", HOW_TO.read_text(encoding="utf-8"), re.S)
    return [block for block in blocks if "def test_" in block]


def test_plugin_is_registered_as_pytest11_entry_point() -> None:
    found = [
        ep
        for ep in importlib.metadata.entry_points(group="pytest11")
        if ep.value == "agentguard.testing._plugin"
    ]
    assert [ep.name for ep in found] == ["agentguard"]


def test_fixtures_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest
from agentguard import Grants

@pytest.fixture
def agentguard_grants():
    return Grants.from_scope("crm:write")
"""
    )
    pytester.makepyfile(
        """
import anyio
import pytest

def test_store_user_and_keys(agentguard_store, agentguard_user, agentguard_keys, agentguard_clock):
    assert agentguard_user.grants.to_scope() == "crm:write"
    assert agentguard_keys.access.user_id == agentguard_user.id
    found = anyio.run(agentguard_store.lookup, agentguard_keys.access.key_hash)
    assert found is not None and found.member

def test_guarded_client(agentguard_client, agentguard_keys, agentguard_clock):
    async def call(key):
        return await agentguard_client.post(
            "/crm/contacts", headers={"Authorization": f"Bearer {key}"}
        )
    response = anyio.run(call, agentguard_keys.access_key.reveal())
    assert response.status_code == 200
    assert response.json()["user"] == "user-1"
    agentguard_clock.advance(3600)
    assert anyio.run(call, agentguard_keys.access_key.reveal()).status_code == 401

def test_refresh_through_client(agentguard_client, agentguard_keys):
    async def refresh():
        key = agentguard_keys.refresh_key.reveal()
        form = {"grant_type": "refresh_token", "refresh_token": key}
        return await agentguard_client.post("/oauth/token", data=form)
    assert anyio.run(refresh).status_code == 200
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fixtures_beside_an_async_fixture_with_sniffio_installed(
    pytester: pytest.Pytester,
) -> None:
    # sniffio (brought by openai, anthropic, trio) made anyio.run() in a sync fixture see the
    # test's running loop: "Already running asyncio in this thread". No anyio_backend is set.
    import sniffio

    assert sniffio.__name__ == "sniffio"
    pytester.makepyfile(
        """
import pytest
import sniffio

@pytest.fixture
async def started():
    assert sniffio.current_async_library() in ("asyncio", "trio")
    yield "ready"

@pytest.mark.anyio
async def test_async_fixture_first(started, agentguard_user, agentguard_keys, agentguard_client):
    assert started == "ready"
    headers = {"Authorization": f"Bearer {agentguard_keys.access_key.reveal()}"}
    response = await agentguard_client.get("/crm/contacts", headers=headers)
    assert response.status_code == 200
    assert response.json()["user"] == agentguard_user.id

@pytest.mark.anyio
async def test_refused_after_revocation(
    started, agentguard_guard, agentguard_keys, agentguard_client
):
    assert await agentguard_guard.issuer.revoke_presented(agentguard_keys.access_key.reveal())
    headers = {"Authorization": f"Bearer {agentguard_keys.access_key.reveal()}"}
    assert (await agentguard_client.get("/crm/contacts", headers=headers)).status_code == 401
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    _all_passed(result, tests=2)  # on asyncio, and on trio too where it is installed


def test_fixtures_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    import trio

    assert trio.__name__ == "trio"
    pytester.makepyfile(
        """
import pytest
import sniffio

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param

@pytest.fixture
async def library():
    yield sniffio.current_async_library()

@pytest.mark.anyio
async def test_guarded_call(library, anyio_backend, agentguard_client, agentguard_keys):
    assert library == anyio_backend
    headers = {"Authorization": f"Bearer {agentguard_keys.access_key.reveal()}"}
    assert (await agentguard_client.get("/crm/contacts", headers=headers)).status_code == 200
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_guarded_call?asyncio? PASSED*", "*test_guarded_call?trio? PASSED*"]
    )


@pytest.mark.parametrize("index", range(2))
def test_how_to_examples_pass_verbatim(pytester: pytest.Pytester, index: int) -> None:
    examples = _doc_examples()
    assert len(examples) == 2, "docs/how-to/testing.md should hold two complete test modules"
    pytester.makepyfile(examples[index])
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_how_to_example_without_anyio_backend(pytester: pytest.Pytester) -> None:
    # The example with its anyio_backend fixture removed: anyio's default picks the backends
    # (every installed one, on recent anyio), and the fixtures pass on each.
    example = _doc_examples()[0]
    stripped = re.sub(
        r"@pytest.fixture\ndef anyio_backend\(\):\n    return \"asyncio\"\n\n\n", "", example
    )
    assert "anyio_backend" not in stripped
    pytester.makepyfile(stripped)
    result = pytester.runpytest("-p", "no:cacheprovider")
    _all_passed(result, tests=1)


def test_dpop_key_fixture_follows_the_fake_clock(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import json, base64
import pytest
from agentguard.dpop import DPoPKey

def claims(proof):
    payload = proof.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

def test_iat_is_the_fake_clock(agentguard_dpop_key, agentguard_clock):
    assert isinstance(agentguard_dpop_key, DPoPKey)
    assert claims(agentguard_dpop_key.proof("GET", "http://testserver/"))["iat"] == (
        agentguard_clock.timestamp()
    )
    agentguard_clock.advance(1000)
    assert claims(agentguard_dpop_key.proof("GET", "http://testserver/"))["iat"] == (
        agentguard_clock.timestamp()
    )
    assert claims(agentguard_dpop_key.proof("GET", "http://testserver/", iat=7))["iat"] == 7

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_real_time_proof_is_refused(agentguard_client, agentguard_guard, agentguard_user):
    key = DPoPKey.generate()
    keys = await agentguard_guard.issuer.issue(agentguard_user.id, "ws-1", jkt=key.thumbprint)
    access = keys.access_key.reveal()
    url = "http://testserver/crm/contacts"
    headers = {"Authorization": f"DPoP {access}", "DPoP": key.proof("GET", url, access_key=access)}
    assert (await agentguard_client.get(url, headers=headers)).status_code == 401
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    # pytest autoloads the plugin in every run of every project that has agentguard installed:
    # loading it adds the plugin, the two lazy package roots and the version, nothing else.
    code = """
import sys
import pytest
before = set(sys.modules)
import agentguard.testing._plugin
added = sorted(set(sys.modules) - before)
ours = {"agentguard", "agentguard._version", "agentguard.testing", "agentguard.testing._plugin"}
stdlib = sys.stdlib_module_names
print(",".join(m for m in added if m not in ours and m.split(".")[0] not in stdlib))
print(",".join(m for m in ("httpx", "starlette", "uvicorn") if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["", ""]
