"""Configuration: one TOML file, validated once at start, then passed in explicitly.

Field names under ``[[integrations]]`` are the spec's own (``tenant_subdomain``,
``event_stream_id``, ``linking_keys``, ...). A secret (``api_key``, ``profile_api_key``,
``pipeline_key``, ``admin_token``, and ``redis_url``, which may carry the Redis password)
may be written as ``env:NAME`` (``config_checks.ENV_FIELDS``); any other field so written
is refused, never taken as the text itself.
Validation collects every problem at once, each with its fix (see ``load_settings``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    Strict,
    StrictBool,
    StrictInt,
    ValidationError,
    field_serializer,
    field_validator,
)

from amperity_signal.blueprint.paths import compile_event_path
from amperity_signal.blueprint.spec import BlueprintOverrides
from amperity_signal.config_checks import (
    IDENTITY_SOURCE_FIX,
    check_raw,
    configured_secrets,
    identity_field,
    resolve_secrets,
)
from amperity_signal.config_messages import translate
from amperity_signal.config_values import (
    LogLevel,
    csv_items,
    jwt_private_parts,
    quoted,
    unquotable,
    withheld,
)
from amperity_signal.errors import ConfigError, ConfigProblem
from amperity_signal.limits import (
    INTEGRATION_ID,
    MAX_GATEWAY_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_INTEGRATION_ID,
    MAX_LIVE_REPLAY,
    MAX_MESSAGE_BYTES,
    MAX_PIPELINE_KEY,
    MAX_TTL_SECONDS,
    MAX_WAIT_SECONDS,
    PIPELINE_KEY,
)
from amperity_signal.listener_tls import TlsFiles
from amperity_signal.proxies import ProxyRules
from amperity_signal.tenant_hosts import tenant_base_url
from amperity_signal.trust import TrustedCertificates

# What a dump (``model_dump``) shows of a secret, as pydantic's SecretStr does.
_MASKED = "**********"
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ID_START = re.compile(r"[A-Za-z0-9]")
_ID_CHAR = re.compile(r"[A-Za-z0-9._-]")

# TOML has real booleans, integers and floats: "yes", "10" or true where a number goes is
# a mistake to name, not to coerce (pydantic's lax mode reads "yes" as true, true as 1 and
# 2.0 as 2). A float field still takes an integer: grace_period = 10 is ten seconds.
Number = Annotated[float, Strict()]


class _Strict(BaseModel):
    # TOML allows inf and nan; no duration or limit here means anything with them (an
    # infinite TTL overflows Redis's PX, an infinite grace never ends a shutdown).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LinkingKey(_Strict):
    """One entry of ``linking_keys``: where the value comes from and the key it matches."""

    source: Literal["canonical_id", "anonymous_id", "user_id", "email", "phone"]
    key: str = Field(min_length=1)
    hash: Literal["sha256", "sha256_upper"] | None = None

    @field_validator("key")
    @classmethod
    def _exact_name(cls, key: str) -> str:
        """Amperity matches the key's name exactly: ``" email_sha256"`` would always 404."""
        if not key.strip():
            raise ValueError("is blank; write the linking key's name, e.g. email_sha256")
        if key != key.strip():
            raise ValueError(
                "has spaces around it, and Amperity matches key names exactly, so every "
                "lookup would 404; remove the spaces"
            )
        return key


class ContextMapping(_Strict):
    """One personalisation context mapping: an event path sent as a query parameter."""

    source: str = Field(min_length=1)
    target: str = Field(pattern=_PARAM_NAME.pattern)

    @field_validator("source")
    @classmethod
    def _source_is_a_path(cls, source: str) -> str:
        """A path into the event, in the blueprint's syntax.

        Resolving ``a..b`` raises, on every resolved event; a path starting with no part of
        the event (``propertes.category``) finds nothing, and personalisation never applies.
        ``check-config`` tells the second with a guess (``config_checks``). An identifier
        (``traits.email``) would go into profile URLs: refused, as ``check-config`` does.
        """
        compile_event_path(source)
        if what := identity_field(source):
            raise ValueError(
                f"{quoted(source)} is {what}, an identifier of the visitor, which would go "
                f"into the URL of every profile call; {IDENTITY_SOURCE_FIX}"
            )
        return source

    @field_validator("target")
    @classmethod
    def _not_reserved(cls, target: str) -> str:
        """``enrich`` is the Profile API's own parameter: the GET would fail for every event."""
        if target == "enrich":
            raise ValueError(
                "is 'enrich', a name the Profile API call already uses (enrich=true); rename "
                "the target to the name your Amperity attribute logic reads"
            )
        return target


class ServerSettings(_Strict):
    """The ``[server]`` table: where to listen and how to shut down."""

    grpc_address: str = "127.0.0.1:50051"
    http_address: str = "127.0.0.1:8080"
    workers: StrictInt = Field(default=1, ge=1, le=64)
    grace_period: Number = Field(default=10.0, ge=0, le=MAX_WAIT_SECONDS)
    admin_token: SecretStr | None = None
    # gRPC's own limit is 4 times this, a C int: see limits.MAX_MESSAGE_BYTES.
    max_message_bytes: StrictInt = Field(default=1_048_576, ge=65_536, le=MAX_MESSAGE_BYTES)
    # The least severe level logged; ``--log-level`` overrides it. Secrets are scrubbed
    # from every line at every level, debug included.
    log_level: LogLevel = "info"
    # PEM files: with the certificate and its key both listeners speak TLS; with the CA
    # too, gRPC callers must show a certificate it signed (listener_tls.py checks them).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None

    @property
    def tls(self) -> TlsFiles | None:
        """The listeners' TLS files, or None when they serve plaintext."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @field_validator("admin_token")
    @classmethod
    def _a_token_a_header_carries(cls, token: SecretStr | None) -> SecretStr | None:
        """Visible ASCII, as ``api_key``: it arrives as ``Authorization: Bearer`` or ``?token=``.

        A token with a space or a line break (a paste) could never be presented whole, and
        a browser's address bar trims it. Told by position, never quoted: it is a secret.
        A blank or short token is told by ``config_checks``.
        """
        value = token.get_secret_value() if token is not None else ""
        at = next((i for i, char in enumerate(value) if not "\x21" <= char <= "\x7e"), None)
        if at is None or not value.strip():
            return token
        raise ValueError(
            f"holds a space, a control character or a non-ASCII character at position {at}, "
            "which Authorization: Bearer cannot carry"
        )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        """``INFO`` and ``info`` are one level: Python's logging writes them upper case."""
        return value.lower() if isinstance(value, str) else value


class CacheSettings(_Strict):
    """The ``[cache]`` table: backend and every TTL, in seconds."""

    backend: Literal["memory", "redis"] = "memory"
    # Out of the repr: the URL may carry the Redis password (redis://:PASSWORD@host).
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)
    max_entries: StrictInt = Field(default=200_000, ge=100)
    # The memory backend's byte bound (keys, values and ~300 bytes per entry, see
    # stores.MemoryStore): with big profiles 200,000 entries could hold gigabytes. 256 MiB
    # keeps the default's worst case at ~340 MB of RSS (docs/benchmarks.md). At least 1 MiB
    # (the most read of an Amperity answer): a bound under one big profile caches none.
    max_bytes: StrictInt = Field(default=256 * 1024 * 1024, ge=1_048_576)
    # At most ten years (limits.MAX_TTL_SECONDS): longer is forever, and past Redis's range.
    resolution_ttl: Number = Field(default=86_400, gt=0, le=MAX_TTL_SECONDS)
    attribute_ttl: Number = Field(default=60, gt=0, le=MAX_TTL_SECONDS)
    personalized_ttl: Number = Field(default=120, gt=0, le=MAX_TTL_SECONDS)
    not_found_ttl: Number = Field(default=300, gt=0, le=MAX_TTL_SECONDS)
    error_ttl: Number = Field(default=30, gt=0, le=MAX_TTL_SECONDS)
    identity_ttl: Number = Field(default=30 * 86_400, gt=0, le=MAX_TTL_SECONDS)
    stale_ttl: Number = Field(default=3_600, ge=0, le=MAX_TTL_SECONDS)
    jitter: Number = Field(default=0.1, ge=0, le=0.5)
    breaker_failures: StrictInt = Field(default=5, ge=1)
    breaker_cooldown: Number = Field(default=30, gt=0, le=MAX_WAIT_SECONDS)

    @field_serializer("redis_url")
    def _password_masked(self, url: str) -> str:
        """The URL with its password masked in a dump; read ``redis_url`` for the real one.

        Out of the repr already, but ``model_dump()`` (or ``model_dump_json()``) of the
        settings carried the password, in the user info or a ``?password=`` parameter.
        """
        try:
            parts = urlsplit(url)
            has_password = parts.password is not None
        except ValueError:  # refused at load; a directly built CacheSettings
            return _MASKED
        if has_password:  # user:password@host: the user kept, the password masked
            user_info, _, host = parts.netloc.rpartition("@")
            masked = f"{user_info.partition(':')[0]}:{_MASKED}@{host}"
            url = url.replace(f"//{parts.netloc}", f"//{masked}", 1)
        if parts.query:
            pairs = [pair.partition("=") for pair in parts.query.split("&")]
            query = "&".join(
                f"{name}={_MASKED}" if name == "password" else f"{name}{sep}{value}"
                for name, sep, value in pairs
            )
            url = url.replace(f"?{parts.query}", f"?{query}", 1)
        return url


class GatewayTable(_Strict):
    """The ``[gateway]`` table: the HTTP gateway's per-client limits and deadlines.

    The defaults are ``GatewaySettings``'s (a test keeps them equal). Behind a load balancer
    or CDN every request arrives from the proxy's address, so the per-client rate limit
    applies to all visitors together unless ``trusted_proxies`` names the proxies whose
    ``X-Forwarded-For`` carries the visitor's address.
    """

    rate_limit_per_second: Number = Field(default=20.0, gt=0)
    rate_limit_burst: StrictInt = Field(default=40, ge=1)
    rate_limit_max_clients: StrictInt = Field(default=100_000, ge=1)
    rate_limit_ipv6_prefix: StrictInt = Field(default=64, ge=48, le=128)
    max_body_bytes: StrictInt = Field(default=32 * 1024, ge=1_024, le=MAX_GATEWAY_BODY_BYTES)
    max_batch_body_bytes: StrictInt = Field(default=256 * 1024, ge=1_024, le=MAX_GATEWAY_BODY_BYTES)
    max_batch_events: StrictInt = Field(default=100, ge=1)
    max_header_bytes: StrictInt = Field(default=16 * 1024, ge=1_024, le=MAX_HEADER_BYTES)
    rpc_timeout: Number = Field(default=2.0, gt=0, le=MAX_WAIT_SECONDS)
    deliver_timeout: Number = Field(default=5.0, gt=0, le=MAX_WAIT_SECONDS)
    batch_concurrency: StrictInt = Field(default=8, ge=1)
    trusted_proxies: tuple[str, ...] = ()
    live_replay: StrictInt = Field(default=50, ge=1, le=MAX_LIVE_REPLAY)
    request_read_timeout: Number = Field(default=60.0, gt=0, le=MAX_WAIT_SECONDS)
    # Unset: derived from the process's open-file limit (gateway/connections.py).
    max_connections: StrictInt | None = Field(default=None, ge=1)
    max_connections_per_client: StrictInt | None = Field(default=None, ge=1)
    # How the standalone `gateway` reaches a service on TLS: the CA that signed its
    # certificate and, for mutual TLS, the gateway's own certificate and key.
    service_ca_file: str | None = None
    service_cert_file: str | None = None
    service_key_file: str | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in proxies:
            if proxy == "*":
                continue
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{quoted(proxy)} is not an IP address or network; write the proxy's address "
                    "(10.0.0.5), its network (10.0.0.0/8), or '*' to trust every peer"
                ) from None
        return proxies


class IntegrationSettings(_Strict):
    """One installed Amperity integration (one ``[[integrations]]`` table)."""

    id: str = Field(min_length=1)
    # A key, like api_key: kept out of reprs, and masked in dumps (read it as an attribute).
    pipeline_key: str = Field(min_length=1, repr=False)
    vertical: str = "retail"
    tenant_subdomain: str
    tenant_id: str = Field(min_length=1)
    api_key: SecretStr
    event_stream_id: str
    source_value: str
    profile_api_key: SecretStr | None = None
    profile_collection_id: str | None = None
    linking_keys: tuple[LinkingKey, ...] = ()
    browser_attribute_allowlist: tuple[str, ...] = ()
    browser_consent: str | None = None
    personalisation_enabled: StrictBool = False
    personalisation_context_mappings: tuple[ContextMapping, ...] = ()
    api_base_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    rate_limit_per_second: StrictInt = Field(default=500, ge=1, le=10_000)
    request_timeout: Number = Field(default=10.0, gt=0, le=MAX_WAIT_SECONDS)
    max_retries: StrictInt = Field(default=5, ge=0, le=20)
    blueprint: BlueprintOverrides = Field(default_factory=BlueprintOverrides)

    @field_serializer("pipeline_key")
    def _masked(self, _: str) -> str:
        return _MASKED

    @field_validator("id")
    @classmethod
    def _an_identifier(cls, integration_id: str) -> str:
        """An id of ``limits.INTEGRATION_ID``: it goes into calls, metric labels, logs, URLs.

        The fault is told by length or by the one character at fault: a 5,000-character id
        is not quoted back, and a key pasted here is not either.
        """
        if INTEGRATION_ID.fullmatch(integration_id):
            return integration_id
        if len(integration_id) > MAX_INTEGRATION_ID:
            raise ValueError(
                f"is {len(integration_id)} characters long, more than the {MAX_INTEGRATION_ID} "
                "an integration id may have"
            )
        if not _ID_START.fullmatch(integration_id[0]):
            raise ValueError(f"starts with {integration_id[0]!r}, not an ASCII letter or digit")
        at, char = next((i, c) for i, c in enumerate(integration_id) if not _ID_CHAR.fullmatch(c))
        raise ValueError(f"holds {char!r} at position {at}, which an integration id may not hold")

    @field_validator("pipeline_key")
    @classmethod
    def _a_key_the_gateway_takes(cls, key: str) -> str:
        """A key the gateway takes (``limits.PIPELINE_KEY``): it refuses others every time.

        The fault is told by length or position, never quoted: the key is a secret.
        """
        if PIPELINE_KEY.fullmatch(key):
            return key
        refused = "so the gateway would refuse every request made with it"
        if len(key) > MAX_PIPELINE_KEY:
            raise ValueError(
                f"is {len(key)} characters long, more than the {MAX_PIPELINE_KEY} a pipeline "
                f"key may have, {refused}"
            )
        at = next(i for i, char in enumerate(key) if not "\x21" <= char <= "\x7e")
        raise ValueError(
            f"holds a space, a control character or a non-ASCII character at position {at}, "
            f"{refused}"
        )

    @field_validator("linking_keys", "personalisation_context_mappings", mode="before")
    @classmethod
    def _json_textarea(cls, value: Any) -> Any:
        """Accept the spec's JSON-in-a-string textareas as well as native TOML arrays."""
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg} at char {exc.pos})") from exc
            except RecursionError:
                raise ValueError("is not valid JSON (nested too deeply to read)") from None
        return value

    @field_validator("browser_attribute_allowlist", "allowed_origins", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        """Accept a comma-separated string (the spec's CSV field) or an array."""
        return csv_items(value)

    @property
    def base_url(self) -> str:
        """The Amperity base URL: the override, else ``https://{tenant_subdomain}.amperity.com``."""
        if self.api_base_url:
            return self.api_base_url.rstrip("/")
        return tenant_base_url(self.tenant_subdomain)

    @property
    def profile_enabled(self) -> bool:
        """Whether profile enrichment is configured (key, collection and linking keys)."""
        return bool(self.profile_api_key and self.profile_collection_id and self.linking_keys)

    @property
    def enrichment_missing(self) -> tuple[str, ...]:
        """The fields profile enrichment still needs (empty when it is configured)."""
        present = {
            "profile_api_key": bool(self.profile_api_key),
            "profile_collection_id": bool(self.profile_collection_id),
            "linking_keys": bool(self.linking_keys),
        }
        return tuple(name for name, set_ in present.items() if not set_)

    @property
    def enrichment_half_configured(self) -> bool:
        """Some but not all of the three enrichment fields set: meant, and still off."""
        return 0 < len(self.enrichment_missing) < 3


class Settings(_Strict):
    """The whole configuration file."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    gateway: GatewayTable = Field(default_factory=GatewayTable)
    integrations: tuple[IntegrationSettings, ...] = ()
    # From the environment (HTTPS_PROXY, NO_PROXY...), not the file: see ``proxies``.
    _proxies: ProxyRules = PrivateAttr(default_factory=ProxyRules)
    # From the environment too (SSL_CERT_FILE, SSL_CERT_DIR): see ``trusted_certificates``.
    _trusted_certificates: TrustedCertificates = PrivateAttr(default_factory=TrustedCertificates)

    @property
    def proxies(self) -> ProxyRules:
        """The outbound proxies the environment configured (``proxies.py``); empty if none."""
        return self._proxies

    @property
    def trusted_certificates(self) -> TrustedCertificates:
        """The CA certificates TLS is checked against (``trust.py``); certifi's by default."""
        return self._trusted_certificates

    def integration(self, integration_id: str) -> IntegrationSettings | None:
        """The integration with this id, or None."""
        return next((i for i in self.integrations if i.id == integration_id), None)

    def secret_values(self) -> list[str]:
        """Every configured secret's value, for the log formatter and Live Events to scrub.

        An API key is listed with its JWT payload and signature too: a line may hold one
        alone (an echo, a cut). Its header segment is the same in every token: not listed.
        Pipeline keys are listed: each lets its holder send events into an integration.
        """
        keys = [i.api_key.get_secret_value() for i in self.integrations]
        keys += [
            i.profile_api_key.get_secret_value() for i in self.integrations if i.profile_api_key
        ]
        values = [*keys, *(part for key in keys for part in jwt_private_parts(key))]
        values += [i.pipeline_key for i in self.integrations]
        if self.server.admin_token:
            values.append(self.server.admin_token.get_secret_value())
        values += redis_passwords(self.cache.redis_url)
        values += self._proxies.secrets
        return values


# Each table's field names: resolve_secrets refuses env:NAME in one that is no secret.
_FIELDS = {
    "server": tuple(ServerSettings.model_fields),
    "cache": tuple(CacheSettings.model_fields),
    "gateway": tuple(GatewayTable.model_fields),
    "integrations": tuple(IntegrationSettings.model_fields),
}


def redis_passwords(url: str) -> list[str]:
    """The password of a Redis URL in every form it may be seen in.

    As written and decoded (redis-py decodes %40 to @ before sending it), from the user
    info or from a ``?password=`` query parameter, which redis-py reads too. A Redis
    password is chosen on the Redis side, so a short one is not refused; the log scrubber
    ignores values under 8 characters, so the forms that carry the password with its URL
    (the whole URL, ``user:password@host:port``, ``password=...``) are listed too: those
    are long whatever the password's length.
    """
    try:
        parts = urlsplit(url)
        # The query's value as the URL has it (``%2B``, ``+``) too: a message may quote it.
        pairs = (pair.partition("=") for pair in parts.query.split("&"))
        raw_query = [value for name, _, value in pairs if name == "password"]
        written = [parts.password or "", *raw_query, *parse_qs(parts.query).get("password", [])]
    except ValueError:  # refused at load (cache.redis_url); a directly built Settings
        return []
    passwords = [
        form for value in written if value for form in dict.fromkeys((value, unquote(value)))
    ]
    if not passwords:
        return []
    contexts = [url, parts.netloc] if parts.password else [url]
    contexts += [f"password={form}" for form in passwords if f"password={form}" in url]
    return list(dict.fromkeys(passwords + contexts))


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, resolve ``env:`` secrets in, and validate a TOML configuration file.

    Raises:
        ConfigError: Listing every problem found, each with its fix.
    """
    if not str(path):
        # Path("") is the current directory, which would be reported as "." below.
        raise ConfigError(
            [
                ConfigProblem(
                    "--config",
                    "is empty.",
                    "pass --config PATH to the TOML file, or set AMPERITY_SIGNAL_CONFIG to it.",
                )
            ]
        )
    file = Path(path)
    try:
        # utf-8-sig: a byte order mark (Windows editors write one) would be a TOML error
        # at line 1, column 1, where nothing is visible to fix.
        raw = tomllib.loads(file.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(
            [ConfigProblem(str(file), "the file does not exist.", "pass --config PATH.")]
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [
                ConfigProblem(
                    str(file),
                    "is a directory.",
                    "pass the TOML file, e.g. --config DIR/amperity-signal.toml.",
                )
            ]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    str(file),
                    f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}).",
                    "pass the TOML configuration file; if it is one, save it as UTF-8.",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    str(file),
                    f"cannot be read ({exc.strerror or exc}).",
                    "make it readable by the user running amperity-signal.",
                )
            ]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    str(file),
                    f"is not valid TOML: {exc}.",
                    "fix the syntax at that place; text values go in double "
                    'quotes, e.g. tenant_id = "acme".',
                )
            ]
        ) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(
            [
                ConfigProblem(
                    str(file),
                    "is not valid TOML: arrays or tables are nested too deeply to read.",
                    "nest values a few levels at most, as the example configuration does.",
                )
            ]
        ) from None
    try:
        return settings_from_dict(raw, os.environ if environ is None else environ)
    except ConfigError as error:
        raise ConfigError(error.problems, source=str(file)) from None


def settings_from_dict(raw: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate an already-parsed configuration; see ``load_settings``.

    The outbound proxies come from ``environ`` too (``HTTPS_PROXY``, ``NO_PROXY``...), and
    so do the CA certificates (``SSL_CERT_FILE``, ``SSL_CERT_DIR``).
    """
    proxies = ProxyRules.from_environ(environ)
    trusted_certificates = TrustedCertificates.from_environ(environ)
    problems: list[ConfigProblem] = [*proxies.problems, *trusted_certificates.problems]
    resolved = resolve_secrets(raw, environ, problems, _FIELDS)
    settings: Settings | None = None
    # A key pasted into another field (a pipeline key in tenant_id) is never quoted back.
    with unquotable(configured_secrets(resolved)):
        problems.extend(check_raw(resolved, frozenset(p.location for p in problems)))
        try:
            settings = Settings.model_validate(resolved)
        except ValidationError as exc:
            problems.extend(translate(exc, {p.location for p in problems}, Settings))
        problems = [withheld(problem) for problem in problems]
    if problems or settings is None:
        # Several checks can describe one mistake; list each location/problem once.
        unique = list(dict.fromkeys(problems))
        raise ConfigError(unique)
    settings._proxies = proxies
    settings._trusted_certificates = trusted_certificates
    return settings
