"""Token resolvers for credentials issued by an existing OAuth 2.1 authorization server.

Pass them to ``Guard(token_resolvers=[...])``. The token answers *who*; what that user may do is
still read live from the user store, exactly as for agentguard keys.
"""

from __future__ import annotations

from agentguard.resolvers._claims import SubjectMapping, scope_grants, token_key_id
from agentguard.resolvers._introspection import ANY_AUDIENCE, IntrospectionResolver
from agentguard.resolvers._jwks import JWKSCache, SigningKey
from agentguard.resolvers._jwt import DEFAULT_JWT_ALGORITHMS, JWTAccessTokenResolver

__all__ = [
    "ANY_AUDIENCE",
    "DEFAULT_JWT_ALGORITHMS",
    "IntrospectionResolver",
    "JWKSCache",
    "JWTAccessTokenResolver",
    "SigningKey",
    "SubjectMapping",
    "scope_grants",
    "token_key_id",
]
