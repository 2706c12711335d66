"""Running the service as a process: one event loop per core, graceful on SIGTERM/SIGINT.

``--workers N`` starts N processes that each bind the same gRPC and gateway addresses with
SO_REUSEPORT, so the kernel spreads connections across them; the parent replaces one that
dies (``supervisor``). ``--handoff`` binds so in one process too, and lets a service join
the ports of one already listening with SO_REUSEPORT: the new one starts, the old one is
stopped (README, "Rotating keys and certificates").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import uvloop

from amperity_signal.allocator import fix_mmap_threshold
from amperity_signal.config import Settings
from amperity_signal.gateway.embedded import EmbeddedGateway
from amperity_signal.gateway.live_merge import worker_socket
from amperity_signal.listening import CannotListen, cannot_listen, check_bindable, one_free_port
from amperity_signal.local_socket import SOCKET_NAME, make_local_socket_dir
from amperity_signal.logs import configure_logging
from amperity_signal.metrics import Metrics
from amperity_signal.processes import EXIT_FORCED, announce
from amperity_signal.service.app import (
    Deps,
    Service,
    build_server,
    probe_redis,
    report_configuration,
)
from amperity_signal.supervisor import (
    EXIT_CANNOT_LISTEN,
    FORCE_SIGNAL,
    ListenFailed,
    Ready,
    Supervisor,
)
from amperity_signal.workers import ALONE, METRICS_DIRS, Place, make_workers_dir, stop_when_orphaned

log = logging.getLogger("amperity_signal.server")

NO_RELOAD = (
    "SIGHUP ignored: serve reads its configuration only at start. To apply a new key, "
    "certificate or setting without dropping calls, start a second serve --handoff with "
    "the new configuration and SIGTERM this one once the new one is ready "
    "(README: Rotating keys and certificates)."
)


def with_workers(settings: Settings, workers: int) -> Settings:
    """``settings`` with ``[server] workers`` set to the processes actually started.

    Each worker's in-memory rate limiter keeps its share of every tenant's limit by it, so
    it must be the count ``--workers`` chose, not the configuration file's.
    """
    server = settings.server.model_copy(update={"workers": max(1, workers)})
    return settings.model_copy(update={"server": server})


def run_service(
    settings: Settings, *, workers: int = 1, gateway: bool = True, handoff: bool = False
) -> int:
    """Serve until signalled; with ``workers`` > 1, in that many processes.

    ``handoff`` shares the ports (SO_REUSEPORT) also in one process, and may join a
    service already listening on them with SO_REUSEPORT (``--handoff`` or ``--workers``):
    the way to replace it, with a new key or certificate, without refusing a connection.
    """
    settings = with_workers(settings, workers)
    if workers <= 1:
        return _run(settings, gateway, reuse_port=handoff)
    # The workers bind with SO_REUSEPORT, which would also let them join the listeners of
    # another `serve --workers` on the same ports, the kernel then splitting traffic
    # between two services. A bind without it fails against any listener, so try one first,
    # unless joining is what was asked (a handoff).
    if not handoff:
        check_bindable("server.grpc_address", settings.server.grpc_address, reuse_port=False)
    if gateway and not handoff:
        check_bindable("server.http_address", settings.server.http_address, reuse_port=False)
    # Port 0 would give each worker a free port of its own: N services on N ports.
    server = settings.server.model_copy(
        update={
            "grpc_address": one_free_port(settings.server.grpc_address),
            "http_address": one_free_port(settings.server.http_address),
        }
    )
    settings = settings.model_copy(update={"server": server})
    # Key expiry, setup advice, proxies, whether Redis answers: the same for every worker,
    # so said once, here, whichever workers then fail; each worker still logs its own
    # start and stop, and what goes wrong while it serves (Redis lost, a script refused).
    report_configuration(settings)
    if settings.cache.backend == "redis":
        asyncio.run(probe_redis(settings.cache.redis_url))
    # Workers write their metrics to files in one directory and whichever worker answers
    # /metrics sums them (prometheus-client's multiprocess mode). It must be set before a
    # worker imports prometheus_client, so before the workers are spawned.
    metrics_dir = METRICS_DIRS.make()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Each worker keeps its own Live Events: each also listens on a Unix socket here, where
    # every worker's gateway watches them all (gateway/live_merge.py). Mode 700, as the
    # TLS local socket's, and swept alike when a killed service left it.
    workers_dir = make_workers_dir(workers) if gateway else None
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().level

    def make_worker(n: int, reports: Connection) -> BaseProcess:
        place = Place(workers_dir, n, os.getpid())
        return context.Process(
            target=_worker, args=(settings, gateway, reports, level, place), name=f"worker-{n}"
        )

    supervisor = Supervisor(make_worker, workers, metrics_dir=metrics_dir)
    signal.signal(signal.SIGTERM, supervisor.terminate)
    signal.signal(signal.SIGINT, supervisor.interrupt)
    signal.signal(signal.SIGHUP, _no_reload)
    try:
        return supervisor.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if workers_dir is not None:
            shutil.rmtree(workers_dir, ignore_errors=True)


def _no_reload(*_: object) -> None:
    """SIGHUP, by default the end of a process, is a reload elsewhere: say what to do."""
    log.warning(NO_RELOAD, extra={"pid": os.getpid()})


def _ready_alone(ready: Ready) -> None:
    """A service serving alone says itself that it is ready (under --workers, the parent)."""
    ready.log_ready(workers=1)


def _worker(
    settings: Settings,
    gateway: bool,
    reports: Connection,
    log_level: int,
    workers: Place,
) -> None:
    """A ``serve --workers`` worker: it reports to its parent once it serves, or cannot."""
    # A spawned process starts with no logging configured: without this, its lines would go
    # to logging's last resort, unformatted, unscrubbed of secrets, warnings only.
    configure_logging(logging.getLevelName(log_level), secrets=settings.secret_values())

    def report(ready: Ready | ListenFailed) -> None:
        # A parent gone (SIGKILL) reads nothing: the worker stops by itself all the same
        # (``stop_when_orphaned``), without a traceback for the report it could not send.
        with contextlib.suppress(OSError):
            reports.send(ready)

    try:
        status = _run(
            settings, gateway, reuse_port=True, report=False, workers=workers, ready=report
        )
    except CannotListen as error:
        report(ListenFailed(error.message))
        sys.exit(EXIT_CANNOT_LISTEN)
    sys.exit(status)


def _run(
    settings: Settings,
    gateway: bool,
    *,
    reuse_port: bool,
    report: bool = True,
    workers: Place = ALONE,
    ready: Callable[[Ready], None] = _ready_alone,
) -> int:
    """Serve in this process; ``workers``: where it stands among ``--workers`` (``Place``).

    ``ready`` is told where it serves once it does: by default, the info line saying so.
    """
    fix_mmap_threshold()  # in each worker: a full cache's RSS stays flat (allocator.py)
    return uvloop.run(
        _serve(
            settings, gateway, reuse_port=reuse_port, report=report, workers=workers, ready=ready
        )
    )


async def _serve(
    settings: Settings,
    gateway: bool,
    *,
    reuse_port: bool,
    report: bool,
    workers: Place,
    ready: Callable[[Ready], None],
) -> int:
    metrics = Metrics()
    address = settings.server.grpc_address
    check_bindable("server.grpc_address", address, reuse_port=reuse_port)
    if gateway:
        # Also before gRPC serves: otherwise it would announce itself and take calls, only
        # to stop them when the gateway's port turns out to be taken.
        check_bindable("server.http_address", settings.server.http_address, reuse_port=reuse_port)
    # Bound here rather than by build_server, so that a failure is known to be the bind.
    service = build_server(
        settings, Deps(metrics=metrics), bind=False, reuse_port=reuse_port, report=report
    )
    # With TLS, the embedded gateway's streams (Live Events) reach the service over a Unix
    # socket in a directory of this process's own (mode 700), not the TLS port; under
    # --workers they go to every worker's socket in the workers' directory instead, so a
    # socket of its own would be bound for nothing.
    workers_dir = workers.dir
    tls_streams = gateway and settings.server.tls is not None and workers_dir is None
    local_dir = make_local_socket_dir() if tls_streams else None
    try:
        try:
            service.listen(
                settings.server,
                local_socket=f"{local_dir}/{SOCKET_NAME}" if local_dir else None,
                worker_socket=worker_socket(workers_dir, workers.n) if workers_dir else None,
            )
        except RuntimeError as error:
            await service.stop(0)
            raise cannot_listen(
                "server.grpc_address", address, OSError(str(error)), shared=reuse_port
            ) from None
        return await _serve_bound(
            service,
            settings,
            gateway,
            metrics,
            reuse_port=reuse_port,
            workers_dir=workers_dir,
            parent=workers.parent,
            ready=ready,
        )
    finally:  # also when the port cannot be bound: no directory left behind
        if local_dir is not None:
            shutil.rmtree(local_dir, ignore_errors=True)


async def _serve_bound(
    service: Service,
    settings: Settings,
    gateway: bool,
    metrics: Metrics,
    *,
    reuse_port: bool,
    workers_dir: str | None = None,
    parent: int | None = None,
    ready: Callable[[Ready], None] = _ready_alone,
) -> int:
    """Serve until SIGTERM or SIGINT, then stop; the exit code (``EXIT_FORCED`` if forced)."""
    stop = asyncio.Event()
    # A second Ctrl-C cuts the grace period short. Only a second SIGINT: under --workers a
    # Ctrl-C reaches a worker from the terminal (SIGINT) and from its parent (SIGTERM).
    force = asyncio.Event()
    interrupts = 0

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        (stop if interrupts == 1 else force).set()

    def force_now() -> None:
        stop.set()
        force.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, interrupted)
    if parent is not None:  # a --workers worker: its parent was interrupted twice
        loop.add_signal_handler(FORCE_SIGNAL, force_now)
    orphaned = None if parent is None else asyncio.create_task(stop_when_orphaned(parent, stop))
    # An operator may send SIGHUP expecting a reload; its default action stopped the
    # service, every call in flight cut. A reload in place is not offered: see NO_RELOAD.
    loop.add_signal_handler(signal.SIGHUP, _no_reload)
    # Everything built so far (modules, config, blueprints, servicers) lives as long as the
    # process: moved out of the collector's reach, a full collection no longer walks it.
    # Measured: a full collection of the built service took ~50 ms, a pause every RPC in
    # flight would see; after the freeze it takes well under 1 ms.
    gc.collect()
    gc.freeze()
    await service.start()
    host = settings.server.grpc_address.rsplit(":", 1)[0]
    announce(f"grpc listening on {host}:{service.port}")
    # Which process serves: under --workers each worker says it at the level it inherited.
    log.debug("serving", extra={"pid": os.getpid(), "workers": settings.server.workers})
    http, http_address = (
        await _start_gateway(service, settings, metrics, reuse_port, workers_dir)
        if gateway
        else (None, None)
    )
    ready(Ready(f"{host}:{service.port}", http_address))
    await stop.wait()
    if orphaned is not None:
        orphaned.cancel()
    log.info("shutting down", extra={"grace_seconds": settings.server.grace_period})
    stopping = asyncio.ensure_future(_stop(service, http, settings.server.grace_period))
    forced = asyncio.ensure_future(force.wait())
    try:
        await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        forced.cancel()
    status = 0
    if not stopping.done():
        await _force_stop(service, http, stopping)
        status = EXIT_FORCED
    sys.stdout.flush()
    return status


async def _start_gateway(
    service: Service,
    settings: Settings,
    metrics: Metrics,
    reuse_port: bool,
    workers_dir: str | None,
) -> tuple[EmbeddedGateway, str]:
    """Start the embedded gateway, and say where it listens: it and its URL."""
    http = EmbeddedGateway(
        settings,
        channel_factory=service.in_process_channel,
        metrics=metrics,
        reuse_port=reuse_port,
        workers_dir=workers_dir,
    )
    try:
        listening = await http.start()
    except OSError as error:
        await service.stop(0)
        raise cannot_listen(
            "server.http_address", settings.server.http_address, error, shared=reuse_port
        ) from None
    scheme = "https" if settings.server.tls else "http"
    announce(f"gateway listening on {scheme}://{listening}")
    return http, f"{scheme}://{listening}"


async def _force_stop(
    service: Service, http: EmbeddedGateway | None, stopping: asyncio.Future[None]
) -> None:
    """Cut what the graceful stop under way still waits for, then let it end."""
    # One line for the whole cut: ``calls`` counts the gRPC calls, the gateway's own among
    # them, ``requests`` the gateway's HTTP requests (each a 503, Connection: close).
    log.warning(
        "interrupted again: stopping now, the calls and requests still in flight are cut",
        extra={
            "calls": service.calls.count,
            "requests": 0 if http is None else http.requests_in_flight,
        },
    )
    if http is not None:
        http.force_stop()
    await service.server.stop(None)  # cancels every call left: UNAVAILABLE to its caller
    await stopping


async def _stop(service: Service, http: EmbeddedGateway | None, grace: float) -> None:
    """NOT_SERVING and the gRPC port closed, then the gateway stops, then the gRPC calls end.

    One grace for the whole stop, counted from its start: the gateway's drain and its
    requests in flight take theirs from it (``GatewayServer``), and the gRPC calls, in
    flight all along, have until the same end. The gRPC stop waited a whole ``grace``
    after the gateway's, so the process outlived the grace an operator sized the stop by.

    The gRPC port stops accepting at the start (``Service.stop_listening``): it listened
    until the gateway's stop was over, and for up to the whole grace new callers kept
    connecting to the process going away rather than to the one replacing it. The
    gateway's requests in flight reach the servicer in process, and are still answered.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    await service.health.enter_graceful_shutdown()
    service.stop_listening(grace)
    if http is not None:
        await http.stop()
    await service.stop(max(0.0, deadline - loop.time()))
