"""Requests whose head or body arrive too slowly are cut (slowloris), on a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from amperity_signal.gateway import GatewaySettings, create_gateway_app
from amperity_signal.metrics import Metrics
from tests.support import integration_dict, mint_keys, settings_for

from .conftest import gateway_settings, served
from .fakes import KNOWN_KEY, RunningService
from .test_socket import Served

TIMEOUT = 0.5
HEAD = f"Host: gateway.test\r\nX-Pipeline-Key: {KNOWN_KEY}\r\n".encode()


@pytest.fixture
async def gateway_socket(service: RunningService) -> AsyncIterator[Served]:
    """The gateway on 127.0.0.1:0 with a half-second request read timeout."""
    metrics = Metrics()
    settings = gateway_settings(request_read_timeout=TIMEOUT)
    app = create_gateway_app(settings=settings, grpc_target=service.target, metrics=metrics)
    async with served(app, settings) as url:
        yield Served(url, metrics)


async def _answer_after(gateway: Served, sent: bytes) -> tuple[bytes, float]:
    """Everything the gateway writes on a connection given ``sent``, and when it closed."""
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    try:
        writer.write(sent)
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 10)
        return answer, time.monotonic() - started
    finally:
        writer.close()


def _error(answer: bytes) -> dict[str, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nconnection: close" in head
    error: dict[str, str] = json.loads(body)["error"]
    return error


async def test_an_unfinished_head_gets_a_408_and_its_connection_closed(
    gateway_socket: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A head that stops half-way is answered 408 JSON once the timeout passes, then closed.

    uvicorn has no such timeout: a trickled head held its connection and buffers for ever.
    """
    caplog.set_level(logging.DEBUG)
    answer, waited = await _answer_after(
        gateway_socket, b"GET /v1/enrich?provider=amperity HTTP/1.1\r\nHost: x\r\nX-Pipe"
    )
    assert _error(answer)["code"] == "REQUEST_TIMEOUT"
    assert TIMEOUT <= waited < TIMEOUT + 2
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []


async def test_a_body_that_stops_arriving_gets_a_408_and_the_app_hears_it_end(
    gateway_socket: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Content-Length 100, 4 bytes sent: 408 after the timeout; the app counts a 499."""
    caplog.set_level(logging.DEBUG)
    head = b"POST /v1/t HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
    answer, waited = await _answer_after(
        gateway_socket, head + b"Content-Length: 100\r\n\r\n" + b'{"ev'
    )
    assert _error(answer)["code"] == "REQUEST_TIMEOUT"
    assert TIMEOUT <= waited < TIMEOUT + 2
    assert await gateway_socket.wait_observed("/v1/t") == {"499": 1.0}
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    gateway_socket: Served,
) -> None:
    """No request began, so none is answered: the idle connection is just closed."""
    answer, waited = await _answer_after(gateway_socket, b"")
    assert answer == b""
    assert waited < TIMEOUT + 2


async def test_a_keep_alive_connection_of_quick_requests_outlives_the_timeout(
    gateway_socket: Served,
) -> None:
    """The timeout is per request: ten quick requests over 2 s on one connection all pass."""
    reader, writer = await asyncio.open_connection(gateway_socket.host, gateway_socket.port)
    try:
        for _ in range(10):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if b"content-length" in line
            )
            await reader.readexactly(length)
            await asyncio.sleep(TIMEOUT / 2)
    finally:
        writer.close()


async def test_a_request_the_app_takes_long_to_answer_is_not_cut() -> None:
    """Only the client's sending is timed: an answer taking 3x the timeout still arrives."""

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(3 * TIMEOUT)
        length = [(b"content-length", b"4")]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": b"done"})

    app = Starlette(routes=[Mount("/slow", slow)])
    app.state.end_streams = lambda: None
    app.state.count_refused_connection = lambda limit: None
    settings = gateway_settings(request_read_timeout=TIMEOUT)
    async with served(app, settings) as url:
        gateway = Served(url, Metrics())
        status_line, _, body = await gateway.exchange(
            b"POST /slow/ HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
    assert status_line == b"HTTP/1.1 200 OK"
    assert body == b"done"


def test_the_timeout_is_read_from_the_gateway_table() -> None:
    """``[gateway] request_read_timeout`` reaches the gateway; 60 s when unset."""
    keys = mint_keys()
    table = integration_dict("http://sandbox.test", keys)
    configured = settings_for(table, gateway={"request_read_timeout": 12.5})
    assert GatewaySettings.from_settings(configured).request_read_timeout == 12.5
    assert GatewaySettings.from_settings(settings_for(table)).request_read_timeout == 60.0
