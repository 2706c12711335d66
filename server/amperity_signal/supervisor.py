"""The ``serve --workers N`` parent: it starts the workers, replaces one that dies, stops them.

A worker that dies unasked (``kill -9``, the OOM killer, a crash) is logged as an error
naming it and how it ended, and a new one takes its place, as gunicorn's and
``uvicorn --workers``' parents do: the kernel no longer gives the dead one connections, so
the service served on at part of its capacity, health SERVING, and nothing said so. What
the dead worker counted stays in the metrics (its counter and histogram files are summed
with the others'); its gauges go (``mark_process_dead``): an open breaker it left no longer
shows.

Each worker reports on a pipe of its own once it serves (``Ready``), or that it could not
bind (``ListenFailed``: every worker fails alike, the service stops). A worker that dies
before it is ready is replaced after a pause that doubles each time (``restart_delay``), so
a worker that cannot start does not spin; after ``START_ATTEMPTS`` such deaths in a row the
parent gives up, stops the others and exits non-zero. One that had served is replaced at
once.

A stop (SIGTERM, SIGINT) is forwarded to every worker, and the exit code is theirs
(``exit_status``). A worker that died unasked before it was logged as an error then, and
replaced: it does not change the code of a graceful stop (0, as gunicorn's), but the stop's
last line, a warning, counts those deaths. One the stop caught before its replacement
started (in the pause after a death at start) was never replaced: its code counts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe, wait
from multiprocessing.process import BaseProcess
from typing import NamedTuple

from prometheus_client.multiprocess import mark_process_dead

from amperity_signal.listening import CannotListen
from amperity_signal.processes import EXIT_FORCED
from amperity_signal.workers import exit_status

log = logging.getLogger("amperity_signal.server")

# A worker that could not start exits with this (the CLI's exit code for a bad setting).
EXIT_CANNOT_LISTEN = 2
# How long a parent interrupted twice lets its workers end their own forced stop before it
# kills those still running.
FORCE_SECONDS = 2.0
# What a parent interrupted twice sends its workers: stop now, as a second Ctrl-C would. A
# terminal's Ctrl-C reaches them too, but a SIGINT sent to the parent alone did not, and
# they were killed with their requests in flight, none of them answered.
FORCE_SIGNAL = signal.SIGUSR1
# Deaths in a row before it was ready, of the worker in one place, that make the parent
# give up: a worker that cannot start (its lines say why) will not start on a fifth try.
START_ATTEMPTS = 4
# The pause before replacing a worker that died before it was ready; doubled each time.
FIRST_RESTART_DELAY = 0.5


class Ready(NamedTuple):
    """A worker's report that it serves, and where (every worker serves the same addresses)."""

    grpc_address: str
    http_address: str | None

    def log_ready(self, workers: int) -> None:
        """The one info line saying that the service is ready (under --workers, the parent's)."""
        log.info(
            "ready",
            extra={
                "grpc_address": self.grpc_address,
                "http_address": self.http_address,
                "workers": workers,
                "pid": os.getpid(),
            },
        )


class ListenFailed(NamedTuple):
    """A worker's report that it could not bind: ``CannotListen``'s message."""

    message: str


MakeWorker = Callable[[int, Connection], BaseProcess]
"""The (unstarted) process of worker ``n``, which reports on the connection given."""


def restart_delay(deaths_at_start: int) -> float | None:
    """Seconds before a dead worker is replaced; None when the parent gives up.

    Args:
        deaths_at_start: How many times in a row the workers in this place died before they
            were ready, this death included; 0 when the one that died had served.
    """
    if deaths_at_start >= START_ATTEMPTS:
        return None
    return 0.0 if deaths_at_start == 0 else FIRST_RESTART_DELAY * 2 ** (deaths_at_start - 1)


def how_it_ended(exit_code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if exit_code >= 0:
        return f"exited with code {exit_code}"
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        name = f"signal {-exit_code}"
    return f"was killed by {name}"


@dataclass
class _Place:
    """One of the N workers' places: the worker in it now, and how its starts went."""

    n: int
    process: BaseProcess | None = None  # None while a replacement waits for its start
    reports: Connection | None = None  # until the worker's one report is read
    ready: bool = False
    ended: bool = False  # the process ended and the parent has dealt with it
    deaths_at_start: int = 0
    restart_at: float | None = None
    last_exit: int = 0  # the exit code of the last worker that died in it unasked
    unreplaced: bool = False  # a stop came before that worker's replacement started

    @property
    def name(self) -> str:
        return f"worker-{self.n}"


class Supervisor:
    """Runs ``workers`` processes until stopped, replacing any that dies unasked.

    Args:
        make_worker: Makes worker ``n``'s process (``MakeWorker``).
        workers: How many.
        metrics_dir: The workers' ``PROMETHEUS_MULTIPROC_DIR``.
        clock: Monotonic seconds, for the restart delays.
    """

    def __init__(
        self,
        make_worker: MakeWorker,
        workers: int,
        *,
        metrics_dir: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_worker = make_worker
        self._places = [_Place(n) for n in range(workers)]
        self._metrics_dir = metrics_dir
        self._clock = clock
        self._stopped = False
        self._interrupts = 0
        self._listen_failure: str | None = None
        self._gave_up_status: int | None = None
        self._announced = False
        self._died_unasked = 0
        # Written by the signal handlers: wakes the wait for a worker's end, which a stop
        # with no worker running (a replacement waiting for its start) would not end.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._wake_closed = False  # once run() returned: a late signal writes nothing

    def terminate(self, *_: object) -> None:
        """SIGTERM: stop every worker gracefully, replacing none."""
        self._stop(signal.SIGTERM)

    def interrupt(self, *_: object) -> None:
        """SIGINT: as SIGTERM; a second one forces the stop.

        Each worker is told to cut its own calls and requests (``FORCE_SIGNAL``); one that
        has not ended ``FORCE_SECONDS`` later is killed.
        """
        self._interrupts += 1
        self._stop(signal.SIGTERM)
        if self._interrupts == 2:
            self._signal_all(FORCE_SIGNAL)
            kill = threading.Timer(FORCE_SECONDS, self._signal_all, (signal.SIGKILL,))
            kill.daemon = True
            kill.start()

    def run(self) -> int:
        """Start the workers and keep them running until stopped; the exit code.

        Raises:
            CannotListen: A worker could not bind the service's addresses.
        """
        try:
            for place in self._places:
                self._start(place)
            while any(p.restart_at is not None or not p.ended for p in self._places):
                self._wait()
                for place in self._places:
                    self._read_report(place)
                    process = place.process
                    if process is not None and not place.ended and not process.is_alive():
                        self._ended(place, process)
                self._start_replacements()
        finally:
            # Flagged first: a handler runs between two of these lines, never inside one,
            # so a signal after this writes nothing to a closed (or reused) descriptor.
            self._wake_closed = True
            os.close(self._wake_read)
            os.close(self._wake_write)
        return self._status()

    def _start(self, place: _Place) -> None:
        reports, writer = Pipe(duplex=False)
        process = self._make_worker(place.n, writer)
        process.start()
        writer.close()  # the worker's copy is the one left: its end is the pipe's end
        place.process, place.reports = process, reports
        place.ready, place.ended, place.restart_at = False, False, None
        if self._stopped:  # the stop came as it started, and may have missed it
            self._signal(process, signal.SIGTERM)

    def _wait(self) -> None:
        """Until a worker reports or ends, a stop is signalled or a replacement is due."""
        waited: list[Connection | int] = [self._wake_read]
        for place in self._places:
            if place.process is not None and not place.ended:
                waited.append(place.process.sentinel)
            if place.reports is not None:
                waited.append(place.reports)
        due = [p.restart_at for p in self._places if p.restart_at is not None]
        timeout = max(0.0, min(due) - self._clock()) if due else None
        if self._wake_read in wait(waited, timeout):
            os.read(self._wake_read, 64)

    def _read_report(self, place: _Place) -> None:
        """Read the one report of the worker in ``place``, once sent (or its pipe's end)."""
        if place.reports is None or not place.reports.poll():
            return
        with contextlib.suppress(EOFError):  # it ended without a report
            report = place.reports.recv()
            if isinstance(report, Ready):
                self._ready(place, report)
            elif isinstance(report, ListenFailed) and self._listen_failure is None:
                self._listen_failure = report.message
        place.reports.close()
        place.reports = None

    def _ready(self, place: _Place, report: Ready) -> None:
        place.ready = True
        place.deaths_at_start = 0
        if self._announced:
            pid = place.process.pid if place.process is not None else None
            log.info("replacement worker ready", extra={"worker": place.name, "pid": pid})
        elif all(p.ready for p in self._places):
            self._announced = True
            report.log_ready(len(self._places))

    def _ended(self, place: _Place, process: BaseProcess) -> None:
        """Deal with the end of the worker in ``place``: replace it unless it was asked."""
        self._read_report(place)  # a report written just before the end
        place.ended = True
        if process.pid is not None:  # its gauges no longer count; its counters do
            mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        if self._stopped:
            return  # the stop asked for: exit_status judges how it ended
        if self._listen_failure is not None:
            # The others fail alike, or would serve on with only some of the workers.
            self._stop(signal.SIGTERM)
            return
        code = process.exitcode or 0
        deaths = 0 if place.ready else place.deaths_at_start + 1
        delay = restart_delay(deaths)
        ended = f"{place.name} (pid {process.pid}) {how_it_ended(code)}"
        fields = {"worker": place.name, "pid": process.pid, "exit_code": code}
        place.process, place.deaths_at_start, place.last_exit = None, deaths, code
        if delay is None:
            log.error(
                f"{ended} before it was ready, {deaths} times in a row in its place: stopping "
                "the service (the lines above say why its workers fail to start)",
                extra=fields,
            )
            self._gave_up_status = max(1, exit_status([code], stopped=False))
            self._stop(signal.SIGTERM)
            return
        self._died_unasked += 1
        when = f" in {delay:g} s" if delay else ""
        before = "" if deaths == 0 else " before it was ready"
        log.error(f"{ended}{before}; starting a replacement{when}", extra=fields)
        place.restart_at = self._clock() + delay

    def _start_replacements(self) -> None:
        now = self._clock()
        for place in self._places:
            if place.restart_at is None:
                continue
            if self._stopped:
                place.restart_at, place.ended, place.unreplaced = None, True, True
            elif place.restart_at <= now:
                self._start(place)

    def _status(self) -> int:
        if self._listen_failure is not None:
            # Every worker that failed reports the same address: said once, as one process.
            raise CannotListen(self._listen_failure)
        codes = [p.process.exitcode or 0 for p in self._places if p.process is not None]
        status = exit_status(codes, stopped=self._stopped)
        # A worker that died unasked and was never replaced (the stop came during its
        # pause) ended the service's run as much as the stop did: its code counts, as a
        # death no stop asked for.
        unreplaced = [p.last_exit for p in self._places if p.unreplaced]
        status = max(status, exit_status(unreplaced, stopped=False))
        if self._gave_up_status is not None:
            status = max(status, self._gave_up_status)
        elif self._died_unasked:
            log.warning(
                f"stopped; {self._died_unasked} worker(s) had died unasked while it ran "
                "(each logged as an error when it died)",
                extra={"workers_died": self._died_unasked},
            )
        return max(status, EXIT_FORCED) if self._interrupts >= 2 else status

    def _stop(self, sig: int) -> None:
        self._stopped = True
        self._signal_all(sig)
        if self._wake_closed:
            return
        with contextlib.suppress(BlockingIOError):  # already woken
            os.write(self._wake_write, b"\0")

    def _signal_all(self, sig: int) -> None:
        for place in self._places:
            if place.process is not None and place.process.is_alive():
                self._signal(place.process, sig)

    @staticmethod
    def _signal(process: BaseProcess, sig: int) -> None:
        if process.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # ended since
                os.kill(process.pid, sig)
