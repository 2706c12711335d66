"""What the workers of ``test_supervisor``'s real processes do (spawned: so importable).

Each writes the files prometheus-client's multiprocess mode names for a process (a gauge's
that counts only while it lives, a counter's), so a test sees which ones the parent removes.
"""

from __future__ import annotations

import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

# Longer than any test: a worker ends when the test's stop (or SIGKILL) ends it.
SERVE_SECONDS = 600
EXIT_AT_START = 3


def metrics_files(metrics_dir: str, pid: int) -> list[Path]:
    """The gauge (``livemax``) and counter files process ``pid`` writes in ``metrics_dir``."""
    return [Path(metrics_dir) / f"{kind}_{pid}.db" for kind in ("gauge_livemax", "counter")]


def serves(reports: Connection, metrics_dir: str) -> None:
    """Write its metrics files, report that it serves, then serve until ended."""
    from amperity_signal.supervisor import Ready

    for path in metrics_files(metrics_dir, os.getpid()):
        path.touch()
    reports.send(Ready("127.0.0.1:50051", "http://127.0.0.1:8080"))
    time.sleep(SERVE_SECONDS)


def dies_at_start(_reports: Connection) -> None:
    """Exit before reporting anything, as a worker that cannot start."""
    sys.exit(EXIT_AT_START)
