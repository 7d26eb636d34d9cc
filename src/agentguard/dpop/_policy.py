"""DPoPPolicy: how a server accepts DPoP, and which URL a proof's ``htu`` must name.

The expected ``htu`` is never built from the request's ``Host`` header alone: a client chooses
that header. Configure the public origin the agents use (``https://api.example.com``), or list
the host names that may appear in ``Host`` when several are served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from agentguard._request import GuardRequest
from agentguard.dpop._algorithms import ALGORITHMS, DEFAULT_ALGORITHMS
from agentguard.errors import ConfigurationError, InvalidRequest

__all__ = ["DPoPPolicy"]


def _nearest(request: GuardRequest, name: bytes) -> str | None:
    """The value the nearest proxy appended to a comma-separated forwarding header."""
    values = request.header_values(name)
    if not values:
        return None
    return values[-1].decode("latin-1").split(",")[-1].strip() or None


@dataclass(frozen=True)
class DPoPPolicy:
    """DPoP settings for a :class:`~agentguard.Guard`.

    Args:
        public_origin: scheme, host and port the agents call, e.g. ``"https://api.example.com"``.
        trusted_hosts: instead of one origin, the ``Host`` values accepted; the origin is then
            the request's scheme and its (trusted) host. Requests naming another host get 400.
        trust_forwarded: behind a reverse proxy, take the scheme and host from the
            ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` values the nearest proxy appended (the
            last ones); the host must still be in ``trusted_hosts``. Enable it only when every
            request reaches the app through a proxy that sets these headers.
        required: refuse keys that are not DPoP-bound and proofs that are missing (and refuse to
            issue unbound keys).
        algorithms: accepted JWS algorithms (asymmetric only; RSA is opt-in).
        iat_window: seconds a proof's ``iat`` may differ from now, either way (MCP asks ±300).
        max_proof_bytes: longest ``DPoP`` header accepted.
        nonce_secret: when set, resource requests need a server nonce (HMAC of a time step under
            this secret, so every instance sharing it agrees). At least 32 bytes.
        token_nonce_secret: the same for the token endpoint; keep it distinct from the above.
        nonce_step: seconds a nonce stays current (the previous one is accepted too).
    """

    public_origin: str | None = None
    trusted_hosts: tuple[str, ...] = ()
    trust_forwarded: bool = False
    required: bool = False
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    iat_window: int = 300
    max_proof_bytes: int = 8192
    nonce_secret: bytes | None = field(default=None, repr=False)
    token_nonce_secret: bytes | None = field(default=None, repr=False)
    nonce_step: int = 300

    def __post_init__(self) -> None:
        if (self.public_origin is None) == (not self.trusted_hosts):
            raise ConfigurationError(
                "DPoPPolicy needs exactly one of public_origin='https://api.example.com' or "
                "trusted_hosts=('api.example.com',): the htu check must not trust Host blindly"
            )
        if self.trust_forwarded and not self.trusted_hosts:
            raise ConfigurationError(
                "trust_forwarded needs trusted_hosts: the host is still checked"
            )
        if self.public_origin is not None:
            parts = urlsplit(self.public_origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
                raise ConfigurationError(
                    "public_origin is a scheme and host only, e.g. 'https://api.example.com'"
                )
            object.__setattr__(self, "public_origin", f"{parts.scheme}://{parts.netloc}")
        object.__setattr__(self, "trusted_hosts", tuple(h.lower() for h in self.trusted_hosts))
        unknown = set(self.algorithms) - ALGORITHMS.keys()
        if unknown or not self.algorithms:
            raise ConfigurationError(f"unknown DPoP algorithms: {sorted(unknown)}")
        for secret in (self.nonce_secret, self.token_nonce_secret):
            if secret is not None and len(secret) < 32:
                raise ConfigurationError("a DPoP nonce secret is at least 32 random bytes")
        if self.nonce_secret is not None and self.nonce_secret == self.token_nonce_secret:
            raise ConfigurationError("use different nonce secrets for resources and tokens")

    def origin(self, request: GuardRequest) -> str:
        """The origin the request was sent to, from configuration or a trusted ``Host``."""
        if self.public_origin is not None:
            return self.public_origin
        scheme = "https" if request.scheme in ("https", "wss") else "http"
        host = request.header(b"host")
        if self.trust_forwarded:
            forwarded_host = _nearest(request, b"x-forwarded-host")
            forwarded_proto = _nearest(request, b"x-forwarded-proto")
            host = forwarded_host.encode("latin-1") if forwarded_host else host
            if forwarded_proto:
                if forwarded_proto.lower() not in ("http", "https"):
                    raise InvalidRequest("X-Forwarded-Proto is neither http nor https")
                scheme = forwarded_proto.lower()
        name = host.decode("latin-1").lower() if host is not None else ""
        if name.rsplit(":", 1)[0] not in self.trusted_hosts and name not in self.trusted_hosts:
            raise InvalidRequest("the request names a host this server does not serve")
        return f"{scheme}://{name}"

    def url(self, request: GuardRequest) -> str:
        """The full URL a proof's ``htu`` must name: origin + mount point + path as sent."""
        if request.raw_path is not None:
            path = request.raw_path.decode("latin-1").split("?", 1)[0]
        else:
            path = quote(request.path, safe="/:@!$&'()*+,;=-._~")
        if request.root_path and not path.startswith(request.root_path):
            path = request.root_path + path
        return self.origin(request) + path
