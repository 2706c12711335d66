"""Running the service as a process: one event loop per core, graceful on SIGTERM/SIGINT.

``--workers N`` starts N processes that each bind the same gRPC and gateway addresses with
SO_REUSEPORT, so the kernel spreads connections across them. ``--handoff`` binds so in one
process too, and lets a service join the ports of one already listening with SO_REUSEPORT:
the new one starts, the old one is stopped (README, "Rotating keys and certificates").
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from multiprocessing.connection import wait
from multiprocessing.queues import SimpleQueue
from typing import NamedTuple

import uvloop

from amperity_signal.allocator import fix_mmap_threshold
from amperity_signal.config import Settings
from amperity_signal.errors import AmperitySignalError, ConfigProblem
from amperity_signal.gateway.embedded import EmbeddedGateway
from amperity_signal.gateway.live_merge import worker_socket
from amperity_signal.gateway.server import split_address
from amperity_signal.local_socket import MAX_SOCKET_PATH, SOCKET_NAME, make_local_socket_dir
from amperity_signal.logs import configure_logging
from amperity_signal.metrics import Metrics
from amperity_signal.pid_dirs import PidDirs, runs
from amperity_signal.processes import announce
from amperity_signal.service.app import (
    Deps,
    Service,
    build_server,
    probe_redis,
    report_configuration,
)

log = logging.getLogger("amperity_signal.server")

# A worker that could not start exits with this (the CLI's exit code for a bad setting).
EXIT_CANNOT_LISTEN = 2
NO_RELOAD = (
    "SIGHUP ignored: serve reads its configuration only at start. To apply a new key, "
    "certificate or setting without dropping calls, start a second serve --handoff with "
    "the new configuration and SIGTERM this one once the new one is ready "
    "(README: Rotating keys and certificates)."
)


class CannotListen(AmperitySignalError):
    """The service cannot listen on a configured address; the message names the setting."""

    reason = "CANNOT_LISTEN"


def cannot_listen(
    setting: str, address: str, error: OSError | ValueError, *, shared: bool = False
) -> CannotListen:
    """The error for ``address`` (the value of ``setting``) that failed to bind with ``error``.

    Args:
        setting: The configuration field, e.g. ``server.grpc_address``.
        address: Its value, ``host:port``.
        error: Why binding failed.
        shared: The bind asked to share the port (SO_REUSEPORT): in use means the process
            listening there does not share it.
    """
    code = error.errno if isinstance(error, OSError) else None
    if code == errno.EADDRINUSE and shared:
        problem = (
            f"{address} is already in use by a process that does not share it (a serve "
            "started without --handoff or --workers, another program, or another user)."
        )
        fix = (
            f"stop that process, or set {setting} to a free port; a serve started with "
            "--handoff can later be replaced without a gap."
        )
    elif code == errno.EADDRINUSE:
        problem = f"{address} is already in use by another process."
        fix = f"stop the other process, or set {setting} to a free port."
    elif code == errno.EACCES:
        problem = f"not permitted to listen on {address}."
        fix = f"set {setting} to a port above 1023, or run with the right to bind it."
    else:
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
        problem = f"cannot listen on {address} ({reason})."
        fix = f"set {setting} to an address of this machine (e.g. 127.0.0.1) and a free port."
    return CannotListen(
        str(ConfigProblem(setting, problem, fix)), metadata={"setting": setting, "address": address}
    )


def check_bindable(setting: str, address: str, *, reuse_port: bool) -> None:
    """Bind (without listening) and release ``address``, to say why it cannot be used.

    gRPC reports only that binding failed, after logging its own error line; asking the
    operating system first gives the reason (in use, not permitted, not this machine's).
    Like gRPC, one bindable address of those the host resolves to is enough.

    Raises:
        CannotListen: No address the host resolves to can be bound.
    """
    try:
        host, port = split_address(address)
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise cannot_listen(setting, address, error) from None
    failures: list[OSError] = []
    for family, kind, protocol, _, socket_address in resolved:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(socket_address)
        except OSError as error:
            failures.append(error)
        else:
            return
    raise cannot_listen(setting, address, failures[0], shared=reuse_port)


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
            "grpc_address": _one_free_port(settings.server.grpc_address),
            "http_address": _one_free_port(settings.server.http_address),
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
    workers_dir = _workers_dir(workers) if gateway else None
    context = multiprocessing.get_context("spawn")
    failures: SimpleQueue[str] = context.SimpleQueue()
    processes = [
        context.Process(
            target=_worker,
            args=(
                settings,
                gateway,
                failures,
                logging.getLogger().level,
                Place(workers_dir, n, os.getpid()),
            ),
            name=f"worker-{n}",
        )
        for n in range(workers)
    ]
    for process in processes:
        process.start()

    stopped = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopped
        stopped = True
        for process in processes:
            if process.is_alive():
                process.terminate() if signum == signal.SIGTERM else process.kill()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, lambda *_: forward(signal.SIGTERM, None))
    signal.signal(signal.SIGHUP, _no_reload)
    running = list(processes)
    while running:
        wait([process.sentinel for process in running])
        for process in [p for p in running if not p.is_alive()]:
            running.remove(process)
            if process.exitcode == EXIT_CANNOT_LISTEN:
                # The others fail alike, or would serve on with only some of the workers.
                forward(signal.SIGTERM, None)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    if workers_dir is not None:
        shutil.rmtree(workers_dir, ignore_errors=True)
    if not failures.empty():
        # Every worker that failed reports the same address: say it once, as one process.
        raise CannotListen(failures.get())
    return exit_status([p.exitcode or 0 for p in processes], stopped=stopped)


def _workers_dir(workers: int) -> str | None:
    """The directory of the workers' Live Events sockets; None when a path is too long."""
    directory = make_local_socket_dir()
    if len(worker_socket(directory, workers - 1).encode()) <= MAX_SOCKET_PATH:
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    log.warning(
        f"Live Events shows each worker's own deliveries only: the temporary directory "
        f"{os.path.dirname(directory)} is too long a path for the workers' Unix sockets "
        f"(at most {MAX_SOCKET_PATH} bytes); set TMPDIR to a shorter one, such as /tmp"
    )
    return None


def _workers_write(directory: str) -> bool:
    """Whether a process named by one of the metrics files in ``directory`` still runs.

    prometheus-client names each process's files ``{kind}_{pid}.db``. Nothing ends the
    workers of a parent killed with SIGKILL: they serve on, writing there, and keep the
    directory (whatever cannot be listed is kept too).
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return True
    pids = {name.removesuffix(".db").rpartition("_")[2] for name in names if name.endswith(".db")}
    return any(pid.isdigit() and runs(int(pid)) for pid in pids)


# The workers' metrics files: the parent's pid in the name, swept once it and every worker
# that wrote there are gone (a reused pid only delays the removal).
METRICS_DIRS = PidDirs("amperity-signal-metrics-", "metrics", in_use=_workers_write)


def _no_reload(*_: object) -> None:
    """SIGHUP, by default the end of a process, is a reload elsewhere: say what to do."""
    log.warning(NO_RELOAD, extra={"pid": os.getpid()})


def exit_status(exit_codes: list[int], *, stopped: bool) -> int:
    """The service's exit code from its workers' (negative: killed by that signal).

    A worker still starting when the parent forwards SIGTERM (or SIGKILL) dies of it
    before its own handlers are set: that is the stop that was asked for, not a failure.
    Any other death by a signal is 128 + the signal, as a shell reports it.
    """
    asked = (signal.SIGTERM, signal.SIGKILL) if stopped else ()
    return max(
        (128 - code if code < 0 and -code not in asked else max(code, 0)) for code in exit_codes
    )


def _one_free_port(address: str) -> str:
    """``address`` with port 0 replaced by a port free now, which every worker then binds."""
    host, port = split_address(address)
    if port:
        return address
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        free = probe.getsockname()[1]
    return f"{address.rpartition(':')[0]}:{free}"


class Place(NamedTuple):
    """Where a process stands among ``serve --workers N``; the default: serving alone.

    Attributes:
        dir: The workers' Live Events socket directory (``_workers_dir``), if any.
        n: This worker's number.
        parent: The ``serve --workers`` process that started it.
    """

    dir: str | None = None
    n: int = 0
    parent: int | None = None


ALONE = Place()
"""A process serving by itself (``serve`` without ``--workers``)."""
PARENT_CHECK_SECONDS = 1.0
"""How often a worker checks that its ``serve --workers`` parent still runs."""


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """Stop this worker, gracefully, once the parent that started it is gone.

    A parent killed with SIGKILL (the OOM killer, ``kill -9``) forwards no signal: its
    workers would serve on, unsupervised, holding the ports, so that a restart fails
    ("already in use") or, with ``--handoff``, joins them. The kernel gives an orphan a new
    parent, which is what is checked.
    """
    while not stop.is_set():
        await asyncio.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            log.warning(
                "the serve --workers process that started this worker is gone; stopping",
                extra={"pid": os.getpid(), "parent_pid": parent},
            )
            stop.set()


def _worker(
    settings: Settings,
    gateway: bool,
    failures: SimpleQueue[str],
    log_level: int,
    workers: Place,
) -> None:
    # A spawned process starts with no logging configured: without this, its lines would go
    # to logging's last resort, unformatted, unscrubbed of secrets, warnings only.
    configure_logging(logging.getLevelName(log_level), secrets=settings.secret_values())
    try:
        _run(settings, gateway, reuse_port=True, report=False, workers=workers)
    except CannotListen as error:
        failures.put(error.message)
        sys.exit(EXIT_CANNOT_LISTEN)


def _run(
    settings: Settings,
    gateway: bool,
    *,
    reuse_port: bool,
    report: bool = True,
    workers: Place = ALONE,
) -> int:
    """Serve in this process; ``workers``: where it stands among ``--workers`` (``Place``)."""
    fix_mmap_threshold()  # in each worker: a full cache's RSS stays flat (allocator.py)
    uvloop.run(_serve(settings, gateway, reuse_port=reuse_port, report=report, workers=workers))
    return 0


async def _serve(
    settings: Settings,
    gateway: bool,
    *,
    reuse_port: bool,
    report: bool,
    workers: Place,
) -> None:
    metrics = Metrics()
    address = settings.server.grpc_address
    check_bindable("server.grpc_address", address, reuse_port=reuse_port)
    # Bound here rather than by build_server, so that a failure is known to be the bind.
    service = build_server(
        settings, Deps(metrics=metrics), bind=False, reuse_port=reuse_port, report=report
    )
    # With TLS, the embedded gateway's streams (Live Events) reach the service over a Unix
    # socket in a directory of this process's own (mode 700), not the TLS port.
    tls_streams = gateway and settings.server.tls is not None
    local_dir = make_local_socket_dir() if tls_streams else None
    workers_dir = workers.dir
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
        await _serve_bound(
            service,
            settings,
            gateway,
            metrics,
            reuse_port=reuse_port,
            workers_dir=workers_dir,
            parent=workers.parent,
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
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    orphaned = None if parent is None else asyncio.create_task(_stop_when_orphaned(parent, stop))
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
    http = None
    if gateway:
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
    await stop.wait()
    if orphaned is not None:
        orphaned.cancel()
    log.info("shutting down", extra={"grace_seconds": settings.server.grace_period})
    await service.health.enter_graceful_shutdown()
    if http is not None:
        await http.stop()
    await service.stop(settings.server.grace_period)
    sys.stdout.flush()
