"""``build_server(settings, deps)``: the one place everything is composed.

Caches, clients, clocks and the metrics registry are constructor arguments collected in
``Deps``, so a test swaps a fake transport or clock instead of patching modules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from redis.exceptions import RedisError

from amperity_signal.amperity import expiry_warnings, jwt_expiry
from amperity_signal.amperity.client import AmperityClient
from amperity_signal.amperity.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from amperity_signal.blueprint import load_blueprint
from amperity_signal.browser import BrowserProfiles, ConsentLedger
from amperity_signal.config import CacheSettings, ServerSettings, Settings
from amperity_signal.delivery import Delivery
from amperity_signal.enrich import CacheStore, Enricher, build_cache
from amperity_signal.listener_tls import tls_warnings
from amperity_signal.logs import integration_id_var, message_id_var, request_id_var
from amperity_signal.metrics import Metrics
from amperity_signal.redis_advice import redis_failure
from amperity_signal.redis_client import redis_client
from amperity_signal.service.health import HealthServicer
from amperity_signal.service.inflight import FAREWELL_SECONDS, CallsInFlight
from amperity_signal.service.inprocess import HandlerRegistry, Handlers, InProcessChannel
from amperity_signal.service.interceptors import ObservedRegistration
from amperity_signal.service.live import LiveEvents
from amperity_signal.service.reflection import SERVICE_NAMES as REFLECTION_SERVICES
from amperity_signal.service.reflection import add_reflection
from amperity_signal.service.registry import Integration, Registry
from amperity_signal.service.servicer import AmperityServicer
from amperity_signal.setup_advice import rate_limit_warnings, setup_warnings, summary
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc

log = logging.getLogger("amperity_signal.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AmperityService"].full_name
WATCH_METHODS = frozenset(
    {
        f"/{health_pb2.DESCRIPTOR.services_by_name['Health'].full_name}/Watch",
        f"/{SERVICE_NAME}/WatchDeliveries",
        # grpcurl and IDEs keep a reflection stream open between their questions.
        *(f"/{name}/ServerReflectionInfo" for name in REFLECTION_SERVICES),
    }
)
"""The watches: streams that carry no work, only tell their caller what happens (the
health status, Live Events) or answer questions about the service (reflection). At a
stop, one still open ``FAREWELL_SECONDS`` in (its caller stopped reading, or keeps an idle
reflection stream) is cancelled once the calls doing work are answered."""
PENDING_CALLS_LIMIT = 10_000
"""Calls gRPC core holds for the event loop to pick up before it starts refusing them.

Core's defaults (refusals at random past 1,000 pending, all past 3,000) answer a burst on
one channel with a bare CANCELLED, which no client retries: a pipeline flushing a backlog
lost events (4,000 calls at once on one channel: 1,423 cancelled; none at this limit).
Each waiting call holds ~12 KB (measured with 1.5 KB requests: 10,000 took 111 MB,
30,000 took 337 MB), so this bounds the queue at ~120 MB and 3-8 s of work at this
service's throughput, within callers' deadlines; past it core cancels again.
"""
CONSENT_WRITE_SECONDS = 1.5
"""At a stop, the least time the held consent states get for their try, grace or not:
a withdrawal the cache did not take is lost when the process ends (a Redis that does not
answer costs one timeout, 0.25 s, as the backend then skips the others). Past 1 s, so that
a try the backend's skip window refused (Redis back just before the stop) is made again
once the window ends (``PendingConsent.close``)."""


@dataclass
class Deps:
    """Collaborators a test may replace; each defaults to the production one."""

    metrics: Metrics = field(default_factory=Metrics)
    transport: httpx.AsyncBaseTransport | None = None
    cache: CacheStore | None = None
    limiter: RateLimiter | None = None
    clock: Callable[[], float] = time.monotonic


@dataclass
class Service:
    """A built, not yet started, server with handles on its parts."""

    server: grpc.aio.Server
    health: HealthServicer
    registry: Registry
    live: LiveEvents
    metrics: Metrics
    cache: CacheStore
    port: int
    handlers: Handlers = field(default_factory=dict)
    # The Redis URL may hold its password: kept out of reprs, as CacheSettings keeps it.
    redis_url: str | None = field(default=None, repr=False)
    servicer: AmperityServicer | None = None
    calls: CallsInFlight = field(default_factory=CallsInFlight)
    consent: ConsentLedger | None = None
    local_socket: str | None = None
    _stopping: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    def listen(
        self,
        settings: ServerSettings,
        *,
        local_socket: str | None = None,
        worker_socket: str | None = None,
    ) -> None:
        """Bind ``settings.grpc_address``: with TLS when configured, else plaintext.

        ``local_socket`` (a path) also binds a Unix socket that only this machine's
        connections reach (gRPC's local credentials): the in-process channel's streaming
        calls go there when the port speaks TLS, or mutual TLS this process holds no
        client certificate for. Keep it in a directory only the service's user can enter.
        ``worker_socket`` binds such a socket with or without TLS: under ``serve
        --workers``, where every worker's gateway watches this worker's Live Events.
        """
        if worker_socket is not None:
            local = grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
            self.server.add_secure_port(f"unix:{worker_socket}", local)
        tls = settings.tls
        if tls is None:
            self.port = self.server.add_insecure_port(settings.grpc_address)
            return
        self.port = self.server.add_secure_port(settings.grpc_address, tls.server_credentials())
        if local_socket is not None:
            local = grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
            self.server.add_secure_port(f"unix:{local_socket}", local)
            self.local_socket = local_socket

    def in_process_channel(self) -> InProcessChannel:
        """A channel for the generated stub that calls this service without a socket.

        Streaming calls fall back to the service's own port (started by then), or to its
        local socket when it has one (``listen``).
        """
        local = self.local_socket
        return InProcessChannel(
            self.handlers,
            fallback_target=f"unix:{local}" if local else f"127.0.0.1:{self.port}",
            fallback_credentials=(
                grpc.local_channel_credentials(grpc.LocalConnectionType.UDS) if local else None
            ),
            context_vars=(request_id_var, integration_id_var, message_id_var),
        )

    async def start(self) -> None:
        """Start serving and report SERVING for the overall and the named service."""
        if self.redis_url:
            await probe_redis(self.redis_url)
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop_listening(self, grace: float) -> asyncio.Future[None]:
        """Refuse new connections from now on; the calls already taken have ``grace`` to finish.

        gRPC core closes its listeners as soon as its stop begins, and the calls in flight
        go on until they end or ``grace`` is over; ``stop`` then waits for them (its own
        ``grace`` no longer counts). The embedded gateway calls the servicer in process,
        not through the port: ``serve`` closes the port first, so that new callers reach
        the new process sharing it (a handoff) or are refused, while the gateway drains.
        Returns the gRPC stop under way.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.server.stop(grace))
        return self._stopping

    async def stop(self, grace: float) -> None:
        """Flip health to NOT_SERVING first, then let in-flight RPCs finish within ``grace``.

        Streams and watches, which never finish by themselves, stop taking events and end
        (UNAVAILABLE) once the events they took are answered, rather than hold the whole
        grace period and be cancelled at its end; health watches end once they have sent
        NOT_SERVING. A watch whose caller does not take its last messages is cancelled
        (see ``_cancel_stuck_watches``); a DeliverStream whose caller does not take its
        answers holds the stop for the grace period, as any call doing work does.
        Then the consent states the cache did not take are tried (again after the cache
        backend's skip window if refused), in what is left of ``grace`` (at least
        ``CONSENT_WRITE_SECONDS``), and those left are logged.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self.health.enter_graceful_shutdown()
        self.health.end_watches()
        if self.servicer is not None:
            self.servicer.stop_streams()
        stopping = self.stop_listening(grace)
        if grace > 0:  # with none, the server cancels every call at once anyway
            await self._cancel_stuck_watches(stopping, min(FAREWELL_SECONDS, grace))
        await stopping
        if self.consent is not None:
            await self.consent.close(max(deadline, loop.time() + CONSENT_WRITE_SECONDS))
        await self.registry.aclose()
        await self.cache.close()

    async def _cancel_stuck_watches(self, stopping: asyncio.Future[None], farewell: float) -> None:
        """Cancel the watches still open after ``farewell``, once no other call is.

        Such a watch's caller has stopped reading: gRPC flow control holds its last
        messages (a health watch's NOT_SERVING, a Live Events watch's records), and the
        watch would hold the stop for the whole grace period. grpc.aio cannot cancel one
        call, only every call left: so the real calls are answered first (or cut at the
        grace's end, as ever), then what is left, only such watches, ends.
        """
        await asyncio.wait({stopping}, timeout=farewell)
        if stopping.done() or not self.calls.watches:
            return
        log.info(
            "watches whose callers stopped reading end once the calls in flight are done",
            extra={"watches": self.calls.watches, "calls": self.calls.count},
        )
        only_watches = asyncio.ensure_future(self.calls.wait_until(self.calls.only_watches))
        try:
            await asyncio.wait({stopping, only_watches}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            only_watches.cancel()
        if not stopping.done():
            await self.server.stop(None)  # cancels every call left: the stuck watches


def build_server(
    settings: Settings,
    deps: Deps | None = None,
    *,
    bind: bool = True,
    reuse_port: bool = False,
    report: bool = True,
) -> Service:
    """Compose the gRPC server for ``settings``; bind it to ``[server] grpc_address``.

    ``reuse_port`` (SO_REUSEPORT) is for ``--workers``: several processes share the port.
    ``report`` logs the configuration's warnings and routes (``report_configuration``) and,
    at ``start``, whether Redis answers (``probe_redis``); a ``--workers`` worker passes
    False, its parent having logged them once for all.
    """
    deps = deps or Deps()
    cache = deps.cache or build_cache(settings.cache, deps.metrics)
    limiter = deps.limiter or build_rate_limiter(settings.cache, processes=settings.server.workers)
    secrets = settings.secret_values()
    registry = Registry(
        [
            Integration(
                settings=integration,
                blueprint=load_blueprint(integration.vertical, integration.blueprint),
                client=AmperityClient(
                    integration,
                    limiter=limiter,
                    metrics=deps.metrics,
                    transport=deps.transport,
                    proxies=settings.proxies,
                    trusted_certificates=settings.trusted_certificates,
                    redact=secrets,
                ),
            )
            for integration in settings.integrations
        ],
        secrets,
    )
    set_key_expiry(settings, deps.metrics)
    if report:
        report_configuration(settings, proxies=deps.transport is None)
    clients = {i.id: i.client for i in registry}
    enricher = Enricher(
        settings.cache,
        client_for=clients.get,
        cache=cache,
        metrics=deps.metrics,
        clock=deps.clock,
    )
    consent = ConsentLedger(cache, metrics=deps.metrics)
    live = LiveEvents()
    servicer = AmperityServicer(
        registry=registry,
        max_message_bytes=settings.server.max_message_bytes,
        delivery=Delivery(
            enricher=enricher, consent=consent, live=live, metrics=deps.metrics, clock=deps.clock
        ),
        enricher=enricher,
        browser=BrowserProfiles(enricher, consent),
        live=live,
        clock=deps.clock,
        redact=secrets,
    )
    options = [
        # gRPC's own ceiling sits well above the configured limit, so that an oversized
        # event reaches validation and gets INVALID_ARGUMENT naming it (see validation.py).
        ("grpc.max_receive_message_length", max(4 * settings.server.max_message_bytes, 1 << 22)),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.server.max_pending_requests", PENDING_CALLS_LIMIT),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS_LIMIT),
    ]
    server = grpc.aio.server(options=options)
    health_servicer = HealthServicer()
    handlers = HandlerRegistry()
    # The generated add_*_to_server functions only call the registration methods, which
    # ObservedRegistration has: it gives the server and the in-process channel's registry
    # the same observed handlers, so the channel serves exactly what the server does.
    calls = CallsInFlight(WATCH_METHODS)
    target: Any = ObservedRegistration(deps.metrics, server, handlers, calls=calls)
    pb_grpc.add_AmperityServiceServicer_to_server(servicer, target)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, target)
    add_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), target
    )
    service = Service(
        server=server,
        health=health_servicer,
        registry=registry,
        live=live,
        metrics=deps.metrics,
        cache=cache,
        port=0,
        handlers=handlers.handlers,
        servicer=servicer,
        calls=calls,
        consent=consent,
        redis_url=(
            settings.cache.redis_url
            if report and settings.cache.backend == "redis" and not (deps.cache and deps.limiter)
            else None
        ),
    )
    if bind:
        service.listen(settings.server)
    return service


def set_key_expiry(settings: Settings, metrics: Metrics) -> None:
    """Set the days-to-expiry gauge of every key (in each process: its own metrics)."""
    for integration in settings.integrations:
        keys = {"api_key": integration.api_key, "profile_api_key": integration.profile_api_key}
        for name, secret in keys.items():
            expires = jwt_expiry(secret.get_secret_value()) if secret else None
            if expires is not None:
                metrics.key_expires(integration.id, name, expires)


def report_configuration(settings: Settings, *, proxies: bool = True) -> None:
    """Log what the configuration warrants at start, once per service (not per worker).

    What each integration will do (``setup_advice.summary``, at info), keys near expiry, setup
    advice and the listeners' certificate (expiry, key file open
    to other users) as warnings, then (with ``proxies``; off when a test
    transport replaces the network) the CA certificates and proxy route of Amperity's calls.
    Nothing here is checked again later: the expiry gauge (``set_key_expiry``) is what is
    kept current, at every scrape.
    """
    now = datetime.now(UTC)
    for integration in settings.integrations:
        log.info("integration %s", summary(integration), extra={"integration_id": integration.id})
        warnings = expiry_warnings(integration, now) + setup_warnings(integration)
        for warning in warnings + rate_limit_warnings(settings, integration):
            log.warning(warning, extra={"integration_id": integration.id})
    if settings.server.tls is not None:
        for warning in tls_warnings("server", settings.server.tls, now):
            log.warning(warning)
    if proxies:
        report_proxies(settings)


def report_proxies(settings: Settings) -> None:
    """Log, when the environment sets them, the proxies and CA certificates Amperity's calls use."""
    if settings.trusted_certificates.variable is not None:
        log.info(
            "TLS certificates are checked against %s", settings.trusted_certificates.describe()
        )
    proxies = settings.proxies
    if not proxies:
        return
    for warning in proxies.warnings:
        log.warning(warning)
    for integration in settings.integrations:
        url = httpx.URL(integration.base_url)
        proxy = proxies.proxy_for(url.scheme, url.host, url.port)
        route = (
            f"through the proxy {proxy.shown} ({proxy.variable})"
            if proxy is not None
            else "directly (NO_PROXY)"
        )
        log.info(
            "integration %s reaches %s %s",
            integration.id,
            integration.base_url,
            route,
            extra={"integration_id": integration.id},
        )


REDIS_PROBE_SECONDS = 1.0


async def probe_redis(url: str) -> bool:
    """Ping the configured Redis once at start; log what to check when it does not answer.

    The service starts either way (enrichment runs without a cache and the rate limit is
    kept per process until Redis answers), but the operator hears of a wrong password or
    a stopped server now rather than at the first event.
    """
    client = Redis.from_url(
        url, socket_timeout=REDIS_PROBE_SECONDS, socket_connect_timeout=REDIS_PROBE_SECONDS
    )
    try:
        await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "Redis does not answer at start: %s; serving without it until it does",
            redis_failure(exc),
        )
        return False
    finally:
        await client.aclose()
    return True


def build_rate_limiter(cache: CacheSettings, *, processes: int = 1) -> RateLimiter:
    """The per-tenant limiter: shared through Redis when the cache is, else in-process.

    In process, and through Redis while Redis is down, each of the ``processes`` workers
    keeps its share of every tenant's limit.
    """
    if cache.backend == "redis":
        return RedisRateLimiter(redis_client(cache.redis_url, timeout=0.25), processes=processes)
    return MemoryRateLimiter(processes=processes)
