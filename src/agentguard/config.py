"""Settings for the gateway and the operator CLI: one TOML file plus ``AGENTGUARD_*`` variables.

:func:`load_settings` reads the file, lets environment variables override it, validates the
result into a :class:`Settings` model, and reads the secrets. A validation error names the field
and the file line (or the variable) it came from::

    agentguard.toml:14: services[0].base_url: refusing to send credentials over plain http

Secrets (key-encryption keys, the checkpoint signing key, introspection secrets, DPoP nonce
secrets) are never read from the TOML file: they come from an environment variable or from a
file that only its owner can read (``chmod 600``); a group- or world-readable file is refused.
They are held as ``SecretStr``/``SecretBytes``, so ``repr``, ``str`` and JSON dumps mask them.

=========================================  ============================================
Environment variable                       Setting
=========================================  ============================================
``AGENTGUARD_CONFIG``                      path of the TOML file (CLI default)
``AGENTGUARD_STORE``                       ``store.url``
``AGENTGUARD_PUBLIC_ORIGIN``               ``public_origin``
``AGENTGUARD_SERVER_HOST`` / ``_PORT``     ``server.host`` / ``server.port``
``AGENTGUARD_SERVER_GRACEFUL_TIMEOUT``     ``server.graceful_timeout``
``AGENTGUARD_LOG_LEVEL`` / ``_FORMAT``     ``logging.level`` / ``logging.format``
``AGENTGUARD_DPOP_ENABLED`` / ``_REQUIRED`` ``dpop.enabled`` / ``dpop.required``
``AGENTGUARD_DPOP_REPLAY``                 ``dpop.replay`` (a Redis URL)
``AGENTGUARD_AUDIT_ORIGIN``                ``audit.origin``
``AGENTGUARD_AUDIT_INSTANCE``              ``audit.instance``
``AGENTGUARD_AUDIT_CHECKPOINT_DIR``        ``audit.checkpoint_dir``
``AGENTGUARD_AUDIT_CHECKPOINT_INTERVAL``   ``audit.checkpoint_interval``
``AGENTGUARD_AUDIT_REFUSAL_*``             ``audit.refusal_summaries`` / ``_interval`` /
                                           ``_max_sources``
``AGENTGUARD_AUDIT_TILES``                 ``audit.tiles`` (off, operators, hashes, public)
``AGENTGUARD_AUDIT_WITNESS_QUORUM``        ``audit.witness_quorum``
``AGENTGUARD_CHECKPOINT_KEY_FILE``         ``audit.checkpoint_key_file``
``AGENTGUARD_KEK_FILE`` (and the others)   ``secrets.kek_file`` (``secrets.*_file``)
``AGENTGUARD_KEK``                         secret: ``id:base64key[,id:base64key...]``
``AGENTGUARD_CHECKPOINT_KEY``              secret: Ed25519 PKCS#8 PEM
``AGENTGUARD_INTROSPECTION_SECRETS``       secret: comma-separated
``AGENTGUARD_DPOP_NONCE_SECRET``           secret: base64url, at least 32 bytes
``AGENTGUARD_DPOP_TOKEN_NONCE_SECRET``     secret: base64url, at least 32 bytes
``AGENTGUARD_OAUTH_<SERVICE>_CLIENT_SECRET`` secret: a connected service's OAuth client
                                           secret (``_FILE``: a 0600 file holding it)
=========================================  ============================================

Connected accounts (:mod:`agentguard._config_connect`): a service with
``credentials = "connected"`` and a ``[services.oauth]`` table takes each user's own vendor
account. It needs ``public_origin`` (the redirect URI is
``<public_origin>/connect/<service>/callback``). ``[connect]`` sets ``ticket_ttl`` (900 s, an
operator's one-time connect link), ``state_ttl`` (600 s, the time at the vendor's consent page),
``lease_seconds`` (30 s, the shared refresh lease) and ``wait_seconds`` (10 s, how long a call
waits for another instance's refresh). The client secret comes from
``AGENTGUARD_OAUTH_<SERVICE>_CLIENT_SECRET`` (service name upper-cased, ``-`` as ``_``), else
the file ``AGENTGUARD_OAUTH_<SERVICE>_CLIENT_SECRET_FILE`` or
``[secrets] oauth_client_secret_files = { <service> = "path" }`` names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentguard._config_connect import (
    ConnectSettings,
    client_secret,
    client_secret_variable,
    connect_problems,
    read_client_secrets,
    refuse_inline_client_secrets,
    resolve_secret_paths,
)
from agentguard._config_gates import (
    ApprovalSettings,
    BudgetSettings,
    LimitSettings,
    RateLimitSettings,
)
from agentguard._config_observe import TelemetrySettings, TileAccess, WitnessSettings
from agentguard._config_source import (
    SECRET_ENVIRONMENT,
    Source,
    SourceError,
    decode_secret,
    field_name,
    level_names,
    read_private,
    read_toml,
    refuse_inline_secrets,
    relative_to,
)
from agentguard._config_streams import StreamSettings
from agentguard._services import ServiceConfig
from agentguard.errors import ConfigurationError

if TYPE_CHECKING:
    from agentguard._secret import Secret
    from agentguard.audit._checkpoints import Ed25519Signer
    from agentguard.credentials import KeyRing
    from agentguard.dpop._policy import DPoPPolicy

__all__ = [
    "NO_KEK",
    "ApprovalSettings",
    "AuditSettings",
    "BudgetSettings",
    "ConnectSettings",
    "DPoPSettings",
    "KeySettings",
    "LimitSettings",
    "LoggingSettings",
    "MinterSettings",
    "OperatorSettings",
    "RateLimitSettings",
    "SecretFiles",
    "SecretValues",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "StreamSettings",
    "TelemetrySettings",
    "WitnessSettings",
    "load_settings",
]


# what a missing key-encryption key says, wherever it is missed (CLI, gateway)
NO_KEK = (
    "no key-encryption key: set AGENTGUARD_KEK or [secrets] kek_file; make one with: "
    'agentguard credentials keygen --out agentguard.kek (then kek_file = "agentguard.kek" '
    "under [secrets])"
)


class SettingsError(ConfigurationError):
    """Settings that do not validate. ``str()`` is one line: ``where: field: problem``.

    Attributes:
        problems: every problem as ``(where, field, message)``; ``where`` is ``file:line`` or
            the environment variable that set the value.
    """

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        where, name, message = problems[0]
        line = f"{where}: {name}: {message}" if name else f"{where}: {message}"
        if len(problems) > 1:
            line += f" (and {len(problems) - 1} more)"
        super().__init__(line)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreSettings(_Section):
    """``[store]``: ``url`` is ``sqlite:///path.db``, ``postgresql://...`` or ``memory://``."""

    url: str = "sqlite:///agentguard.db"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("a store URL looks like sqlite:////var/lib/agentguard/agentguard.db")
        return value


class MinterSettings(_Section):
    """``[minters.<service>]``: RFC 8693 token exchange for a service keyed by an admin key."""

    token_url: str
    audience: str | None = None
    scope: str | None = None
    client_id: str | None = None
    subject_token_type: str | None = None
    timeout: float = Field(default=10.0, gt=0)
    allow_insecure_http: bool = False

    @model_validator(mode="after")
    def _check(self) -> MinterSettings:
        scheme = urlsplit(self.token_url).scheme
        if scheme != "https" and not (scheme == "http" and self.allow_insecure_http):
            raise ValueError("token_url must be https (or set allow_insecure_http)")
        return self


REPLAY_SCHEMES = frozenset({"redis", "rediss", "unix"})


class DPoPSettings(_Section):
    """``[dpop]``: accept DPoP-bound keys (``required`` refuses unbound ones).

    ``replay`` puts the replay cache (burnt proof ids) on Redis, ``redis://host:6379/0``,
    ``rediss://...`` or ``unix:///path.sock`` (needs ``agentguard[redis]``); by default the
    store keeps it.
    """

    enabled: bool = True
    required: bool = False
    trusted_hosts: tuple[str, ...] = ()
    algorithms: tuple[str, ...] | None = None
    iat_window: int = Field(default=300, gt=0)
    nonce_step: int = Field(default=300, gt=0)
    replay: str | None = None

    @field_validator("replay")
    @classmethod
    def _replay(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in REPLAY_SCHEMES:
            raise ValueError(
                "the replay cache is a Redis URL: redis://host:6379/0, rediss://... or unix://..."
            )
        return value


class KeySettings(_Section):
    """``[keys]``: lifetimes in seconds of issued access and refresh keys."""

    access_ttl: int = Field(default=3600, gt=0)
    refresh_ttl: int = Field(default=30 * 86400, gt=0)


class AuditSettings(_Section):
    """``[audit]``: this instance's name and, optionally, signed checkpoints on a timer."""

    instance: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    origin: str | None = None
    checkpoint_key_file: Path | None = None
    checkpoint_key_name: str | None = None
    checkpoint_dir: Path | None = None
    checkpoint_interval: float = Field(default=60.0, gt=0)
    refusal_summaries: bool = True
    refusal_interval: float = Field(default=60.0, gt=0)
    refusal_max_sources: int = Field(default=1024, ge=1)
    tiles: TileAccess = "operators"
    witnesses: tuple[WitnessSettings, ...] = ()
    witness_quorum: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> AuditSettings:
        if self.checkpoint_dir is not None and not self.origin:
            raise ValueError("checkpoint_dir needs origin (e.g. 'audit.example.com/agentguard')")
        if self.witness_quorum > len(self.witnesses):
            raise ValueError(
                f"witness_quorum {self.witness_quorum} is more than the "
                f"{len(self.witnesses)} configured [[audit.witnesses]]"
            )
        return self

    @property
    def key_name(self) -> str | None:
        """The signing key's name: ``checkpoint_key_name`` or the origin's host part."""
        if self.checkpoint_key_name:
            return self.checkpoint_key_name
        return self.origin.split("/", 1)[0] if self.origin else None


class ServerSettings(_Section):
    """``[server]``: where ``agentguard serve`` listens and how long shutdown may drain."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    graceful_timeout: float = Field(default=30.0, ge=0)
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"


class OperatorSettings(_Section):
    """``[operator]``: the operator listener (approvals; every operator endpoint to come).

    A separate listener, on loopback by default, authenticated by operator tokens
    (``agentguard operators issue``); agent keys are never accepted there.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)


class LoggingSettings(_Section):
    """``[logging]``: level, ``json`` (one object per line) or ``text``, access log on/off."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access_log: bool = True


class SecretFiles(_Section):
    """``[secrets]``: files (mode 0600) holding secrets; the variables win over them."""

    kek_file: Path | None = None
    introspection_secrets_file: Path | None = None
    dpop_nonce_secret_file: Path | None = None
    dpop_token_nonce_secret_file: Path | None = None
    approval_webhook_secret_file: Path | None = None
    oauth_client_secret_files: dict[str, Path] = Field(default_factory=dict)


class SecretValues(BaseModel):
    """The secrets themselves, masked in every repr and dump."""

    model_config = ConfigDict(frozen=True)

    kek: SecretStr | None = None
    checkpoint_key: SecretBytes | None = None
    introspection_secrets: tuple[SecretStr, ...] = ()
    dpop_nonce_secret: SecretBytes | None = None
    dpop_token_nonce_secret: SecretBytes | None = None
    approval_webhook_secret: SecretBytes | None = None
    oauth_client_secrets: dict[str, SecretStr] = Field(default_factory=dict)


class Settings(_Section):
    """Everything ``agentguard serve`` and the operator commands need.

    Build it with :func:`load_settings`; constructing it directly skips the secret sources.
    """

    public_origin: str | None = None
    store: StoreSettings = Field(default_factory=StoreSettings)
    services: tuple[ServiceConfig, ...] = ()
    minters: dict[str, MinterSettings] = Field(default_factory=dict)
    dpop: DPoPSettings = Field(default_factory=DPoPSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    budgets: tuple[BudgetSettings, ...] = ()
    rate_limits: tuple[RateLimitSettings, ...] = ()
    limits: LimitSettings = Field(default_factory=LimitSettings)
    connect: ConnectSettings = Field(default_factory=ConnectSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    secrets: SecretFiles = Field(default_factory=SecretFiles)
    secret_values: SecretValues = Field(default_factory=SecretValues, exclude=True)

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise ValueError("public_origin is a scheme and host only: 'https://api.example.com'")
        return f"{parts.scheme}://{parts.netloc}"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        names = [service.name for service in self.services]
        if len(set(names)) != len(names):
            raise ValueError("two services share one name")
        reserved = {"oauth", "healthz", "readyz", ".well-known"}
        if reserved & set(names):
            raise ValueError(f"service names {sorted(reserved)} are reserved for the gateway")
        for name in self.minters:
            if name not in names:
                raise ValueError(f"minters.{name}: no service named {name!r}")
        for kind, entries in (("budgets", self.budgets), ("rate_limits", self.rate_limits)):
            for entry in entries:  # a typo would leave a cap that applies to nothing
                if entry.service is not None and entry.service not in names:
                    raise ValueError(
                        f"{kind} {entry.name}: no service named {entry.service!r} "
                        f"(services: {', '.join(names) or 'none'})"
                    )
        if self.dpop.enabled and self.public_origin is None and not self.dpop.trusted_hosts:
            raise ValueError(
                "DPoP needs public_origin (the URL agents call) or dpop.trusted_hosts; "
                "or set dpop.enabled = false"
            )
        return self

    def service(self, name: str) -> ServiceConfig | None:
        """The configured service called ``name``."""
        return next((service for service in self.services if service.name == name), None)

    def connected_services(self) -> tuple[ServiceConfig, ...]:
        """The services with ``credentials = "connected"`` (each user's own vendor account)."""
        return tuple(s for s in self.services if s.credentials == "connected")

    def oauth_client_secret(self, name: str) -> Secret | None:
        """The connected service ``name``'s OAuth client secret; ``None`` for a public client
        (``client_auth = "none"``). :class:`SettingsError` naming the variable when the client
        authenticates and no secret was given."""
        found = client_secret(self.service(name), name, self.secret_values.oauth_client_secrets)
        if isinstance(found, str):
            raise SettingsError([(client_secret_variable(name), "", found)])
        return found

    def keyring(self) -> KeyRing:
        """The key-encryption keys; :class:`SettingsError` when none are configured."""
        from agentguard.credentials import KeyRing

        if self.secret_values.kek is None:
            raise SettingsError([("AGENTGUARD_KEK", "", NO_KEK)])
        return KeyRing.from_string(self.secret_values.kek.get_secret_value())

    def dpop_policy(self) -> DPoPPolicy | None:
        """The DPoP policy for the guard, or ``None`` when DPoP is off."""
        if not self.dpop.enabled:
            return None
        from agentguard.dpop._policy import DPoPPolicy

        values = self.secret_values
        options: dict[str, Any] = {}
        if self.dpop.algorithms is not None:
            options["algorithms"] = self.dpop.algorithms
        return DPoPPolicy(
            public_origin=None if self.dpop.trusted_hosts else self.public_origin,
            trusted_hosts=self.dpop.trusted_hosts,
            required=self.dpop.required,
            iat_window=self.dpop.iat_window,
            nonce_step=self.dpop.nonce_step,
            nonce_secret=_bytes(values.dpop_nonce_secret),
            token_nonce_secret=_bytes(values.dpop_token_nonce_secret),
            **options,
        )

    def checkpoint_signer(self) -> Ed25519Signer | None:
        """The checkpoint signing key, when ``audit.checkpoint_dir`` is configured."""
        if self.audit.checkpoint_dir is None:
            return None
        from agentguard.audit._checkpoints import Ed25519Signer

        pem = self.secret_values.checkpoint_key
        if pem is None or self.audit.key_name is None:
            raise SettingsError(
                [("audit", "checkpoint_key_file", "checkpoints need a signing key (0600 file)")]
            )
        try:
            return Ed25519Signer.from_pem(self.audit.key_name, pem.get_secret_value())
        except ValueError:
            raise SettingsError(
                [("audit", "checkpoint_key_file", "not an Ed25519 PKCS#8 private key")]
            ) from None

    def access_ttl(self) -> timedelta:
        """Issued access keys' lifetime."""
        return timedelta(seconds=self.keys.access_ttl)

    def refresh_ttl(self) -> timedelta:
        """Issued refresh keys' lifetime."""
        return timedelta(seconds=self.keys.refresh_ttl)


def _bytes(value: SecretBytes | None) -> bytes | None:
    return value.get_secret_value() if value is not None else None


def _read_secrets(source: Source, settings: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    files: dict[str, tuple[Path | None, tuple[str, str]]] = {
        "kek": (settings.secrets.kek_file, ("secrets", "kek_file")),
        "checkpoint_key": (settings.audit.checkpoint_key_file, ("audit", "checkpoint_key_file")),
        "introspection_secrets": (
            settings.secrets.introspection_secrets_file,
            ("secrets", "introspection_secrets_file"),
        ),
        "dpop_nonce_secret": (
            settings.secrets.dpop_nonce_secret_file,
            ("secrets", "dpop_nonce_secret_file"),
        ),
        "dpop_token_nonce_secret": (
            settings.secrets.dpop_token_nonce_secret_file,
            ("secrets", "dpop_token_nonce_secret_file"),
        ),
        "approval_webhook_secret": (
            settings.secrets.approval_webhook_secret_file,
            ("secrets", "approval_webhook_secret_file"),
        ),
    }
    values: dict[str, Any] = {}
    for name, variable in SECRET_ENVIRONMENT.items():
        path, location = files[name]
        raw: bytes | None = None
        where, field = variable, ""
        if environ.get(variable):
            raw = environ[variable].encode()
        elif path is not None:
            where, field = source.where(location), field_name(location)
            try:
                raw = read_private(path)
            except SourceError as error:
                raise SettingsError([(where, field, f"{error.where}: {error.problem}")]) from None
        if raw is None:
            continue
        try:
            values[name] = decode_secret(name, raw)
        except ValueError as error:
            raise SettingsError([(where, field, str(error))]) from None
    return values


def load_settings(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read ``path`` (optional), apply ``AGENTGUARD_*`` variables, validate, read secrets.

    Raises :class:`SettingsError` naming the field and its ``file:line`` (or variable).
    """
    environ = os.environ if environ is None else environ
    source = Source()
    if path is not None:
        try:
            source = read_toml(Path(path))
            refuse_inline_secrets(source, source.data, ())
            refuse_inline_client_secrets(source)
            relative_to(source, Path(path).parent)
            resolve_secret_paths(source, Path(path).parent)
        except SourceError as error:
            raise SettingsError([(error.where, error.field, error.problem)]) from None
    source.apply_environment(environ)
    level_names(source.data)
    try:
        settings = Settings.model_validate(source.data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            location = tuple(item["loc"])
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append((source.where(location), field_name(location), message))
        raise SettingsError(problems) from None
    files = settings.secrets.oauth_client_secret_files
    found = connect_problems(settings.services, settings.public_origin, files)
    if found:
        raise SettingsError([(source.where(at), field_name(at), why) for at, why in found])
    secrets = _read_secrets(source, settings, environ)
    client_secrets, unreadable = read_client_secrets(source, settings.services, files, environ)
    if unreadable:
        raise SettingsError(unreadable)
    values = SecretValues(**secrets, oauth_client_secrets=client_secrets)
    return settings.model_copy(update={"secret_values": values})
