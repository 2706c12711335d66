"""The ``serve --workers`` parent replaces a dead worker, and gives up on one that cannot start.

Real processes (spawned, as ``serve`` spawns its workers) whose bodies are in
``tests/unit/supervised.py``: the parent's side is what is under test, not the service's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from amperity_signal.supervisor import (
    START_ATTEMPTS,
    Supervisor,
    how_it_ended,
    restart_delay,
)
from tests.unit import supervised

SERVER_LOG = "amperity_signal.server"
# Bounds every wait for a worker's report: a hung test fails instead of hanging CI.
WAIT_SECONDS = 60.0


class Workers:
    """Makes the supervisor's worker processes (spawned) and keeps each, in start order."""

    def __init__(self, target: Callable[..., None], *args: object) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._target = target
        self._args = args
        self.started: list[BaseProcess] = []
        self.start_times: list[float] = []

    def __call__(self, n: int, reports: Connection) -> BaseProcess:
        process = self._context.Process(target=self._target, args=(reports, *self._args))
        self.started.append(process)
        self.start_times.append(time.monotonic())
        return process


def logged(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    """The records of ``SERVER_LOG`` whose message is ``message``."""
    return [r for r in caplog.records if r.name == SERVER_LOG and r.getMessage() == message]


def wait_until_logged(caplog: pytest.LogCaptureFixture, message: str) -> logging.LogRecord:
    """The first record of ``message``, once the supervisor's thread has logged it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (found := logged(caplog, message)):
        if time.monotonic() > deadline:
            pytest.fail(f"never logged {message!r}: {[r.getMessage() for r in caplog.records]}")
        time.sleep(0.02)
    return found[0]


def test_a_worker_killed_while_serving_is_logged_and_replaced_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL one of two serving workers: an error naming it and the signal, a new worker.

    Its gauge file goes (a breaker it left open no longer shows), its counter file stays
    (what it counted is still summed); the service is announced ready once, the stop's
    warning counts the death, and the graceful stop still exits 0. Before, nothing was
    logged and nothing replaced it.
    """
    metrics_dir = str(tmp_path)
    workers = Workers(supervised.serves, metrics_dir)
    supervisor = Supervisor(workers, 2, metrics_dir=metrics_dir)
    with caplog.at_level(logging.INFO, logger=SERVER_LOG), ThreadPoolExecutor(1) as pool:
        running = pool.submit(supervisor.run)
        try:
            ready = wait_until_logged(caplog, "ready")
            killed = workers.started[0].pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            replaced = wait_until_logged(caplog, "replacement worker ready")
            gauge, counter = supervised.metrics_files(metrics_dir, killed)
            assert not gauge.exists() and counter.exists()
        finally:  # a failure too ends the supervisor's thread, which the pool waits for
            supervisor.terminate()
        status = running.result(WAIT_SECONDS)
    assert status == 0
    assert (ready.__dict__["workers"], ready.__dict__["grpc_address"]) == (2, "127.0.0.1:50051")
    died = f"worker-0 (pid {killed}) was killed by SIGKILL; starting a replacement"
    [error] = logged(caplog, died)
    assert error.levelname == "ERROR"
    assert len(workers.started) == 3
    assert replaced.__dict__["pid"] == workers.started[2].pid != killed
    assert len(logged(caplog, "ready")) == 1
    [stopped] = [r for r in caplog.records if r.getMessage().startswith("stopped; ")]
    assert stopped.levelname == "WARNING" and stopped.__dict__["workers_died"] == 1


def test_a_worker_that_keeps_dying_at_start_is_retried_after_longer_pauses_then_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Exit 3 before ready, every time: pauses of 0.5, 1, 2 s, then the parent exits 3.

    Each death is an error line saying how it ended and when the next start comes; the
    last says the parent gives up. Without the pauses a worker that cannot start would be
    started again and again, as fast as it fails.
    """
    workers = Workers(supervised.dies_at_start)
    with caplog.at_level(logging.INFO, logger=SERVER_LOG):
        status = Supervisor(workers, 1, metrics_dir=str(tmp_path)).run()
    assert status == supervised.EXIT_AT_START
    assert len(workers.started) == START_ATTEMPTS
    pauses = [0.5, 1.0, 2.0]
    assert [restart_delay(deaths) for deaths in range(1, START_ATTEMPTS)] == pauses
    for gap, pause in zip(pairwise(workers.start_times), pauses, strict=True):
        assert gap[1] - gap[0] >= pause  # a lower bound: the start waited for its pause
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    pids = [process.pid for process in workers.started]
    ended = [f"worker-0 (pid {pid}) exited with code 3 before it was ready" for pid in pids]
    assert errors == [
        f"{ended[0]}; starting a replacement in 0.5 s",
        f"{ended[1]}; starting a replacement in 1 s",
        f"{ended[2]}; starting a replacement in 2 s",
        f"{ended[3]}, 4 times in a row in its place: stopping the service (the lines above "
        "say why its workers fail to start)",
    ]
    assert not logged(caplog, "ready")


def test_a_stop_as_a_worker_dies_starts_no_replacement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM right as a worker dies at start: no replacement, and the dead worker's code.

    The stop comes while the error line is written, before the replacement's start. The
    worker's exit 3 was no stop asked for, and nothing replaced it: the service exits 3,
    not 0, and its last line does not say the worker served or was replaced.
    """
    workers = Workers(supervised.dies_at_start)
    supervisor = Supervisor(workers, 1, metrics_dir=str(tmp_path))

    class StopOnError(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.ERROR:
                supervisor.terminate()

    stopper = StopOnError()
    logging.getLogger(SERVER_LOG).addHandler(stopper)
    try:
        with caplog.at_level(logging.INFO, logger=SERVER_LOG):
            status = supervisor.run()
    finally:
        logging.getLogger(SERVER_LOG).removeHandler(stopper)
    assert status == 3
    assert len(workers.started) == 1
    assert "starting a replacement in 0.5 s" in caplog.records[0].getMessage()
    assert caplog.records[-1].getMessage() == (
        "stopped; 1 worker(s) had died unasked while it ran (each logged as an error when it died)"
    )


def test_a_signal_after_the_run_ended_writes_to_no_closed_descriptor(tmp_path: Path) -> None:
    """A second SIGTERM while serve cleans up, after run() returned: no EBADF traceback.

    The handlers stay installed until the process exits; the wake pipe is closed, and its
    descriptor may already be another file's.
    """
    workers = Workers(supervised.dies_at_start)
    supervisor = Supervisor(workers, 1, metrics_dir=str(tmp_path))
    supervisor.terminate()  # stopped before it started: the worker is told at once
    supervisor.run()
    reused = os.open(tmp_path / "reused", os.O_WRONLY | os.O_CREAT)
    try:
        supervisor.terminate()
        supervisor.interrupt()
    finally:
        os.close(reused)
    assert (tmp_path / "reused").read_bytes() == b""


def test_how_a_worker_ended_names_its_exit_code_or_the_signal() -> None:
    """An exit code as a number; a signal by its name, even one Python has no name for."""
    assert how_it_ended(1) == "exited with code 1"
    assert how_it_ended(-signal.SIGKILL) == "was killed by SIGKILL"
    assert how_it_ended(-signal.SIGSEGV) == "was killed by SIGSEGV"
    assert how_it_ended(-63) == "was killed by signal 63"


def test_a_worker_that_had_served_is_replaced_without_a_pause() -> None:
    """Deaths at start pause the next start more each time; one after serving, none."""
    assert restart_delay(0) == 0.0
    assert [restart_delay(n) for n in range(1, START_ATTEMPTS + 1)] == [0.5, 1.0, 2.0, None]
