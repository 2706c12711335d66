"""Which ports the demo gives its sandbox and service."""

from __future__ import annotations

import socket

import pytest

from amperity_signal.demo import _free_port


def test_a_port_a_stopped_demo_left_in_time_wait_is_still_the_demos_choice() -> None:
    """Connections the last demo closed (TIME-WAIT) do not move the next demo off its port.

    The sandbox and service bind with SO_REUSEADDR, as the kernel lets them over TIME-WAIT;
    the demo's look did not, found the port taken, and gave a demo run straight after
    another a random one.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first: its end waits in TIME-WAIT
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # the port is in TIME-WAIT, as after a demo
    assert _free_port(port) == port
