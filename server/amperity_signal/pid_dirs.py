"""Temporary directories named for the process that makes them, and the sweep of dead ones.

``serve`` makes directories in $TMPDIR (the local socket's, the workers' metrics files), as
``demo`` does (its logs and configuration), and removes them when it stops, but a process
killed with SIGKILL (the OOM killer, a container runtime's timeout) cannot. Each such
directory's name therefore carries its maker's process id, and each start first removes
this user's directories of the same kind whose maker is gone and which nothing else still
uses, so that crashes leave no pile in /tmp.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("amperity_signal.server")


@dataclass(frozen=True)
class PidDirs:
    """One kind of directory: ``{prefix}{pid}-{random}``, mode 700.

    Attributes:
        prefix: The start of every such directory's name.
        kind: What they hold, for the log line, e.g. "local socket".
        in_use: Whether a directory whose maker is gone is still used all the same (by
            processes its name does not name), and so kept.
    """

    prefix: str
    kind: str
    in_use: Callable[[str], bool]

    def make(self) -> str:
        """A new directory of this process's own, after a sweep of the stale ones."""
        parent = tempfile.gettempdir()
        removed = self.remove_stale(parent)
        if removed:
            log.info(
                f"removed {removed} {self.kind} director{'y' if removed == 1 else 'ies'} "
                f"that stopped services left in {parent}"
            )
        return tempfile.mkdtemp(prefix=f"{self.prefix}{os.getpid()}-", dir=parent)

    def remove_stale(self, parent: str) -> int:
        """Remove this user's directories of this kind in ``parent`` whose maker is gone.

        Gone: the process named in the directory's name no longer runs, and ``in_use``
        says nothing else uses it. A name without a process id is not one ``make`` gives,
        and is left. Returns how many were removed.
        """
        removed = 0
        try:
            entries = list(os.scandir(parent))
        except OSError:
            return 0
        for entry in entries:
            if entry.name.startswith(self.prefix) and self._is_stale(entry):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += not os.path.lexists(entry.path)
        return removed

    def _is_stale(self, entry: os.DirEntry[str]) -> bool:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return False
        pid_text, dash, _ = entry.name.removeprefix(self.prefix).partition("-")
        if not (dash and pid_text.isdigit()) or runs(int(pid_text)):
            return False  # not a name this module gives, or its maker still runs
        return not self.in_use(entry.path)


def runs(pid: int) -> bool:
    """Whether a process of id ``pid`` runs (another user's counts: not ours to judge).

    A zombie does not: it holds no file or socket, however long its parent (init, for an
    orphan, on its own schedule) takes to reap it. A pid the kernel has given again to another
    process keeps its old owner's directory until that one exits too: a removal delayed,
    never a directory in use removed.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state follows the command's name, in parentheses that it may hold
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat_file:
            state = stat_file.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
