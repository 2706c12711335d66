"""A started process's tie to the one that started it (``processes.start_process``).

A demo (or a test run) killed with SIGKILL left its sandbox and service running, holding
their ports and writing their logs, until someone found and killed them. ``start_process``
names itself in :data:`PARENT_ENV`; the child, at its start (``cli.main``), asks Linux to
send it SIGTERM when that process dies (``PR_SET_PDEATHSIG``), and so stops gracefully, as
at a Ctrl-C. The child sets it, not ``start_process`` between fork and exec: a
``preexec_fn`` runs Python, and the at-fork handlers of grpc's threads, in the forked copy
of a process serving gRPC (a CI run saw children die of it before their ready line).

Linux sends the signal when the *thread* that started the child ends, not only the
process: ``start_process`` runs on its event loop's thread, which here lives as long as
the process does; a loop run on a short-lived thread would stop its children with it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import MutableMapping

PARENT_ENV = "AMPERITY_SIGNAL_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_parent(environ: MutableMapping[str, str], parent: int) -> bool:
    """Be sent SIGTERM when the process :data:`PARENT_ENV` names dies; whether it is set.

    The variable is removed, so that what this process starts in turn does not inherit it.
    Nothing is set when it names another process than ``parent`` (this one's parent now:
    the starter died already, or the variable came down from a grandparent), or off Linux.
    """
    named = environ.pop(PARENT_ENV, None)
    if sys.platform != "linux" or named is None or named != str(parent):
        return False
    import ctypes  # noqa: PLC0415 (a started process only: not on every command's path)

    status: int = ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    return status == 0
