"""A second Ctrl-C (SIGINT) ends `serve` at once, its calls in flight cut; exit 130.

The first SIGINT stops as SIGTERM does, giving the calls in flight ``grace_period``. An
operator who presses Ctrl-C again does not want to wait that out (here a minute, for an
Amperity that never answers); before, the second one changed nothing.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
import tomli_w

from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.unit.cli_support import integration

GRACE = 60.0
# An event asking to send its body once the gateway reads it: the "100 Continue" says the
# request is in flight. The body then never arrives, so it stays in flight until cut.
HALF_AN_EVENT = (
    b"POST /v1/t HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"X-Pipeline-Key: pk_web\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n"
)
EXITED_WITHIN = 30.0  # well under GRACE: only a forced stop exits by then


@pytest.fixture
def silent_amperity() -> Iterator[tuple[str, threading.Event]]:
    """An Amperity base URL that takes a request and never answers; set once one arrived."""
    arrived = threading.Event()
    held: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def accept() -> None:
            connection, _ = listener.accept()
            held.append(connection)
            if connection.recv(65536):
                arrived.set()

        threading.Thread(target=accept, daemon=True).start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", arrived
    for connection in held:
        connection.close()


def read_until(stream: IO[str] | None, wanted: str, count: int = 1) -> list[str]:
    """Lines of ``stream`` up to the ``count``-th holding ``wanted`` (or its end)."""
    assert stream is not None
    lines: list[str] = []
    while sum(wanted in line for line in lines) < count and (line := stream.readline()):
        lines.append(line)
    return lines


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_sigint_cuts_the_grace_period_short(
    tmp_path: Path, silent_amperity: tuple[str, threading.Event], workers: str
) -> None:
    """SIGINT, then SIGINT again with a Deliver still waiting on Amperity: exit 130 now.

    With ``--workers 2`` both signals go to the parent alone (``kill -INT``), which must
    then end workers that heard no Ctrl-C of their own.
    """
    base_url, arrived = silent_amperity
    table = integration(api_base_url=base_url, request_timeout=GRACE, max_retries=0)
    server = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"}
    config = tmp_path / "c.toml"
    config.write_text(
        tomli_w.dumps({"server": server | {"grace_period": GRACE}, "integrations": [table]})
    )
    command = [sys.executable, "-m", "amperity_signal.cli", "serve", "--config", str(config)]
    with subprocess.Popen(
        [*command, "--workers", workers], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            lines = read_until(process.stdout, "gateway listening", int(workers))
            target = next(x.split()[-1] for x in lines if x.startswith("grpc listening"))
            with grpc.insecure_channel(target) as channel:
                event = pb.Event(message_id="m-1", type="page", anonymous_id="anon-1")
                call = pb_grpc.AmperityServiceStub(channel).Deliver.future(
                    pb.DeliverRequest(integration_id="web", event=event), timeout=2 * GRACE
                )
                assert arrived.wait(30), "the Deliver never reached the fake Amperity"
                process.send_signal(signal.SIGINT)
                read_until(process.stderr, '"shutting down"')  # the first one was taken
                process.send_signal(signal.SIGINT)
                assert process.wait(EXITED_WITHIN) == 128 + signal.SIGINT
                error = call.exception(10)  # cut, not answered OK
                assert isinstance(error, grpc.Call)
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        finally:
            process.kill()


# How each process serving the gateway is started: ``serve`` alone or with workers, and the
# standalone ``gateway`` (its service is never reached: the requests held here wait for
# their bodies).
COMMANDS = {
    "serve": ["serve", "--workers", "1"],
    "serve --workers 2": ["serve", "--workers", "2"],
    "gateway": ["gateway", "--grpc-target", "127.0.0.1:9"],
}
# The line each logs as its stop begins: the service's, or the gateway's drain (a connection
# is open).
STOP_BEGUN = {"serve": '"shutting down"', "gateway": '"gateway draining'}


def serve(config: Path, mode: str) -> subprocess.Popen[str]:
    """The ``COMMANDS[mode]`` process with ``config``, its output piped."""
    command = [
        sys.executable,
        "-m",
        "amperity_signal.cli",
        *COMMANDS[mode],
        "--config",
        str(config),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gateway_address(process: subprocess.Popen[str], mode: str) -> tuple[str, int]:
    """Where the gateway ``process`` started listens, once every worker's is ready."""
    lines = read_until(process.stdout, "gateway listening", 2 if mode.endswith(" 2") else 1)
    address = next(x.split()[-1] for x in lines if x.startswith("gateway listening"))
    host, port = address.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def write_config(tmp_path: Path, grace_period: float) -> Path:
    """A configuration with one integration, ports picked at start, and ``grace_period``."""
    server = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"}
    config = tmp_path / "c.toml"
    config.write_text(
        tomli_w.dumps(
            {"server": server | {"grace_period": grace_period}, "integrations": [integration()]}
        )
    )
    return config


def http_answer(connection: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """The status line, headers (lower-case) and body of the one answer on ``connection``."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := connection.recv(65536)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    while len(body) < int(headers.get("content-length", 0)) and (chunk := connection.recv(65536)):
        body += chunk
    return status_line, headers, body


def stop_with_a_request_in_flight(
    config: Path, mode: str, stop: Callable[[subprocess.Popen[str]], None]
) -> tuple[int, str]:
    """Start ``mode``, ``stop`` it with a request in flight: its exit code and stderr.

    The request must get the gateway's 503 (the stop cut it), and no traceback be logged.
    """
    with serve(config, mode) as process:
        try:
            with socket.create_connection(gateway_address(process, mode), timeout=30) as connection:
                connection.sendall(HALF_AN_EVENT)
                assert connection.recv(64).startswith(b"HTTP/1.1 100 Continue")
                stop(process)
                status_line, headers, body = http_answer(connection)
            status = process.wait(EXITED_WITHIN)
            assert process.stderr is not None
            log = process.stderr.read()
        finally:
            process.kill()
    assert status_line == "HTTP/1.1 503 Service Unavailable"
    assert headers["connection"] == "close"
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "Traceback" not in log
    return status, log


@pytest.mark.parametrize("mode", COMMANDS)
def test_a_forced_stop_answers_a_cut_request_503_and_logs_no_traceback(
    tmp_path: Path, mode: str
) -> None:
    """A gateway request in flight at a second SIGINT: a JSON 503, Connection: close; exit 130.

    Before, the loop's end cancelled it: uvicorn logged a CancelledError traceback and
    answered a plain-text 500, and a cancelled lifespan logged another; under --workers the
    workers, never told of the second SIGINT, were killed: the request got no answer. The
    standalone gateway exited 0, as if its stop had been graceful.
    """

    def interrupt_twice(process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGINT)
        read_until(process.stderr, STOP_BEGUN[mode.partition(" ")[0]])
        process.send_signal(signal.SIGINT)

    status, log = stop_with_a_request_in_flight(
        write_config(tmp_path, GRACE), mode, interrupt_twice
    )
    assert status == 128 + signal.SIGINT
    assert "CancelledError" not in log
    cut = [json.loads(x) for x in log.splitlines() if "interrupted again" in x]
    assert sum(line["requests"] for line in cut) == 1, cut


@pytest.mark.parametrize("mode", COMMANDS)
def test_a_request_still_in_flight_at_the_grace_end_gets_a_503_and_no_error_line(
    tmp_path: Path, mode: str
) -> None:
    """SIGTERM, a request in flight past ``grace_period``: a JSON 503, one warning, exit 0.

    Before, the gateway gave it uvicorn's fixed 5 s after its drain, whatever the grace
    (here 7 s in, with a grace of 2 s; ~10 s in with one of 60 s), and uvicorn logged an
    error line, "Cancel 1 running task(s), timeout graceful shutdown exceeded".
    """

    def terminate(process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGTERM)

    status, log = stop_with_a_request_in_flight(write_config(tmp_path, 2.0), mode, terminate)
    assert status == 0
    assert "Cancel" not in log
    assert not [line for line in log.splitlines() if json.loads(line)["level"] == "error"]
    cut = [json.loads(x) for x in log.splitlines() if "grace period over" in x]
    assert [(line["level"], line["requests"]) for line in cut] == [("warning", 1)], cut
