"""Starting the project's own processes and waiting until they say they are ready.

Used by ``demo`` and by the end-to-end tests: a process is ready when it prints a line
starting with an agreed prefix (``sandbox listening on http://...``); every stdout line is
kept so callers can read the bound addresses, and stderr goes to a log file.

And for the processes' own side: :func:`announce` prints that line, and
:class:`ProcessServer` serves uvicorn apps (the gateway, the sandbox) until SIGTERM/SIGINT,
gives the requests in flight a grace period, then exits 0 (``EXIT_FORCED`` after a second
Ctrl-C, as ``serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amperity_signal.lifeline import PARENT_ENV

# What stops a process served by ``ProcessServer``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A stop forced by a second Ctrl-C, its calls in flight cut: 128 + SIGINT, as a shell says.
EXIT_FORCED = 128 + signal.SIGINT
# How long a stop waits for the requests it cut to send their 503s (and uvicorn's own
# wait after it, ``timeout_graceful_shutdown``: only a request ignoring its cut is left).
CUT_SECONDS = 1
# How often a stop looks whether its connections or requests are done.
_POLL_SECONDS = 0.05

_log = logging.getLogger(__name__)


def announce(line: str) -> None:
    """Print a ready line (``grpc listening on ...``) in one write.

    ``--workers`` processes share stdout, and ``print`` writes the newline separately: with
    unbuffered output two workers' lines once ran together ("...:52247gateway listening
    on ..."). One write of under 4 KB to a pipe is atomic.
    """
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


class ProcessServer(uvicorn.Server):
    """uvicorn's server, stopping on SIGTERM/SIGINT within a grace period, without dying of it.

    uvicorn re-raises the captured signal once it has shut down, so a standalone gateway or
    sandbox died of it (exit -15) even after a clean, graceful stop; now it exits 0, as
    ``serve`` does. Embedded, the service still hears the signal: asyncio's handlers are
    woken by the signal wakeup fd whichever Python-level handler is installed.

    A stop gives the requests in flight ``grace_seconds`` from its start, then cuts those
    left (``cut_requests``: each unanswered gets the app's 503), with one warning saying how
    many. uvicorn's own wait (``timeout_graceful_shutdown``, best ``CUT_SECONDS``) then finds
    nothing left; it cancelled what outlived it without waiting for the answers, and logged
    an error line for it ("Cancel 1 running task(s), timeout graceful shutdown exceeded").
    """

    def __init__(
        self, config: uvicorn.Config, *, grace_seconds: float, logger: logging.Logger = _log
    ) -> None:
        super().__init__(config)
        self.grace_seconds = grace_seconds
        # The stop's lines name the server they are about (the demo runs two in one process).
        self._log = logger
        # Whether a forced stop logs what it cut: ``serve`` says it in its own line, with the
        # gRPC calls it cut (``runner``); the sandbox's user, who pressed Ctrl-C twice, knows.
        self.reports_cut = True

    @property
    def requests_in_flight(self) -> int:
        """The HTTP requests being handled now (a forced stop cuts them)."""
        return len(self.server_state.tasks)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Stop on SIGTERM/SIGINT while serving, then restore the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may set handlers (uvicorn skips them too)
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop on the first signal; force the exit only on a second Ctrl-C (SIGINT).

        uvicorn forces on any SIGINT after a first signal. Under ``serve --workers`` (and
        ``demo``) a Ctrl-C reaches each process twice, from the terminal (SIGINT) and from
        the parent (SIGTERM), in either order: forced, a worker cancelled the requests in
        flight and logged the cancelled lifespan's traceback.
        """
        self._captured_signals.append(sig)
        self.should_exit = True
        if self._captured_signals.count(signal.SIGINT) >= 2:
            self.force_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, let the requests in flight finish within the grace, then stop.

        Forced (``force_exit``), uvicorn stops waiting for the requests in flight and skips
        the app's lifespan shutdown: the loop's end then cancelled both, each logged with
        its traceback, and a request cut before its answer got uvicorn's plain-text 500.
        They are cut by ``_finish`` instead, and the lifespan still ends.
        """
        deadline = asyncio.get_running_loop().time() + self.grace_seconds
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self._drain(deadline)
        await self._finish(deadline)
        await super().shutdown(sockets)
        if self.force_exit:
            await self.lifespan.shutdown()

    async def _drain(self, deadline: float) -> None:
        """What a stop does once it stopped accepting, before ``_finish``: nothing here.

        The gateway answers the requests still arriving on its open connections.
        """

    async def _finish(self, deadline: float) -> None:
        """Let the requests in flight finish until ``deadline``, the grace's end; cut the rest.

        What uvicorn's stop does next, within the grace rather than its fixed timeout:
        every connection is told to close (the idle ones at once, the others after their
        answer), and the stop waits for them. Those left at the deadline, or at a forced
        stop, are cut with one warning; uvicorn's wait then finds nothing left.
        """
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        if state.tasks and not self.force_exit and deadline > loop.time():
            self._log.info(
                "waiting for the requests in flight",
                extra={
                    "requests": len(state.tasks),
                    "grace_left": round(deadline - loop.time(), 1),
                },
            )
        await self._wait_until(lambda: not (state.connections or state.tasks), deadline)
        if self.force_exit:
            if self.reports_cut:
                self._log.warning(
                    "interrupted again: stopping now, the requests still in flight are cut",
                    extra={"requests": self.requests_in_flight},
                )
        elif state.tasks:
            self._log.warning(
                "grace period over: the requests still in flight are cut",
                extra={"requests": self.requests_in_flight, "grace_seconds": self.grace_seconds},
            )
        if state.connections or state.tasks:
            await self.cut_requests()

    async def _wait_until(self, settled: Callable[[], bool], deadline: float) -> None:
        """Look every 50 ms until ``settled()``, a forced stop, or the loop time ``deadline``."""
        loop = asyncio.get_running_loop()
        while not settled() and not self.force_exit:
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(_POLL_SECONDS, left))

    async def cut_requests(self) -> None:
        """Cancel the requests in flight: each unanswered gets the app's 503 (``AnswersWhenCut``).

        One whose answer had begun cannot be finished: its connection is closed first, so
        that uvicorn neither writes to it nor logs the answer as incomplete. So is one
        closing with the end of an answer its client has not taken (uvicorn would wait for
        it, then log).
        """
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            begun = cycle is not None and cycle.response_started and not cycle.response_complete
            if begun or connection.transport.is_closing():
                connection.transport.abort()
        tasks = list(self.server_state.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # An answer waits only on the socket taking it (the connection's flow control).
            await asyncio.wait(tasks, timeout=CUT_SECONDS)


def cut_by_the_server() -> bool:
    """Whether the request's own task was cancelled: only the server does that.

    Forgets the cancellation, so that the answer can still be sent. A ``CancelledError``
    raised by something else the request awaited is not the request's end.
    """
    task = asyncio.current_task()
    if task is None or not task.cancelling():
        return False
    task.uncancel()
    return True


class AnswersWhenCut:
    """An app whose HTTP requests, cut by a forced stop, end without a traceback.

    ``answer(scope)`` answers one whose answer had not begun (a 503 saying to send it
    again); one whose answer had begun just ends (``cut_requests`` closed its connection).
    uvicorn logged every cut request as the app failing, with its ``CancelledError``.
    """

    def __init__(self, app: ASGIApp, answer: Callable[[Scope], ASGIApp]) -> None:
        self.app = app
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope``; a cut HTTP request is answered by ``answer`` or just ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = False

        async def watched(message: Message) -> None:
            nonlocal begun
            begun = begun or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            if not cut_by_the_server():
                raise
            if not begun:
                await self._answer(scope)(scope, receive, send)


class ProcessFailed(RuntimeError):
    """A process exited, or never printed its ready line in time."""


@dataclass
class Process:
    """A started child process and what it has printed."""

    proc: asyncio.subprocess.Process
    log: Path
    lines: list[str] = field(default_factory=list)
    ready_line: str = ""
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def output_value(self, prefix: str) -> str:
        """The rest of the first stdout line starting with ``prefix``."""
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise KeyError(prefix)

    async def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> int:
        """Signal the process, wait for it (killing it after ``grace`` s); its exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
        return self.proc.returncode if self.proc.returncode is not None else -1


async def start_process(
    command: Sequence[str],
    *,
    ready: str,
    log: Path,
    ready_within: float = 30.0,
    env: dict[str, str] | None = None,
    name: str = "",
) -> Process:
    """Start ``command`` and return once it printed a line starting with ``ready``.

    ``name`` is what a :class:`ProcessFailed` calls it (default: the command's first words).
    """
    stderr = log.open("ab")
    # A shared lock on the log, held by the child through its stderr (the same open file)
    # until it and every process it starts with that stderr have exited: so a sweep can tell
    # a log still written from one left behind, though this process be killed (demo.py).
    # A file system without locks (ENOLCK) goes without: such a sweep keeps every log.
    with contextlib.suppress(OSError):
        fcntl.flock(stderr, fcntl.LOCK_SH)
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid()), **(env or {})},
    )
    stderr.close()
    started = Process(proc=proc, log=log)
    ready_seen = asyncio.Event()

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            started.lines.append(text)
            if text.startswith(ready) and not ready_seen.is_set():
                started.ready_line = text
                ready_seen.set()

    started._reader = asyncio.create_task(read())
    waiter = asyncio.create_task(ready_seen.wait())
    exited = asyncio.create_task(proc.wait())
    done, _ = await asyncio.wait(
        {waiter, exited}, timeout=ready_within, return_when=asyncio.FIRST_COMPLETED
    )
    if waiter not in done:
        waiter.cancel()
        exited.cancel()
        # Its own exit said first: that one had its reason, not a deadline, to stop it.
        ended = (
            f"exited with code {proc.returncode} before it was ready"
            if exited in done
            else f"did not print {ready!r} within {ready_within}s"
        )
        await started.stop(signal.SIGKILL)
        tail = await asyncio.to_thread(_tail, log)
        printed = f"; stdout: {started.lines[-5:]}" if started.lines else ""
        raise ProcessFailed(
            f"{name or ' '.join(command[:4])} {ended}{printed}; stderr tail: {tail}"
        )
    exited.cancel()
    return started


def _tail(log: Path, size: int = 2_000) -> str:
    return log.read_text(errors="replace")[-size:] if log.exists() else ""
