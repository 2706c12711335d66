"""Which ports the demo gives its sandbox and service."""

from __future__ import annotations

import asyncio
import socket

import pytest

from amperity_signal.demo import _free_port, _start_on_free_ports
from amperity_signal.processes import Process, ProcessFailed


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


def _taken_port_starts(stop: asyncio.Event, *, stop_on_failure: bool) -> list[tuple[int, ...]]:
    """The ports each start was made on, when every start fails on its port being taken."""
    made: list[tuple[int, ...]] = []

    async def start(ports: tuple[int, ...]) -> Process:
        made.append(ports)
        if stop_on_failure:
            stop.set()  # the Ctrl-C that reached the process being started, and the demo
        raise ProcessFailed(f"the demo's sandbox: {ports[0]} is already in use")

    with pytest.raises(ProcessFailed, match="already in use"):
        asyncio.run(_start_on_free_ports(start, (0,), stop))
    return made


def test_a_start_the_stop_ended_is_not_made_again_on_another_port() -> None:
    """Once ``stop`` is set, a start that failed on a taken port is not retried elsewhere.

    A Ctrl-C reaches the process being started as well as the demo; the retry loop did not
    look at ``stop`` and started another sandbox (or service) after it.
    """
    assert len(_taken_port_starts(asyncio.Event(), stop_on_failure=True)) == 1


def test_a_start_that_failed_on_a_taken_port_is_made_again_while_not_stopped() -> None:
    """Without a stop, a port taken at the bind moves the start to others, three times in all."""
    made = _taken_port_starts(asyncio.Event(), stop_on_failure=False)
    assert len(made) == 3
