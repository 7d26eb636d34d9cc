"""The settings of connected accounts: ``[connect]``, and each connected service's client secret.

Exported from :mod:`agentguard.config`; kept apart because that module is long. A service
whose upstream credential is each user's own vendor account says so, with its OAuth client::

    public_origin = "https://gw.example.com"   # required: the redirect URI is built from it

    [[services]]
    name = "crm"
    base_url = "https://api.crm.example/v2"
    credentials = "connected"

    [services.oauth]
    client_id = "agentguard-crm"
    authorization_endpoint = "https://auth.crm.example/authorize"
    token_endpoint = "https://auth.crm.example/token"
    scopes = ["contacts.read"]

    [connect]
    ticket_ttl = 900        # seconds an operator-issued connect link stays usable
    state_ttl = 600         # seconds the human may take at the vendor's consent page
    lease_seconds = 30      # how long one instance may hold a (service, user) refresh (>= 15)
    wait_seconds = 10       # how long a call waits for another instance's refresh

The redirect URI registered at the vendor is ``<public_origin>/connect/<service>/callback``.
The client secret is never written in the file: it comes from
``AGENTGUARD_OAUTH_<SERVICE>_CLIENT_SECRET`` (the service name upper-cased, ``-`` as ``_``),
or from the 0600 file ``AGENTGUARD_OAUTH_<SERVICE>_CLIENT_SECRET_FILE`` or
``[secrets] oauth_client_secret_files = { crm = "/run/secrets/crm" }`` names, in that order.
A client that authenticates (``client_auth`` other than ``"none"``) without one cannot start
the gateway: :meth:`~agentguard.config.Settings.oauth_client_secret` raises a
:class:`~agentguard.config.SettingsError` naming the variable. The operator commands that need
no vendor (``connections list``, ``connections link``) run without it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agentguard._config_source import Source, SourceError, field_name, file_path, read_private
from agentguard._secret import Secret
from agentguard.connect._refresh import LEASE_MARGIN
from agentguard.errors import ConfigurationError

if TYPE_CHECKING:
    from agentguard._services import ServiceConfig

__all__ = [
    "CONNECT_MOUNT",
    "VENDOR_TIMEOUT",
    "ConnectSettings",
    "Problem",
    "client_secret",
    "client_secret_variable",
    "connect_problems",
    "read_client_secrets",
    "refuse_inline_client_secrets",
    "resolve_secret_paths",
]

CONNECT_MOUNT = "/connect"
"""Where the gateway serves the connect pages on the agents' listener."""

VENDOR_TIMEOUT = 10.0
"""Seconds each exchange with a vendor may take: the timeout of the gateway's vendor clients
(:class:`~agentguard.connect.VendorClient`'s default)."""

FILES_KEY = "oauth_client_secret_files"
"""The ``[secrets]`` key naming each connected service's client secret file."""

Location = tuple[str | int, ...]
Problem = tuple[Location, str]
"""A settings location (``("services", 0, "credentials")``) and what is wrong there."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConnectSettings(Section):
    """``[connect]``: lifetimes of the connect flow and the shared refresh lease.

    Attributes:
        ticket_ttl: seconds an operator-issued one-time connect link stays usable (15 min).
        state_ttl: seconds between sending the human to the vendor and the vendor's callback
            (10 min): the time to sign in and consent.
        lease_seconds: how long one instance may hold the refresh of one (service, user)
            before another may take over (a crashed holder's lease runs out). At least the
            vendor client's timeout (10 s) plus 5 s: the vendor must answer, and its answer
            (a rotated refresh token) be saved, before anyone else may refresh.
        wait_seconds: how long a call waits for the refresh another instance holds; then
            it goes on with the current token while that is still valid, else it is
            answered 502 ``vendor_unavailable``.
    """

    ticket_ttl: int = Field(default=900, gt=0, le=7 * 86400)
    state_ttl: int = Field(default=600, gt=0, le=3600)
    lease_seconds: float = Field(default=30.0, gt=0, le=600)
    wait_seconds: float = Field(default=10.0, ge=0, le=300)

    @field_validator("lease_seconds")
    @classmethod
    def _lease_fits_a_refresh(cls, value: float) -> float:
        needed = VENDOR_TIMEOUT + LEASE_MARGIN
        if value < needed:
            raise ValueError(
                f"must be at least {needed:g} seconds: the vendor's timeout "
                f"({VENDOR_TIMEOUT:g} s) plus {LEASE_MARGIN:g} s to save a rotated refresh "
                "token before another instance may take the refresh over"
            )
        return value

    def ticket_lifetime(self) -> timedelta:
        """:attr:`ticket_ttl` as a duration."""
        return timedelta(seconds=self.ticket_ttl)

    def state_lifetime(self) -> timedelta:
        """:attr:`state_ttl` as a duration."""
        return timedelta(seconds=self.state_ttl)


def client_secret_variable(service: str) -> str:
    """The environment variable holding ``service``'s OAuth client secret."""
    return f"AGENTGUARD_OAUTH_{service.upper().replace('-', '_')}_CLIENT_SECRET"


def client_secret(
    service: ServiceConfig | None, name: str, secrets: Mapping[str, SecretStr]
) -> Secret | str | None:
    """``service``'s client secret, ``None`` for a public client, or (a ``str``) why it is
    missing; :class:`ConfigurationError` when ``service`` is not a connected service."""
    if service is None or service.oauth is None:
        raise ConfigurationError(f"no connected service named {name!r}")
    if service.oauth.client_auth == "none":
        return None
    value = secrets.get(name)
    if value is None:
        variable = client_secret_variable(name)
        return (
            f"service {name}: the OAuth client authenticates with {service.oauth.client_auth} "
            f"and has no client secret: set {variable} (or {variable}_FILE, or [secrets] "
            f"{FILES_KEY}.{name}: a 0600 file)"
        )
    return Secret(value.get_secret_value())


def _connected(services: Iterable[ServiceConfig]) -> list[tuple[int, ServiceConfig]]:
    return [(i, s) for i, s in enumerate(services) if s.credentials == "connected"]


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_problems(
    services: Iterable[ServiceConfig], public_origin: str | None, files: Mapping[str, Path]
) -> list[Problem]:
    """What stops the connected services from working, each at its settings location.

    A connected service needs ``public_origin`` (the vendor redirects the human's browser to
    it with the authorization code), over https unless the host is loopback or the service's
    OAuth client allows http; two connected services must not share one client secret
    variable; ``[secrets] oauth_client_secret_files`` names only connected services.
    """
    services = list(services)
    connected = _connected(services)
    problems: list[Problem] = []
    variables: dict[str, str] = {}
    for index, service in connected:
        where: Location = ("services", index, "credentials")
        redirect = f"{CONNECT_MOUNT}/{service.name}/callback"
        if public_origin is None:
            problems.append(
                (
                    where,
                    f'credentials = "connected" needs public_origin: the vendor sends the user '
                    f"back to <public_origin>{redirect}; set public_origin (or "
                    "AGENTGUARD_PUBLIC_ORIGIN) to the URL browsers reach the gateway at",
                )
            )
        else:
            parts = urlsplit(public_origin)
            insecure = service.oauth is not None and service.oauth.allow_insecure_http
            if parts.scheme != "https" and not _loopback(parts.hostname) and not insecure:
                problems.append(
                    (
                        where,
                        f"public_origin is http://: the vendor would send authorization codes "
                        f"to {public_origin}{redirect} in clear text; use https (http is "
                        "accepted for a loopback host, or with oauth.allow_insecure_http)",
                    )
                )
        variable = client_secret_variable(service.name)
        if variable in variables:
            problems.append(
                (
                    ("services", index, "name"),
                    f"services {variables[variable]!r} and {service.name!r} would share the "
                    f"client secret variable {variable}; rename one",
                )
            )
        variables[variable] = service.name
    names = {service.name for _, service in connected}
    for name in files:
        if name not in names:
            problems.append(
                (
                    ("secrets", FILES_KEY, name),
                    f"no connected service named {name!r} (connected: "
                    f"{', '.join(sorted(names)) or 'none'})",
                )
            )
    if names and "connect" in {service.name for service in services}:
        index = next(i for i, s in enumerate(services) if s.name == "connect")
        problems.append(
            (
                ("services", index, "name"),
                "the service name 'connect' is reserved for the connect pages (/connect)",
            )
        )
    return problems


def refuse_inline_client_secrets(source: Source) -> None:
    """Refuse ``client_secret`` written in a ``[services.oauth]`` table, naming its variable
    (the model would only say "extra inputs are not permitted")."""
    services = source.data.get("services")
    for index, service in enumerate(services if isinstance(services, list) else ()):
        oauth = service.get("oauth") if isinstance(service, dict) else None
        if not isinstance(oauth, dict):
            continue
        for key in ("client_secret", "client_secret_file"):
            if key in oauth:
                name = service.get("name")
                variable = client_secret_variable(name if isinstance(name, str) else "<SERVICE>")
                location: Location = ("services", index, "oauth", key)
                raise SourceError(
                    source.where(location),
                    "secrets are never read from the configuration file; use "
                    f"{variable}, {variable}_FILE or [secrets] {FILES_KEY} (a 0600 file)",
                    field=field_name(location),
                )


def resolve_secret_paths(source: Source, base: Path) -> None:
    """Resolve the relative paths of ``[secrets] oauth_client_secret_files`` against ``base``
    (the settings file's directory), as every other file the settings name."""
    secrets = source.data.get("secrets")
    files = secrets.get(FILES_KEY) if isinstance(secrets, dict) else None
    if not isinstance(files, dict):
        return
    for name, value in files.items():
        if isinstance(value, str):
            files[name] = file_path(source, ("secrets", FILES_KEY, name), value, base)


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("a client secret is UTF-8 text") from None
    if not text:
        raise ValueError("the client secret is empty")
    if any(not ch.isprintable() for ch in text):
        raise ValueError("a client secret is one line of printable characters")
    return text


def read_client_secrets(
    source: Source,
    services: Iterable[ServiceConfig],
    files: Mapping[str, Path],
    environ: Mapping[str, str],
) -> tuple[dict[str, SecretStr], list[tuple[str, str, str]]]:
    """Each connected service's client secret, and the problems as ``(where, field, why)``.

    The variable wins over the ``_FILE`` variable, which wins over ``[secrets]``. A service
    without any is left out (see :meth:`~agentguard.config.Settings.oauth_client_secret`).
    Messages name the variable or the file, never the secret.
    """
    found: dict[str, SecretStr] = {}
    problems: list[tuple[str, str, str]] = []
    for _, service in _connected(services):
        variable = client_secret_variable(service.name)
        where, field = variable, ""
        try:
            if environ.get(variable):
                found[service.name] = SecretStr(_decode(environ[variable].encode()))
                continue
            path: Path | None = None
            if environ.get(f"{variable}_FILE"):
                where = f"{variable}_FILE"
                path = Path(environ[where])
            elif service.name in files:
                location: Location = ("secrets", FILES_KEY, service.name)
                where, field = source.where(location), field_name(location)
                path = files[service.name]
            if path is not None:
                found[service.name] = SecretStr(_decode(read_private(path)))
        except SourceError as error:
            problems.append((where, field, f"{error.where}: {error.problem}"))
        except (OSError, ValueError) as error:
            text = error.strerror if isinstance(error, OSError) else str(error)
            problems.append((where, field, text or type(error).__name__))
    return found, problems
