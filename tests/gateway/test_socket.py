"""The gateway behind uvicorn on a real socket: what a raw client can do to it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from amperity_signal.gateway import create_gateway_app
from amperity_signal.gateway.server import JsonErrorHttpToolsProtocol, gateway_server
from amperity_signal.metrics import Metrics

from .conftest import gateway_settings, served
from .fakes import KNOWN_KEY, RunningService


class Served:
    """A served gateway: its host, port and metrics."""

    def __init__(self, url: str, metrics: Metrics) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.host = host
        self.port = int(port)
        self.metrics = metrics

    def observed(self, route: str) -> dict[str, float]:
        """How many requests to ``route`` the histogram counted, by status."""
        counts: dict[str, float] = {}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_count") and labels.get("route") == route:
                    counts[labels["status"]] = sample.value
        return counts

    async def wait_observed(self, route: str, within: float = 5.0) -> dict[str, float]:
        """The counts for ``route`` once the histogram has any (the request has finished)."""
        for _ in range(int(within / 0.01)):
            if counts := self.observed(route):
                return counts
            await asyncio.sleep(0.01)
        raise AssertionError(f"no request to {route} finished within {within}s")

    async def exchange(self, data: bytes) -> tuple[bytes, dict[str, str], bytes]:
        """Write bytes on a fresh connection; the status line, headers and body answered."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(data)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines)
        return status_line.encode(), headers, body

    async def send_raw(self, data: bytes) -> None:
        """Write bytes on a fresh connection and close it without reading."""
        _, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def gateway_socket(service: RunningService) -> AsyncIterator[Served]:
    """The gateway with the test settings, served by uvicorn on 127.0.0.1:0."""
    metrics = Metrics()
    settings = gateway_settings()
    app = create_gateway_app(settings=settings, grpc_target=service.target, metrics=metrics)
    async with served(app, settings) as url:
        yield Served(url, metrics)


@pytest.mark.parametrize("route", ["/v1/t", "/v1/batch"])
async def test_a_client_leaving_mid_body_is_no_error_and_logs_nothing_above_debug(
    gateway_socket: Served, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Content-Length 100, 7 bytes sent, connection closed: counted as 499, no error log."""
    caplog.set_level(logging.DEBUG)
    head = (
        f"POST {route} HTTP/1.1\r\nHost: gateway.test\r\nX-Pipeline-Key: {KNOWN_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    await gateway_socket.send_raw(head.encode() + b'{"a": 1')
    assert await gateway_socket.wait_observed(route) == {"499": 1.0}
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud == []
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "request_head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/enrich?provider=amperity\x00 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        "GET /v1/enrich/caf\u00e9 HTTP/1.1\r\nHost: gateway.test\r\n\r\n".encode(),
        b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nBad Header\r\n\r\n",
    ],
    ids=["garbled-line", "nul-in-target", "raw-non-ascii-path", "malformed-header"],
)
async def test_a_request_h11_cannot_parse_gets_the_json_error_shape(
    gateway_socket: Served, request_head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """What never reaches the app still answers 400 JSON, not uvicorn's plain text.

    And it is the client's mistake, so it logs at debug: a warning per request would let
    any scanner fill the service's logs.
    """
    caplog.set_level(logging.DEBUG)
    status_line, headers, body = await gateway_socket.exchange(request_head)
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert any("Invalid HTTP request" in r.getMessage() for r in caplog.records)
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == "INVALID_HTTP_REQUEST"
    assert "percent-encode" in error["message"]


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
    ids=["answered-by-the-app", "refused-by-the-protocol"],
)
async def test_answers_carry_a_date_and_advertise_no_server_software(
    gateway_socket: Served, request_head: bytes
) -> None:
    """No ``Server`` header names uvicorn; Date is on the app's answers and on h11's 400."""
    status_line, headers, _ = await gateway_socket.exchange(request_head)
    assert status_line.split(b" ")[1] in (b"200", b"400")
    assert "server" not in headers
    assert parsedate_to_datetime(headers["date"]).year >= 2025  # an HTTP date


@pytest.mark.parametrize("protocol", [b"websocket", b"h2c"])
async def test_an_upgrade_request_is_answered_without_install_advice(
    gateway_socket: Served, protocol: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """``Upgrade:`` is ignored (HTTP/1.1 answers) and logs at debug, with no pip advice.

    uvicorn warned twice per such request, the second time telling the operator to
    install a WebSocket library the gateway has no use for.
    """
    caplog.set_level(logging.DEBUG)
    status_line, _, _ = await gateway_socket.exchange(
        b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade, close\r\n"
        b"Upgrade: " + protocol + b"\r\n\r\n"
    )
    assert status_line == b"HTTP/1.1 200 OK"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any("pip install" in r.getMessage() for r in caplog.records)


async def test_the_gateway_is_served_by_httptools_through_its_own_protocol(
    service: RunningService,
) -> None:
    """The C parser (llhttp, through httptools) reads requests: 45 % fewer instructions."""
    settings = gateway_settings()
    app = create_gateway_app(settings=settings, grpc_target=service.target)
    config = gateway_server(app, settings).config
    config.load()
    assert config.http_protocol_class is JsonErrorHttpToolsProtocol
    assert issubclass(JsonErrorHttpToolsProtocol, HttpToolsProtocol)


HOST = b"Host: gateway.test\r\n"
CLOSE = b"Connection: close\r\n"
INVALID = b"INVALID_HTTP_REQUEST"
REFUSED = "400 INVALID_HTTP_REQUEST"
EVENT = b"POST /v1/t HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
EVENT += b"X-Pipeline-Key: " + KNOWN_KEY.encode() + b"\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
THEN_HEALTHZ = b"GET /healthz HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "answers"),
    [
        (b"GET /healthz HTTP/1.1\r\n" + CLOSE + b"\r\n", [REFUSED]),
        (b"GET /healthz HTTP/1.1\r\n" + HOST + HOST + CLOSE + b"\r\n", [REFUSED]),
        (b"GET /healthz\r\n" + HOST + CLOSE + b"\r\n", [REFUSED]),
        (b"GET /healthz HTTP/1.0\r\n\r\n", ["200"]),
        (
            b"GET http://gateway.test/healthz HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n",
            ["404 NOT_FOUND"],
        ),
        (b"GET /healthz#top HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n", ["404 NOT_FOUND"]),
        (b"CONNECT gateway.test:443 HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n", ["404 NOT_FOUND"]),
        (b"GET /healthz?a=" + b"y" * 100_000 + b" HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n", ["200"]),
        (b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\nGARBAGE\r\n\r\n", ["200", REFUSED]),
        (
            b"GET /healthz HTTP/1.1\r\n"
            + HOST
            + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            + THEN_HEALTHZ,
            ["200", "200"],
        ),
        (EVENT + b"Content-Length: 2\r\n\r\n{}" + THEN_HEALTHZ, ["400 INVALID_EVENT", "200"]),
        (
            EVENT + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + THEN_HEALTHZ,
            ["400 INVALID_EVENT", "200"],
        ),
        (b"POST /v1/t HTTP/1.1\r\n" + HOST + b"Content-Length: x\r\n\r\n", [REFUSED]),
        (
            b"POST /v1/t HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            [REFUSED],
        ),
    ],
    ids=[
        "no-host",
        "two-hosts",
        "no-version",
        "http-1.0-without-host",
        "absolute-form-target",
        "fragment-in-target",
        "connect",
        "target-over-64kb",
        "pipelined-garbage-after-a-request",
        "upgrade-then-pipelined-request",
        "upgrade-with-a-body",
        "upgrade-with-a-chunked-body",
        "bad-content-length",
        "bad-chunk-size",
    ],
)
async def test_requests_get_the_answers_h11_gave(
    gateway_socket: Served, request_bytes: bytes, answers: list[str]
) -> None:
    """The answers of the h11 protocol the gateway served until session 19, kept on llhttp.

    uvicorn's own httptools protocol answers several differently: a target parsed as a
    URL (the absolute form and a fragment reach ``/healthz``, a CONNECT's or one over
    64 KB is refused), a missing or doubled Host let through, a pipelined request's 400
    written before the answer to the one before it, an Upgrade request's body skipped
    (the app read an empty body) and what followed it dropped.
    """
    reader, writer = await asyncio.open_connection(gateway_socket.host, gateway_socket.port)
    writer.write(request_bytes)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    statuses = []
    while answer:
        head, _, answer = answer.partition(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0)
        body, answer = answer[:length], answer[length:]
        code = json.loads(body)["error"]["code"] if body.startswith(b'{"error"') else ""
        statuses.append(f"{head[9:12].decode()} {code}".strip())
    assert statuses == answers


async def test_a_head_over_the_ceiling_gets_a_400_before_it_ends(gateway_socket: Served) -> None:
    """Past 256 KB of an unfinished head the gateway answers 400 JSON and stops buffering."""
    reader, writer = await asyncio.open_connection(gateway_socket.host, gateway_socket.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n" + HOST + b"Cookie: c=" + b"y" * 300_000)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert INVALID in answer


async def test_the_protocols_400_is_byte_for_byte_h11s(gateway_socket: Served) -> None:
    """The refusal's bytes as h11 wrote them, but for the date."""
    reader, writer = await asyncio.open_connection(gateway_socket.host, gateway_socket.port)
    writer.write(b"GARBAGE\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    date, _, rest = answer.removeprefix(b"HTTP/1.1 400 Bad Request\r\ndate: ").partition(b"\r\n")
    assert parsedate_to_datetime(date.decode()).year >= 2025
    assert rest == (
        b"cache-control: no-store\r\ncontent-length: 184\r\ncontent-type: application/json\r\n"
        b'connection: close\r\n\r\n{"error":{"code":"INVALID_HTTP_REQUEST","message":"The '
        b"request is not valid HTTP/1.1 (or its head is far too large): percent-encode the "
        b'path and query, and send well-formed headers."}}'
    )


@pytest.mark.parametrize("upgrade", [b"", b"Connection: Upgrade\r\nUpgrade: h2c\r\n"])
async def test_trailers_over_the_ceiling_get_a_400_before_they_end(
    gateway_socket: Served, upgrade: bytes
) -> None:
    """A chunked body's trailers count against the head's ceiling, as h11 counted them.

    llhttp reports each trailer as a header, which uvicorn kept without limit: 30 MB of
    trailers cost the process 590 MB.
    """
    reader, writer = await asyncio.open_connection(gateway_socket.host, gateway_socket.port)
    head = b"POST /v1/t HTTP/1.1\r\n" + HOST + upgrade + b"Content-Type: application/json\r\n"
    writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n")
    writer.write(b"X-Trailer: y\r\n" * 25_000)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert INVALID in answer


async def test_a_trailer_never_reaches_the_app_as_a_header(service: RunningService) -> None:
    """The request's headers are its head's: a trailer cannot pose as one (h11 dropped them)."""

    async def header_names(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        names = json.dumps(sorted(name.decode() for name, _ in scope["headers"])).encode()
        length = [(b"content-length", b"%d" % len(names))]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": names})

    app = Starlette(routes=[Mount("/names", header_names)])
    app.state.end_streams = lambda: None
    app.state.count_refused_connection = lambda limit: None
    async with served(app, gateway_settings()) as url:
        gateway = Served(url, Metrics())
        _, _, body = await gateway.exchange(
            b"POST /names/ HTTP/1.1\r\n" + HOST + CLOSE + b"Transfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
        )
    assert json.loads(body) == ["connection", "host", "transfer-encoding"]
