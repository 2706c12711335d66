"""The ``amperity-signal`` console script: :func:`amperity_signal.cli.main`, imported here.

The script used to import ``amperity_signal.cli`` itself, and a Ctrl-C in the second or so
its modules take to import (the start of ``make demo``) ended in a ``KeyboardInterrupt``
traceback, raised before ``main`` could catch it. Nothing is imported here before the
``try``.
"""

from __future__ import annotations

# 128 + SIGINT, as a shell says of a command that Ctrl-C stopped (and as ``cli.main`` does).
EXIT_INTERRUPTED = 130


def main() -> int:
    """Run the command line; a Ctrl-C before it catches one itself exits 130, quietly."""
    try:
        from amperity_signal.cli import main as run

        return run()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
