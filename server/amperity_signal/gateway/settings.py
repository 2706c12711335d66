"""The gateway's own settings: CORS origins per pipeline key, limits and deadlines.

``GatewaySettings.from_settings`` builds them from the service's configuration file
(``[[integrations]]`` ``pipeline_key`` / ``allowed_origins``, ``[server]`` ``admin_token``,
the ``[gateway]`` table's limits, deadlines and ``trusted_proxies``), so one TOML file
configures both processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amperity_signal.config import Settings, load_settings
from amperity_signal.gateway.ratelimit import check_ipv6_prefix
from amperity_signal.listener_tls import TlsFiles

_DEFAULT_PORTS = {"https://": ":443", "http://": ":80"}
DATAFLY_SEND_TIMEOUT = 20.0
"""Seconds datafly.js waits for a ``/v1/batch`` answer before it sends the batch again
(its ``SEND_TIMEOUT_MS``; a test holds the two equal). A batch answered later is delivered
twice: ``batch_deadline`` stays below it."""


def normalise_origin(origin: str) -> str:
    """An origin as browsers send it: lower-case, no trailing slash, no default port.

    Browsers serialise ``https://shop.example.com:443`` without the port, so a configured
    origin that spells it out would otherwise never match.
    """
    normal = origin.strip().rstrip("/").lower()
    for scheme, port in _DEFAULT_PORTS.items():
        if normal.startswith(scheme) and normal.endswith(port):
            return normal.removesuffix(port)
    return normal


@dataclass(frozen=True)
class PipelineSettings:
    """What the gateway knows about one pipeline key.

    Attributes:
        pipeline_key: The key pages are built with (``X-Pipeline-Key``).
        allowed_origins: Origins (``https://shop.example.com``) allowed to call the gateway
            cross-origin with this key, cookies included. Empty means same-origin only.
    """

    pipeline_key: str = field(repr=False)
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewaySettings:
    """Limits, deadlines and CORS for the HTTP gateway.

    Attributes:
        pipelines: One entry per pipeline key; unknown keys still reach the service (which
            answers NOT_FOUND) but never get CORS headers.
        rate_limit_per_second: Sustained requests per second allowed per client IP.
        rate_limit_burst: Requests a client may make at once before the rate applies.
        rate_limit_max_clients: Client IPs tracked at once (``TokenBuckets``).
        rate_limit_ipv6_prefix: The prefix length IPv6 clients are limited by, 48 to 128:
            every address of one /64 (one subscriber's network) shares a bucket
            (``client_keys``). IPv4 clients are limited per address.
        max_body_bytes: Largest body of a single-event route (``/v1/t``, ``/v1/p``, ``/v1/i``).
        max_batch_body_bytes: Largest body of ``/v1/batch``.
        max_batch_events: Most events one ``/v1/batch`` call may carry.
        max_header_bytes: Largest total size of request header names and values.
        rpc_timeout: Deadline, in seconds, of BrowserProfile and health RPCs, and how long
            a Live Events stream waits for the service to take its watch.
        deliver_timeout: Deadline, in seconds, of each Deliver RPC.
        batch_concurrency: Deliver RPCs one batch keeps in flight at once.
        batch_deadline: Seconds from a ``/v1/batch`` request's arrival by which it is
            answered, below ``DATAFLY_SEND_TIMEOUT`` so that datafly.js never gives up on
            a batch the gateway is still delivering (and delivers it twice). Events whose
            turn comes too late are not sent, and answered ``NOT_SENT`` when the body's
            ``accepts`` lists it (datafly.js's), else ``DEADLINE_EXCEEDED``; datafly.js
            sends either again (``ApiEndpoints.batch``). Not in the TOML: it is bound
            to datafly.js's timeout, not to the deployment.
        trusted_proxies: Proxy IPs whose ``X-Forwarded-For`` is believed (uvicorn's
            ``forwarded_allow_ips``); empty means the socket peer is the client.
        admin_token: Bearer token of the operator routes (``/live``); None disables them.
            Never printed.
        redact: Secret strings (the integrations' Amperity keys and pipeline keys, the admin
            token) scrubbed from anything the operator routes show, in case one slipped
            into a record.
        live_replay: Recent delivery records the Live Events page replays on opening.
        service_ca_file: The CA that signed the service's certificate: the standalone
            gateway's channel to the service uses TLS when it is set.
        service_cert_file: The gateway's client certificate, for a service that requires
            one (``[server] tls_client_ca_file``); with ``service_key_file``.
        service_key_file: The private key of ``service_cert_file``.
        grace_period: The stop's grace, in seconds (``[server] grace_period``): the
            gateway drains its keep-alive connections for at most this long, and never
            more than its 5 s keep-alive timeout; the requests in flight have until its end,
            counted from the stop's start, then are cut (``GatewayServer``). 0 closes the
            connections and cuts the requests at once.
        listener_tls: The certificate and key the gateway serves HTTPS with (``[server]
            tls_cert_file`` and ``tls_key_file``); None serves plain HTTP.
        request_read_timeout: Seconds a request's head, and then its body, may take to
            arrive (nginx's ``client_header_timeout``/``client_body_timeout``); past it the
            connection is closed, with a 408 when nothing was answered on it yet. A new
            connection that sends nothing is closed after as long, without an answer.
        max_connections: Connections the gateway holds open at once; one more is answered
            503 ``TOO_MANY_CONNECTIONS`` and closed as it is made. None: half the process's
            open-file limit (``connections.ConnectionCaps``).
        max_connections_per_client: Connections one client (IPv4 address, or IPv6 network
            of ``rate_limit_ipv6_prefix``) holds open at once, a trusted proxy's aside;
            None: an eighth of ``max_connections``, at least 256 (at most it).
    """

    pipelines: tuple[PipelineSettings, ...] = ()
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 40
    rate_limit_max_clients: int = 100_000
    rate_limit_ipv6_prefix: int = 64
    max_body_bytes: int = 32 * 1024
    max_batch_body_bytes: int = 256 * 1024
    max_batch_events: int = 100
    max_header_bytes: int = 16 * 1024
    rpc_timeout: float = 2.0
    deliver_timeout: float = 5.0
    batch_concurrency: int = 8
    batch_deadline: float = 15.0
    trusted_proxies: tuple[str, ...] = ()
    admin_token: str | None = field(default=None, repr=False)
    redact: tuple[str, ...] = field(default=(), repr=False)
    live_replay: int = 50
    service_ca_file: str | None = None
    service_cert_file: str | None = None
    service_key_file: str | None = None
    listener_tls: TlsFiles | None = None
    grace_period: float = 10.0
    request_read_timeout: float = 60.0
    max_connections: int | None = None
    max_connections_per_client: int | None = None

    def __post_init__(self) -> None:
        """Reject limits that would make the gateway refuse everything or nothing."""
        positive = {
            "rate_limit_per_second": self.rate_limit_per_second,
            "rate_limit_burst": self.rate_limit_burst,
            "rate_limit_max_clients": self.rate_limit_max_clients,
            "max_body_bytes": self.max_body_bytes,
            "max_batch_body_bytes": self.max_batch_body_bytes,
            "max_batch_events": self.max_batch_events,
            "max_header_bytes": self.max_header_bytes,
            "rpc_timeout": self.rpc_timeout,
            "deliver_timeout": self.deliver_timeout,
            "batch_concurrency": self.batch_concurrency,
            "batch_deadline": self.batch_deadline,
            "live_replay": self.live_replay,
            "request_read_timeout": self.request_read_timeout,
            "max_connections": self.max_connections,
            "max_connections_per_client": self.max_connections_per_client,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:  # None: a cap derived at start
                raise ValueError(f"GatewaySettings.{name} must be positive, got {value!r}.")
        if not self.batch_deadline < DATAFLY_SEND_TIMEOUT:
            raise ValueError(
                f"GatewaySettings.batch_deadline must be below datafly.js's "
                f"{DATAFLY_SEND_TIMEOUT:g} s, got {self.batch_deadline!r}."
            )
        if not self.grace_period >= 0:
            raise ValueError(
                f"GatewaySettings.grace_period must be 0 or more, got {self.grace_period!r}."
            )
        check_ipv6_prefix(self.rate_limit_ipv6_prefix, "GatewaySettings.rate_limit_ipv6_prefix")
        keys = [p.pipeline_key for p in self.pipelines]
        if len(keys) != len(set(keys)):
            raise ValueError("GatewaySettings.pipelines lists a pipeline_key twice.")

    @property
    def service_tls(self) -> TlsFiles | None:
        """The files of the channel to the service, or None for a plaintext one."""
        if self.service_ca_file is None:
            return None
        return TlsFiles(
            self.service_cert_file, self.service_key_file, self.service_ca_file, side="gateway"
        )

    def allowed_origins(self, pipeline_key: str | None) -> frozenset[str]:
        """The normalised origins allowed for a key; for no key, those of every key.

        A preflight cannot carry the ``X-Pipeline-Key`` value, so it is checked against the
        union; the request that follows is checked against its own key.
        """
        pipelines = [
            p for p in self.pipelines if pipeline_key is None or p.pipeline_key == pipeline_key
        ]
        return frozenset(normalise_origin(o) for p in pipelines for o in p.allowed_origins)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> GatewaySettings:
        """The gateway settings for a validated service configuration.

        Args:
            settings: The service configuration (``amperity_signal.config.Settings``).
            **overrides: Any other ``GatewaySettings`` field, e.g. ``rate_limit_per_second``.
        """
        pipelines = tuple(
            PipelineSettings(i.pipeline_key, tuple(i.allowed_origins))
            for i in settings.integrations
        )
        token = settings.server.admin_token
        values: dict[str, Any] = {
            **settings.gateway.model_dump(),
            "pipelines": pipelines,
            "admin_token": token.get_secret_value() if token is not None else None,
            "redact": tuple(s for s in settings.secret_values() if s),
            "listener_tls": settings.server.tls,
            "grace_period": settings.server.grace_period,
        }
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> GatewaySettings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def settings_from_config(settings: Settings, **overrides: Any) -> GatewaySettings:
    """The gateway settings for a service configuration (``GatewaySettings.from_settings``)."""
    return GatewaySettings.from_settings(settings, **overrides)


def load_gateway_settings(path: str | Path, **overrides: Any) -> GatewaySettings:
    """Read the service's TOML configuration and derive the gateway settings from it.

    Raises:
        ConfigError: When the configuration file has problems (all of them are listed).
    """
    return GatewaySettings.from_settings(load_settings(path), **overrides)
