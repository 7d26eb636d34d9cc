"""Key audiences (RFC 8707): which resource an agentguard key was issued for.

A key may carry an *audience*: the identifier of the resource it is meant for
(``https://api.example.com/mcp``), set at issuance (``KeyIssuer.issue(audience=...)``) or by the
``resource`` parameter of a refresh (RFC 8707 §2.2). A key without one is a deployment-wide key:
every resource that decides against the same store accepts it, as all keys did before audiences.

Matching. Both identifiers are normalised as DPoP ``htu`` values are (RFC 3986 §6.2.2-6.2.3:
case of scheme and host, default port, percent-encoding, dot segments); an audience then
*covers* a resource when it is the same URL, or names a path prefix of it on a segment boundary
(``https://api.example.com`` covers ``https://api.example.com/mcp``, ``.../mcp`` does not cover
``.../mcpx``). A trailing slash makes no difference. agentguard resources are ``http(s)`` URLs
with no query and no fragment; anything else is refused as a resource (``invalid_target``).

Refresh. A refresh may keep the family's audience (no ``resource`` sent) or narrow it (a resource
the current audience covers, or any resource when the key has none); it may never switch to a
resource the current audience does not cover. Narrowing is kept by every later key of the family.

Policy for keys without an audience, where a resource checks (:func:`check_audience`):
``require=False`` accepts them (the compatible default: every key issued before audiences has
none), ``require=True`` refuses them. Require audiences wherever one store backs several resources
that should not be able to replay each other's bearer keys.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from agentguard.dpop._htu import normalize_htu
from agentguard.errors import InvalidTarget, InvalidToken, Reason

if TYPE_CHECKING:
    from agentguard._model import Principal

__all__ = [
    "AUDIENCE_REQUIRED",
    "INVALID_TARGET",
    "MAX_RESOURCE_LENGTH",
    "WRONG_AUDIENCE",
    "InvalidTarget",
    "canonical_resource",
    "check_audience",
    "covers",
    "narrow_audience",
]

MAX_RESOURCE_LENGTH = 2048


#: The key names another resource than the one it was presented to.
WRONG_AUDIENCE = Reason.WRONG_AUDIENCE
#: The key names no resource and the resource requires one.
AUDIENCE_REQUIRED = Reason.AUDIENCE_REQUIRED
#: A token request's ``resource`` is malformed or not one this key may be narrowed to.
INVALID_TARGET = Reason.INVALID_TARGET


@lru_cache(maxsize=256)
def canonical_resource(value: str) -> str:
    """``value`` as agentguard stores and compares resource identifiers.

    Raises :class:`ValueError` unless ``value`` is an absolute ``http(s)`` URL of at most
    :data:`MAX_RESOURCE_LENGTH` printable ASCII characters, with a host, no userinfo, no query
    and no fragment. The result is normalised (see the module docstring) and idempotent.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_RESOURCE_LENGTH:
        raise ValueError("a resource is a non-empty URL of at most 2048 characters")
    if not all(" " < char <= "~" for char in value):
        raise ValueError("a resource is printable ASCII without spaces")
    if "#" in value or "?" in value:
        raise ValueError("a resource has no query and no fragment")
    scheme = value.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ValueError("a resource is an http(s) URL")
    return normalize_htu(value)  # raises ValueError for a bad host, port or encoding


def _split(canonical: str) -> tuple[str, str]:
    """``(origin, path without a trailing slash)`` of a canonical resource."""
    scheme, rest = canonical.split("://", 1)
    authority, _, path = rest.partition("/")
    return f"{scheme}://{authority}", "/" + path.rstrip("/")


def covers(audience: str, resource: str) -> bool:
    """Whether a key issued for ``audience`` may be used at ``resource``.

    Raises :class:`ValueError` when either is not a valid resource identifier.
    """
    audience_origin, audience_path = _split(canonical_resource(audience))
    resource_origin, resource_path = _split(canonical_resource(resource))
    if audience_origin != resource_origin:
        return False
    if audience_path in ("/", resource_path):
        return True
    return resource_path.startswith(audience_path + "/")


def narrow_audience(current: str | None, requested: str | None) -> str | None:
    """The audience a refresh gives the new keys: kept, or narrowed to ``requested``.

    Raises :class:`InvalidTarget` when ``requested`` is malformed or not covered by ``current``.
    """
    if requested is None:
        return current
    try:
        narrowed = canonical_resource(requested)
    except ValueError:
        raise InvalidTarget(
            "resource must be an absolute http(s) URL without query or fragment (RFC 8707)"
        ) from None
    if current is None:
        return narrowed
    try:
        allowed = covers(current, narrowed)
    except ValueError:  # a stored audience that no longer parses: never widen from it
        allowed = False
    if not allowed:
        raise InvalidTarget(
            "this key was issued for another resource; a refresh may keep or narrow its "
            "audience, never switch it"
        )
    return narrowed


def check_audience(principal: Principal, resource: str, *, require: bool) -> None:
    """Refuse ``principal`` unless its key was issued for ``resource`` (RFC 8707, MCP).

    Args:
        principal: the resolved caller; ``principal.audience`` is its key's audience.
        resource: this resource server's identifier, as in its RFC 9728 metadata.
        require: refuse keys without an audience too (strict mode); ``False`` accepts them as
            deployment-wide keys (the compatible default).

    Raises:
        InvalidToken: 401 ``invalid_token``, reason :data:`WRONG_AUDIENCE` (issued for another
            resource) or :data:`AUDIENCE_REQUIRED` (no audience while ``require``).
        ValueError: ``resource`` is not a valid resource identifier (a configuration error:
            check it once at start-up with :func:`canonical_resource`).
    """
    canonical_resource(resource)
    audience = principal.audience
    ids = {
        "key_id": principal.key_id,
        "family_id": principal.family_id,
        "user_id": principal.user_id,
        "workspace_id": principal.workspace_id,
        "account_id": principal.account_id,
    }
    if audience is None:
        if require:
            raise InvalidToken(
                "this key was issued without an audience; this resource accepts only keys "
                "issued for it (RFC 8707 resource)",
                reason=AUDIENCE_REQUIRED,
            ).with_context(**ids)
        return
    try:
        allowed = covers(audience, resource)
    except ValueError:  # a stored audience that does not parse names no resource of ours
        allowed = False
    if not allowed:
        raise InvalidToken(
            "this key was issued for another resource (its audience)", reason=WRONG_AUDIENCE
        ).with_context(**ids)
