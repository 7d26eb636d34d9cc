"""A service's OAuth 2.1 client: how the gateway sends a user to the vendor and redeems the code.

Given per service (``[services.oauth]`` in ``agentguard.toml``, or ``oauth=`` on
:class:`~agentguard.ServiceConfig` with ``credentials="connected"``)::

    [services.oauth]
    client_id = "agentguard-crm"
    authorization_endpoint = "https://auth.crm.example/authorize"
    token_endpoint = "https://auth.crm.example/token"
    revocation_endpoint = "https://auth.crm.example/revoke"   # optional (RFC 7009)
    scopes = ["contacts.read", "contacts.write"]
    # the client secret: AGENTGUARD_OAUTH_<SERVICE>_CLIENT_SECRET (or ..._CLIENT_SECRET_FILE,
    # or [secrets] oauth_client_secret_files), never in this file

or, by discovery from the vendor's RFC 8414 metadata, ``issuer`` alone: the endpoints the
metadata names must be on a host and port in ``discovery_hosts`` (by default only the issuer's
own host and port), so a tampered or hostile metadata document cannot point the gateway at an
internal address.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["OAuthClientConfig"]

_Scope = Annotated[str, StringConstraints(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,256}$")]
"""An RFC 6749 scope token: printable ASCII without space, ``"`` or ``\\``."""
_Param = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
_HostPort = Annotated[
    str,
    StringConstraints(
        pattern=r"^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253})(:[1-9][0-9]{0,4})?$"
    ),
]
"""A ``discovery_hosts`` entry: ``host`` or ``host:port`` (the client checks the port range)."""
_RESERVED_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)


def _check_url(name: str, value: str | None, insecure: bool) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute https:// URL")
    if parts.scheme == "http" and not insecure:
        raise ValueError(
            f"{name} is http://: refusing to send codes and tokens in clear text; use https "
            "or set allow_insecure_http (tests, loopback)"
        )
    if parts.fragment or parts.username or parts.password:
        raise ValueError(f"{name} has no fragment or credentials")


class OAuthClientConfig(BaseModel):
    """The gateway's OAuth 2.1 client registration at one vendor.

    Attributes:
        client_id: the client id the vendor issued.
        authorization_endpoint, token_endpoint: the vendor's endpoints; both, or neither
            (then ``issuer`` is required and they come from its RFC 8414 metadata).
        revocation_endpoint: RFC 7009 endpoint, used on disconnect (optional).
        issuer: the vendor's issuer identifier, for RFC 8414 discovery.
        discovery_hosts: ``host`` or ``host:port`` entries (an IPv6 address in brackets) the
            discovered endpoints may be on; without a port only 443 (80 for ``http``); empty
            means only the issuer's own host and port.
        scopes: requested at authorization.
        client_auth: how the gateway authenticates at the token endpoint.
        authorize_params: extra authorization-request parameters a vendor needs
            (``access_type = "offline"``); never one the flow sets itself.
        refresh_ahead: renew the vendor's access token this many seconds before it expires.
        allow_insecure_http: permit ``http://`` endpoints (tests, loopback).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    issuer: str | None = None
    discovery_hosts: tuple[_HostPort, ...] = ()
    scopes: tuple[_Scope, ...] = ()
    client_auth: Literal["client_secret_basic", "client_secret_post", "none"] = (
        "client_secret_basic"
    )
    authorize_params: dict[_Param, str] = Field(default_factory=dict)
    refresh_ahead: float = Field(default=60.0, ge=0, le=86400)
    allow_insecure_http: bool = False

    @model_validator(mode="after")
    def _check(self) -> OAuthClientConfig:
        insecure = self.allow_insecure_http
        for name in ("authorization_endpoint", "token_endpoint", "revocation_endpoint"):
            _check_url(name, getattr(self, name), insecure)
        _check_url("issuer", self.issuer, insecure)
        explicit = (self.authorization_endpoint, self.token_endpoint)
        if None in explicit and explicit != (None, None):
            raise ValueError(
                "give both authorization_endpoint and token_endpoint, or neither (and issuer, "
                "for RFC 8414 discovery)"
            )
        if explicit == (None, None) and self.issuer is None:
            raise ValueError("give authorization_endpoint and token_endpoint, or issuer")
        if self.issuer is not None and urlsplit(self.issuer).query:
            raise ValueError("issuer has no query (RFC 8414 §2)")
        reserved = _RESERVED_PARAMS.intersection(self.authorize_params)
        if reserved:
            raise ValueError(
                f"authorize_params cannot set {sorted(reserved)}: the connect flow sets them"
            )
        return self
