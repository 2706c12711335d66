"""Starting the project's own processes and waiting until they say they are ready.

Used by ``demo`` and by the end-to-end tests: a process is ready when it prints a line
starting with an agreed prefix (``sandbox listening on http://...``); every stdout line is
kept so callers can read the bound addresses, and stderr goes to a log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def announce(line: str) -> None:
    """Print a ready line (``grpc listening on ...``) in one write.

    ``--workers`` processes share stdout, and ``print`` writes the newline separately: with
    unbuffered output two workers' lines once ran together ("...:52247gateway listening
    on ..."). One write of under 4 KB to a pipe is atomic.
    """
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


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
) -> Process:
    """Start ``command`` and return once it printed a line starting with ``ready``."""
    stderr = log.open("ab")
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
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
        await started.stop(signal.SIGKILL)
        tail = await asyncio.to_thread(_tail, log)
        raise ProcessFailed(
            f"{' '.join(command[:4])} did not print {ready!r} within {ready_within}s; "
            f"stdout: {started.lines[-5:]}; stderr tail: {tail}"
        )
    exited.cancel()
    return started


def _tail(log: Path, size: int = 2_000) -> str:
    return log.read_text(errors="replace")[-size:] if log.exists() else ""
