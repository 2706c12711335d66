"""The directory of the local socket: the embedded gateway's way to the service under TLS.

With TLS on the gRPC port (mutual TLS above all: this process holds no client certificate
the port would take), the embedded gateway's streaming calls go to a Unix socket with gRPC
local credentials instead (``Service.listen``). Those credentials check nothing but that the
connection is a Unix socket's, so what guards it is the directory: ``mkdtemp`` makes it
mode 700, and only the service's user (and root, who can read its key anyway) can connect.

``serve`` removes the directory when it stops, but a service killed with SIGKILL (the
OOM killer, a container runtime's timeout) cannot: each start therefore first removes the
directories of this user's services that are gone, so that crashes leave no pile in /tmp.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import stat
import tempfile

log = logging.getLogger("amperity_signal.server")

PREFIX = "amperity-signal-grpc-"
SOCKET_NAME = "grpc.sock"
MAX_SOCKET_PATH = 107
"""The longest path (bytes) a Unix socket can be bound at on Linux."""


def make_local_socket_dir() -> str:
    """A new directory (mode 700) for one process's local socket, after a sweep of stale ones.

    Its name carries the process id, so a later start can tell a dead owner's from a live one.
    """
    parent = tempfile.gettempdir()
    removed = remove_stale_dirs(parent)
    if removed:
        log.info(
            f"removed {removed} local socket director{'y' if removed == 1 else 'ies'} that "
            f"stopped services left in {parent}"
        )
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)


def remove_stale_dirs(parent: str) -> int:
    """Remove this user's local socket directories in ``parent`` whose service is gone.

    Gone: the process named in the directory's name no longer runs and nothing answers on
    its socket, so a service in another PID namespace sharing ``parent`` keeps its own. A
    name without a process id is not one this module makes, and is left. Returns how many
    were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(PREFIX) and _is_stale(entry):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += not os.path.lexists(entry.path)
    return removed


def _is_stale(entry: os.DirEntry[str]) -> bool:
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        return False
    pid_text, dash, _ = entry.name.removeprefix(PREFIX).partition("-")
    if not (dash and pid_text.isdigit()) or _runs(int(pid_text)):
        return False  # not a name this module makes, or its process still runs
    return not _answers(os.path.join(entry.path, SOCKET_NAME))


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that id: not ours to judge
    return True


def _answers(path: str) -> bool:
    """Whether a server listens on the Unix socket ``path`` (a missing one does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError as error:
            return error.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True
