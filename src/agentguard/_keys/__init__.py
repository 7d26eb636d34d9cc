"""Key format, generation, hashing, and the issuer (issue, refresh with rotation, revoke)."""

from agentguard._keys._format import (
    KEY_LENGTH,
    PREFIXES,
    ParsedKey,
    generate_key,
    hash_key,
    looks_like_key,
    new_id,
    parse_key,
)
from agentguard._keys._issuer import DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, KeyIssuer

__all__ = [
    "DEFAULT_ACCESS_TTL",
    "DEFAULT_REFRESH_TTL",
    "KEY_LENGTH",
    "PREFIXES",
    "KeyIssuer",
    "ParsedKey",
    "generate_key",
    "hash_key",
    "looks_like_key",
    "new_id",
    "parse_key",
]
