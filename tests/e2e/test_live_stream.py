"""/live/stream over real sockets: no record missed at its start, no stop held by it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from amperity_signal.processes import Process, start_process
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import CLI, Stack
from tests.gateway.fakes import RunningService, live_record, start_fake_service
from tests.support import integration_dict, message_id, mint_keys

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "adm-9d41c7e2a6b3f058-stream"
LONG_WAIT = 60.0
"""A bound no passing test comes near; it only turns a hang into a failure."""
KERNEL_SEND_BUFFER_MAX = Path("/proc/sys/net/ipv4/tcp_wmem")
RECORD_BYTES = 3_900_000
"""One record larger than the most a socket's kernel send buffer here takes plus asyncio's
64 KiB high-water mark, and within the gateway's 4 MiB gRPC message limit: writing it to
a client that reads nothing leaves the gateway's writes paused."""


@pytest.mark.parametrize("standalone", [False, True], ids=["embedded", "standalone"])
async def test_a_delivery_made_once_the_stream_answers_is_on_the_stream(
    stack: Stack, standalone: bool
) -> None:
    """Deliver as soon as /live/stream's headers arrive: the stream carries that record.

    The gateway answered before its WatchDeliveries call was subscribed, so a page that
    delivered on ``open`` could miss its record; a second delivery ends the read.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, server={"admin_token": ADMIN_TOKEN})
    url = service.http_url
    if standalone:
        url = (await stack.gateway(service)).output_value("gateway listening on ")
    first, second = (
        pb.Event(message_id=message_id(), type="page", anonymous_id="anon_open_01")
        for _ in range(2)
    )
    seen: list[str] = []
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", "/live/stream?replay=0", headers=headers) as stream,
    ):
        assert stream.status_code == 200  # the headers, and nothing of the body read yet
        for event in (first, second):
            await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=event))
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                seen.append(line.removeprefix("id: "))
            if second.message_id in seen:
                break
    assert seen == [first.message_id, second.message_id]


@pytest.fixture
async def fake_service() -> AsyncIterator[RunningService]:
    """The gateway tests' fake AmperityService on 127.0.0.1:0, its watches kept open."""
    running = await start_fake_service()
    running.fake.watching = True
    try:
        yield running
    finally:
        await running.server.stop(None)


def _kernel_send_buffer_max() -> int:
    """The most bytes a TCP socket's send buffer may grow to here (tcp_wmem's maximum)."""
    return int(KERNEL_SEND_BUFFER_MAX.read_text().split()[2])


def _log_lines(process: Process) -> list[dict[str, Any]]:
    """A process's JSON log lines."""
    return [json.loads(line) for line in process.log.read_text().splitlines()]


async def _peek_until(sock: socket.socket, wanted: bytes) -> bytes:
    """What has arrived on ``sock``, left unread, once it holds ``wanted``."""
    while True:
        try:
            seen = sock.recv(1 << 16, socket.MSG_PEEK)
        except BlockingIOError:
            seen = None  # nothing has arrived yet
        assert seen != b"", "the gateway closed the connection"
        if seen is not None and wanted in seen:
            return seen
        await asyncio.sleep(0.01)


async def test_sigterm_drops_a_live_stream_whose_client_stopped_reading(
    stack: Stack, fake_service: RunningService
) -> None:
    """A stream nobody reads does not hold the gateway's stop: it is dropped, no error logged.

    Its ``failure`` farewell waited for the socket to drain, which never happens, so the
    stop waited out uvicorn's 5 s graceful timeout and then cancelled the stream with an
    error. The assertion is that error's absence, not a time.
    """
    assert _kernel_send_buffer_max() <= 4 * 1024 * 1024, (
        "a larger send buffer could take RECORD_BYTES"
    )
    config = stack.workdir / "gateway.toml"
    table = integration_dict("http://127.0.0.1:9", mint_keys())
    server = {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"}
    tables = {"server": {**server, "admin_token": ADMIN_TOKEN}, "integrations": [table]}
    config.write_text(tomli_w.dumps(tables))
    gateway = await start_process(
        [
            *CLI,
            "gateway",
            "--config",
            str(config),
            "--grpc-target",
            fake_service.target,
            "--http-address",
            "127.0.0.1:0",
        ],
        ready="gateway listening on ",
        log=stack.workdir / "gateway.log",
    )
    stack.processes.append(gateway)
    url = httpx.URL(gateway.output_value("gateway listening on "))
    with socket.socket() as client:
        # A small receive window that the client never opens again: it reads nothing.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((url.host, url.port or 80))
        client.setblocking(False)
        client.sendall(
            b"GET /live/stream HTTP/1.1\r\nHost: gateway\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
        )
        assert b" 200 " in await _peek_until(client, b"retry: 3000")
        record = live_record("msg-too-big-to-read")
        record.payload.update({"note": "x" * RECORD_BYTES})
        fake_service.fake.publish(record)
        # Its first bytes came: the gateway has written the whole record, and most of it
        # waits in the gateway's buffer for a client that reads nothing.
        await _peek_until(client, b"event: delivery")
        gateway.proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(gateway.proc.wait(), LONG_WAIT)
    assert exit_code == 0
    lines = _log_lines(gateway)
    assert [line for line in lines if line.get("level") in ("error", "critical")] == []
    dropped = "Live Events stream dropped at the stop: its client was not reading"
    assert dropped in [line.get("msg") for line in lines]
