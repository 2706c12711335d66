"""The gateway's stop: it stops accepting, then drains its keep-alive connections.

uvicorn closed every idle keep-alive connection as its stop began, and a request a client
wrote on one at that moment got no answer. A real server on a real socket, stopped while a
raw client holds connections open: what each connection gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amperity_signal.gateway import create_gateway_app, server
from amperity_signal.gateway.server import GatewayServer, bind_socket, gateway_server
from tests.support import read_http_answer

from .conftest import gateway_settings
from .fakes import KNOWN_KEY, RunningService

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
# An event asking to send its body once the gateway reads it: the "100 Continue" says the
# request is in flight. The body then never arrives, so it stays in flight until cut.
HALF_AN_EVENT = (
    b"POST /v1/t HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"X-Pipeline-Key: " + KNOWN_KEY.encode() + b"\r\nExpect: 100-continue\r\n"
    b"Content-Length: 100\r\n\r\n"
)
# Its body, sent late to hold the request in flight: a track event, padded to 100 bytes.
ITS_BODY = json.dumps({"event": "Viewed", "anonymousId": "anon-1", "messageId": "m-1"}).encode()
ITS_BODY += b" " * (100 - len(ITS_BODY))


@dataclass
class Stoppable:
    """A gateway served on 127.0.0.1:0 that the test stops itself."""

    server: GatewayServer
    task: asyncio.Task[None]
    port: int

    def stop_begun(self) -> bool:
        """Whether the stop has closed the listening socket (the first thing it does)."""
        return not self.server.servers[0].is_serving()

    async def begin_stop(self) -> None:
        """Ask the server to stop, and return once it no longer accepts connections."""
        self.server.should_exit = True
        while not self.stop_begun():
            assert not self.task.done(), "the gateway stopped before the test looked"
            await asyncio.sleep(0.005)


async def held_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with ``HALF_AN_EVENT`` in flight: the gateway waits for its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_AN_EVENT)
    continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert continued == b"HTTP/1.1 100 Continue\r\n\r\n"
    return reader, writer


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    """Where the demo's assets are served from: a ``datafly.js`` of 32 MB."""
    (tmp_path / "datafly.js").write_bytes(b"/" * (32 << 20))
    return tmp_path


@pytest.fixture
async def gateway(service: RunningService, static_dir: Path) -> AsyncIterator[Stoppable]:
    """The gateway with the test settings and a grace period of 1 s: a 1 s drain."""
    async with serving(service, static_dir, grace_period=1.0) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(
    service: RunningService, static_dir: Path, *, grace_period: float
) -> AsyncIterator[Stoppable]:
    """The gateway with the test settings and ``grace_period``, until the block ends."""
    settings = gateway_settings(grace_period=grace_period)
    app = create_gateway_app(settings=settings, grpc_target=service.target, static_dir=static_dir)
    sock = bind_socket("127.0.0.1:0")
    uvicorn_server = gateway_server(app, settings)
    assert isinstance(uvicorn_server, GatewayServer)
    task = asyncio.create_task(uvicorn_server.serve(sockets=[sock]))
    while not uvicorn_server.started:
        assert not task.done(), "the gateway failed to start"
        await asyncio.sleep(0.01)
    try:
        yield Stoppable(uvicorn_server, task, sock.getsockname()[1])
    finally:
        uvicorn_server.should_exit = True
        await task
        sock.close()


async def test_a_request_on_an_idle_keep_alive_connection_after_the_stop_began_is_answered(
    gateway: Stoppable,
) -> None:
    """Sent once the stop closed the listener: a full answer, `Connection: close`, then EOF.

    Before the drain the stop closed the idle connection at once: the request got no
    answer (httpx: "Server disconnected without sending a response").
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        for stream_reader, stream_writer in ((reader, writer), (idle_reader, idle_writer)):
            stream_writer.write(HEALTHZ)
            status, headers = await read_http_answer(stream_reader)
            assert status == b"HTTP/1.1 200 OK"
            assert "connection" not in headers  # kept alive while serving

        await gateway.begin_stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(HEALTHZ)
        status, headers = await read_http_answer(reader)
        assert status == b"HTTP/1.1 200 OK"
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed after the answer"

        # The other connection stayed idle: closed once the drain ends, and the stop ends.
        assert await asyncio.wait_for(idle_reader.read(), 15) == b""
        await asyncio.wait_for(gateway.task, 15)
    finally:
        for stream_writer in (writer, idle_writer):
            stream_writer.close()


async def test_a_forced_stop_answers_a_request_in_flight_503_and_logs_no_error(
    gateway: Stoppable, caplog: pytest.LogCaptureFixture
) -> None:
    """Forced mid-request: a JSON 503 with Connection: close and Retry-After, the lifespan ends.

    Before, uvicorn stopped waiting and skipped the lifespan; the loop's end then cancelled
    the request and the lifespan, each logged with a CancelledError traceback, and the
    request got uvicorn's plain-text 500.
    """
    caplog.set_level(logging.INFO)
    reader, writer = await held_request(gateway.port)
    try:
        await gateway.begin_stop()
        gateway.server.force_exit = True  # what a second Ctrl-C does
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        assert status_line == "HTTP/1.1 503 Service Unavailable"
        assert headers["connection"] == "close"
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed after the answer"
        await asyncio.wait_for(gateway.task, 10)
    finally:
        writer.close()
    assert not gateway.server.server_state.tasks
    assert "Application shutdown complete." in caplog.messages
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "interrupted again: stopping now, the requests still in flight are cut" in (
        caplog.messages
    )


async def test_a_forced_stop_closes_an_answer_it_cuts_half_way_without_an_error(
    gateway: Stoppable, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer begun but stalled (its client not reading) is cut: connection closed, no log.

    Before, the forced stop left the request waiting on its client's socket past the
    gateway's end, the connection open.
    """
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # stalls the answer soon
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", gateway.port))
    reader, writer = await asyncio.open_connection(sock=client, limit=4096)
    try:
        writer.write(b"GET /demo/datafly.js HTTP/1.1\r\nHost: gateway\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK")
        caplog.set_level(logging.INFO)
        await gateway.begin_stop()
        gateway.server.force_exit = True  # what a second Ctrl-C does
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                received += len(chunk)
        assert received < 32 << 20, "the cut answer must not look complete"
        await asyncio.wait_for(gateway.task, 10)
    finally:
        writer.close()
    assert not gateway.server.server_state.tasks
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_request_still_in_flight_at_the_grace_end_is_cut_503_with_one_warning(
    gateway: Stoppable, caplog: pytest.LogCaptureFixture
) -> None:
    """The grace period (1 s here) over, the request gets the 503 and one warning is logged.

    Before, uvicorn cut it 5 s after the drain, whatever the grace (here 6 s into the
    stop), and logged an error: "Cancel 1 running task(s), timeout graceful shutdown
    exceeded".
    """
    caplog.set_level(logging.INFO)
    reader, writer = await held_request(gateway.port)
    try:
        await gateway.begin_stop()
        status, headers = await asyncio.wait_for(read_http_answer(reader), 15)
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert headers["connection"] == "close"
        await asyncio.wait_for(gateway.task, 10)
    finally:
        writer.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    cut = [r for r in caplog.records if r.getMessage().startswith("grace period over")]
    assert [(r.levelno, getattr(r, "requests", None)) for r in cut] == [(logging.WARNING, 1)]
    assert [r.name for r in cut] == ["amperity_signal.gateway.server"]  # not the sandbox's


async def test_a_request_in_flight_past_uvicorns_graceful_timeout_is_answered_within_the_grace(
    service: RunningService,
    static_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request finishing 6.5 s into a stop with an 8 s grace gets its answer, not a 503.

    Before, uvicorn gave the requests in flight a fixed 5 s once the drain had ended,
    whatever the grace period: a request was cut ~10 s into a stop with a 60 s grace. A
    drain of 0.5 s (the keep-alive timeout it is bound by) keeps this test short: uvicorn's
    5 s ended 5.6 s into the stop.
    """
    monkeypatch.setattr(server, "_KEEP_ALIVE_SECONDS", 0.5)
    caplog.set_level(logging.INFO)
    async with serving(service, static_dir, grace_period=8.0) as gateway:
        reader, writer = await held_request(gateway.port)
        try:
            await gateway.begin_stop()
            await asyncio.sleep(6.5)  # past uvicorn's 5 s after the drain, within the grace
            writer.write(ITS_BODY)
            status, headers = await asyncio.wait_for(read_http_answer(reader), 10)
            assert status == b"HTTP/1.1 200 OK", headers
            assert headers["connection"] == "close"
            await asyncio.wait_for(gateway.task, 10)
        finally:
            writer.close()
    assert [d.request.event.message_id for d in service.fake.delivered] == ["m-1"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
