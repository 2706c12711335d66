"""Where a process stands among ``serve --workers N``, and what the workers share.

The parent (``runner.run_service``) makes two directories for its workers, each named with
its pid so that a later start can sweep what a killed service left (``pid_dirs``): the
metrics files prometheus-client's multiprocess mode sums, and the Unix sockets through
which every worker's gateway watches every worker's Live Events (``gateway/live_merge``).
A worker whose parent is gone stops by itself (``stop_when_orphaned``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from typing import NamedTuple

from amperity_signal.gateway.live_merge import worker_socket
from amperity_signal.local_socket import MAX_SOCKET_PATH, make_local_socket_dir
from amperity_signal.pid_dirs import PidDirs, runs

log = logging.getLogger("amperity_signal.server")


def make_workers_dir(workers: int) -> str | None:
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


def exit_status(exit_codes: list[int], *, stopped: bool) -> int:
    """The service's exit code from its workers' (negative: killed by that signal).

    A worker still starting when the parent forwards SIGTERM (or SIGKILL, or SIGUSR1 at a
    forced stop) dies of it before its own handlers are set: that is the stop that was
    asked for, not a failure. Any other death by a signal is 128 + the signal, as a shell
    reports it.
    """
    asked = (signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1) if stopped else ()
    return max(
        ((128 - code if code < 0 and -code not in asked else max(code, 0)) for code in exit_codes),
        default=0,  # every worker had died before the stop, and was not replaced
    )


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


async def stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
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
