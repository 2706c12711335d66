"""Running the sandbox as a server process."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys

import uvicorn
from starlette.types import ASGIApp, Scope

from amperity_signal.processes import (
    CUT_SECONDS,
    EXIT_FORCED,
    AnswersWhenCut,
    ProcessServer,
    announce,
)
from amperity_signal.sandbox.app import create_app
from amperity_signal.sandbox.data import SandboxData, default_data, load_data
from amperity_signal.sandbox.responses import error


class CannotListen(Exception):
    """The sandbox cannot listen on the host and port asked for; the message says why."""


def run(
    host: str,
    port: int,
    data_path: str | None,
    profile_delay: float,
    *,
    rate_limit_per_second: int = 500,
    seed: int | None = None,
    data: SandboxData | None = None,
    stop_grace: int = 2,
) -> int:
    """Serves the sandbox until SIGTERM or SIGINT; the exit code, 0 after a graceful stop.

    A stop waits ``stop_grace`` seconds for the requests in flight, then cuts them, each
    unanswered one a 503, with one warning saying how many; the code is still 0. A second
    Ctrl-C (SIGINT) forces the stop: the requests in flight are cut at once, silently, and
    the code is ``EXIT_FORCED`` (130), as ``serve``'s.

    Prints ``sandbox listening on http://HOST:PORT`` once the socket is bound; with port 0
    the line carries the port the system chose.

    Args:
        host: Interface to bind, e.g. ``127.0.0.1``.
        port: TCP port, 0 for any free port.
        data_path: A data file (YAML or JSON); the shipped default when None.
        profile_delay: Seconds between an accepted event and its profile update.
        rate_limit_per_second: Requests admitted per tenant in any one-second window.
        seed: Seed for ids and fault draws (None = random).
        data: An already loaded world; ``data_path`` is not read then.
        stop_grace: Whole seconds a stop waits for the requests in flight.

    Raises:
        CannotListen: The host is not this machine's, or the port is taken.
    """
    if data is None:
        data = load_data(data_path) if data_path else default_data()
    app = create_app(
        data, profile_delay=profile_delay, rate_limit_per_second=rate_limit_per_second, seed=seed
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it Nagle plus delayed ACKs add 40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from None
    sock.set_inheritable(True)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        AnswersWhenCut(app, _stopping),
        # uvicorn's loggers propagate to the process's own (``__main__`` configures JSON
        # lines at --log-level); its access log would repeat what the inspector records.
        log_config=None,
        access_log=False,
        ws="none",
        lifespan="on",
        # Amperity's API names no server software, and nothing here should advertise
        # uvicorn's; the Date header stays (uvicorn's date_header).
        server_header=False,
        backlog=2048,
        # uvicorn's wait once the stop has cut what outlived the grace (ProcessServer).
        timeout_graceful_shutdown=CUT_SECONDS,
    )
    # SIGTERM/SIGINT: a graceful stop, then exit 0.
    server = ProcessServer(config, grace_seconds=stop_grace, logger=logging.getLogger(__name__))
    server.reports_cut = False  # a forced stop: the user cut them, pressing Ctrl-C twice
    announce(f"sandbox listening on http://{shown_host}:{bound_port}")
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        sys.stdout.flush()
    return EXIT_FORCED if server.force_exit else 0


def _stopping(scope: Scope) -> ASGIApp:
    """The answer of a request a stop cut: a 503 in Amperity's shape, to resend."""
    return error(
        scope,
        503,
        "the sandbox was stopped while answering; send the request again once it is back",
        {"Connection": "close"},
    )


def _cannot_listen(host: str, port: int, error: OSError | OverflowError) -> CannotListen:
    code = error.errno if isinstance(error, OSError) else None
    if code == errno.EADDRINUSE:
        return CannotListen(
            f"--port {port} is already in use on {host}; stop the other process, or pass "
            "another --port (0 picks a free one)"
        )
    reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
    return CannotListen(
        f"cannot listen on {host} port {port} ({reason}); pass --host with an address of this "
        "machine (e.g. 127.0.0.1) and a free --port (0 picks one)"
    )
