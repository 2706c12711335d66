"""Whether the service can listen where it is configured to, and why not, in the config's words.

gRPC reports only that binding failed (after a line of its own); asking the operating
system first gives the reason (in use, not permitted, not this machine's), named by the
setting, before anything is started.
"""

from __future__ import annotations

import errno
import socket

from amperity_signal.errors import AmperitySignalError, ConfigProblem
from amperity_signal.gateway.server import split_address


class CannotListen(AmperitySignalError):
    """The service cannot listen on a configured address; the message names the setting."""

    reason = "CANNOT_LISTEN"


def cannot_listen(
    setting: str, address: str, error: OSError | ValueError, *, shared: bool = False
) -> CannotListen:
    """The error for ``address`` (the value of ``setting``) that failed to bind with ``error``.

    Args:
        setting: The configuration field, e.g. ``server.grpc_address``.
        address: Its value, ``host:port``.
        error: Why binding failed.
        shared: The bind asked to share the port (SO_REUSEPORT): in use means the process
            listening there does not share it.
    """
    code = error.errno if isinstance(error, OSError) else None
    if code == errno.EADDRINUSE and shared:
        problem = (
            f"{address} is already in use by a process that does not share it (a serve "
            "started without --handoff or --workers, another program, or another user)."
        )
        fix = (
            f"stop that process, or set {setting} to a free port; a serve started with "
            "--handoff can later be replaced without a gap."
        )
    elif code == errno.EADDRINUSE:
        problem = f"{address} is already in use by another process."
        fix = f"stop the other process, or set {setting} to a free port."
    elif code == errno.EACCES:
        problem = f"not permitted to listen on {address}."
        fix = f"set {setting} to a port above 1023, or run with the right to bind it."
    else:
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
        problem = f"cannot listen on {address} ({reason})."
        fix = f"set {setting} to an address of this machine (e.g. 127.0.0.1) and a free port."
    return CannotListen(
        str(ConfigProblem(setting, problem, fix)), metadata={"setting": setting, "address": address}
    )


def check_bindable(setting: str, address: str, *, reuse_port: bool) -> None:
    """Bind (without listening) and release ``address``, to say why it cannot be used.

    gRPC reports only that binding failed, after logging its own error line; asking the
    operating system first gives the reason (in use, not permitted, not this machine's).
    Like gRPC, one bindable address of those the host resolves to is enough.

    Raises:
        CannotListen: No address the host resolves to can be bound.
    """
    try:
        host, port = split_address(address)
        resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise cannot_listen(setting, address, error) from None
    failures: list[OSError] = []
    for family, kind, protocol, _, socket_address in resolved:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                probe.bind(socket_address)
        except OSError as error:
            failures.append(error)
        else:
            return
    raise cannot_listen(setting, address, failures[0], shared=reuse_port)


def one_free_port(address: str) -> str:
    """``address`` with port 0 replaced by a port free now, which every worker then binds."""
    host, port = split_address(address)
    if port:
        return address
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        free = probe.getsockname()[1]
    return f"{address.rpartition(':')[0]}:{free}"
