"""The directory of the local socket: the embedded gateway's way to the service under TLS.

With TLS on the gRPC port (mutual TLS above all: this process holds no client certificate
the port would take), the embedded gateway's streaming calls go to a Unix socket with gRPC
local credentials instead (``Service.listen``). Those credentials check nothing but that the
connection is a Unix socket's, so what guards it is the directory: ``mkdtemp`` makes it
mode 700, and only the service's user (and root, who can read its key anyway) can connect.

``serve`` removes the directory when it stops; one a SIGKILL left is removed by a later start
(``pid_dirs``) once its process is gone and nothing answers on its socket.
"""

from __future__ import annotations

import errno
import os
import socket

from amperity_signal.pid_dirs import PidDirs

PREFIX = "amperity-signal-grpc-"
SOCKET_NAME = "grpc.sock"
MAX_SOCKET_PATH = 107
"""The longest path (bytes) a Unix socket can be bound at on Linux."""


def _answers(directory: str) -> bool:
    """Whether a server listens on any socket in ``directory`` (none there: no).

    The TLS local socket (``grpc.sock``) or the workers' Live Events sockets
    (``worker-<n>.sock``, in a directory the ``--workers`` parent made): a worker its killed
    parent left serving keeps them. A service in another PID namespace sharing $TMPDIR (its
    pid unknown here) keeps its own.
    """
    try:
        names = [name for name in os.listdir(directory) if name.endswith(".sock")]
    except OSError:
        return True  # what cannot be listed is kept
    return any(_listening(os.path.join(directory, name)) for name in names)


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError as error:
            return error.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


LOCAL_SOCKET_DIRS = PidDirs(PREFIX, "local socket", in_use=_answers)


def make_local_socket_dir() -> str:
    """A new directory (mode 700) for one process's local socket, after a sweep of stale ones."""
    return LOCAL_SOCKET_DIRS.make()
