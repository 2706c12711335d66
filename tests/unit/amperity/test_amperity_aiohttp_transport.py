"""The aiohttp transport speaks httpx's transport API: same bytes out, httpx errors back.

Every test talks to a real asyncio server on 127.0.0.1:0 that records what arrives and
answers (or misbehaves) as told.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from amperity_signal.amperity import endpoints
from amperity_signal.amperity.aiohttp_transport import (
    AiohttpTransport,
    TunnelRefused,
    httpx_errors,
)
from amperity_signal.amperity.retry import is_unknown_host
from amperity_signal.proxies import ProxyRules

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request (head and Content-Length body) off the connection, or b""."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@dataclass
class Server:
    """A real HTTP/1.1 server: every request it read and every connection it accepted."""

    url: str
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[bytes | Answer], Awaitable[Server]]]:
    """Start servers answering canned bytes (keep-alive) or running a custom answer."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes | Answer) -> Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            record.connections += 1
            if not isinstance(answer, bytes):
                await answer(reader, writer)
                writer.close()
                return
            while request := await read_request(reader):
                record.requests.append(request)
                writer.write(answer)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        record = Server(url=f"http://127.0.0.1:{port}")
        return record

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    """A transport with two connections, closed after the test."""
    transport = AiohttpTransport(max_connections=2)
    yield transport
    await transport.aclose()


def post(url: str, *, read: float = 5.0) -> httpx.Request:
    """An event POST as the Amperity client builds it, its answer read with ``read`` s at most.

    Only the read timeout is ever short here, to trip on a server that stalls: on a loaded
    machine connecting to 127.0.0.1 can take longer than such a timeout (a ConnectTimeout).
    """
    return httpx.Request(
        "POST",
        httpx.URL(url + "/prof/events/is-1a2b?a=b%20c"),
        headers=endpoints.request_headers("acme", "token", json_body=True),
        content=b'{"source":"web"}',
        extensions={"timeout": httpx.Timeout(5.0, read=read).as_dict()},
    )


async def send(
    sender: httpx.AsyncBaseTransport, request: httpx.Request
) -> tuple[httpx.Response, bytes]:
    """Send one request as the caller does: read the whole body, then close."""
    response = await sender.handle_async_request(request)
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    return response, body


async def test_the_request_bytes_are_exactly_what_httpx_own_transport_sends(
    serve: Callable[[bytes], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """Same request line, headers (no aiohttp defaults), order, case and body as httpcore."""
    server = await serve(ACCEPTED)
    reference = httpx.AsyncHTTPTransport(trust_env=False)
    try:
        await send(reference, post(server.url))
    finally:
        await reference.aclose()
    await send(transport, post(server.url))

    assert len(server.requests) == 2
    assert server.requests[1] == server.requests[0]
    assert server.requests[1].startswith(b"POST /prof/events/is-1a2b?a=b%20c HTTP/1.1\r\n")


async def test_status_headers_and_body_come_back_as_an_httpx_response(
    serve: Callable[[bytes], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """A response's status, repeated headers (names as sent) and body reach the caller."""
    server = await serve(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nX-Note: a\r\nX-Note: b\r\n"
        b'Content-Length: 9\r\n\r\n{"e":"x"}'
    )
    response, body = await send(transport, post(server.url))

    assert response.status_code == 429
    assert response.headers.get_list("x-note") == ["a", "b"]
    assert response.headers.raw[0] == (b"Retry-After", b"2")
    assert body == b'{"e":"x"}'
    assert response.extensions["http_version"] == b"HTTP/1.1"


async def test_a_compressed_body_is_decoded_by_httpx_as_before(
    serve: Callable[[bytes], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """A gzip body is handed over as sent and decoded by httpx on read."""
    packed = gzip.compress(b'{"profile_id":"p-1"}')
    server = await serve(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(packed)}\r\n\r\n".encode()
        + packed
    )
    _, body = await send(transport, post(server.url))

    assert body == b'{"profile_id":"p-1"}'


async def test_requests_reuse_a_kept_alive_connection(
    serve: Callable[[bytes], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """Three requests in turn travel over one connection."""
    server = await serve(ACCEPTED)
    for _ in range(3):
        await send(transport, post(server.url))

    assert len(server.requests) == 3
    assert server.connections == 1


async def test_a_refused_connection_is_an_httpx_connect_error(
    transport: AiohttpTransport,
) -> None:
    """Nothing listening on the port: httpx.ConnectError, not an unknown host, without TLS."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        await send(transport, post(f"http://127.0.0.1:{port}"))
    assert not is_unknown_host(caught.value)
    # A plain http URL (the sandbox's) is said to fail its TCP connect, not its TLS.
    said = str(caught.value)
    assert said.startswith(f"Cannot open a TCP connection to 127.0.0.1:{port} [")
    assert "ssl" not in said.lower()
    assert "tls" not in said.lower()


def test_a_connect_failure_with_no_reason_text_names_the_error_not_none() -> None:
    """An OSError without a message (strerror None) is named by its type, not '[None]'."""
    key = ConnectionKey("127.0.0.1", 8765, False, True, None, None, None)
    error = aiohttp.ClientConnectorError(key, OSError())
    with pytest.raises(httpx.ConnectError) as caught, httpx_errors(post("http://127.0.0.1:8765")):
        raise error
    assert str(caught.value) == "Cannot open a TCP connection to 127.0.0.1:8765 [OSError]"


async def test_a_connection_closed_without_an_answer_is_a_remote_protocol_error(
    serve: Callable[[Answer], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """The server hangs up after reading the request: a transport error, not a timeout."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    server = await serve(hang_up)
    with pytest.raises(httpx.RemoteProtocolError):
        await send(transport, post(server.url))


async def test_a_server_slower_than_the_read_timeout_is_an_httpx_read_timeout(
    serve: Callable[[Answer], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """No answer within the request's read timeout: httpx.ReadTimeout."""
    answered = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await answered.wait()

    server = await serve(stall)
    try:
        with pytest.raises(httpx.ReadTimeout):
            await send(transport, post(server.url, read=0.05))
    finally:
        answered.set()


async def test_each_request_gets_its_own_timeouts_when_they_change_between_requests(
    serve: Callable[[Answer], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """A short read timeout applies to its request only: the next, longer one waits."""
    answered = asyncio.Event()

    async def answer_when_told(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await answered.wait()
            writer.write(ACCEPTED)
            await writer.drain()

    server = await serve(answer_when_told)
    with pytest.raises(httpx.ReadTimeout):
        await send(transport, post(server.url, read=0.05))
    slow = asyncio.create_task(send(transport, post(server.url, read=30.0)))
    await asyncio.sleep(0.2)  # four times the short timeout: it must not apply any more
    answered.set()
    response, _ = await slow

    assert response.status_code == 202


@pytest.mark.parametrize(
    ("hang_up", "error"), [(True, httpx.ReadError), (False, httpx.ReadTimeout)]
)
async def test_a_body_cut_off_after_the_status_line_fails_its_read_not_the_request(
    serve: Callable[[Answer], Awaitable[Server]],
    transport: AiohttpTransport,
    hang_up: bool,
    error: type[httpx.TransportError],
) -> None:
    """202 and part of a body, then a hang-up or a stall: the answer, then a failed read."""
    released = asyncio.Event()

    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 202 Accepted\r\nX-Note: a\r\nContent-Length: 100\r\n\r\n{")
            await writer.drain()
            if hang_up:
                return
            await released.wait()

    server = await serve(cut_short)
    try:
        # The 202 must arrive within the read timeout, and the stall then trips it: 1 s, not
        # 50 ms, which a loaded machine can pause the loop for between request and answer.
        response = await transport.handle_async_request(post(server.url, read=1.0))
        assert (response.status_code, response.headers["x-note"]) == (202, "a")
        with pytest.raises(error):
            await response.aread()
        await response.aclose()
        # The cut connection is not reused: the next request opens another.
        second = await transport.handle_async_request(post(server.url))
        await second.aclose()
    finally:
        released.set()

    assert server.connections == 2


async def test_a_garbled_answer_is_an_httpx_remote_protocol_error(
    serve: Callable[[bytes], Awaitable[Server]], transport: AiohttpTransport
) -> None:
    """Bytes that are not HTTP: httpx.RemoteProtocolError."""
    server = await serve(b"this is not http\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        await send(transport, post(server.url))


async def test_an_unknown_host_is_a_connect_error_the_retry_policy_recognises(
    transport: AiohttpTransport,
) -> None:
    """A DNS "no such host" keeps its cause, so it is not retried."""
    with pytest.raises(httpx.ConnectError) as caught:
        await send(transport, post("http://no-such-host.invalid"))
    assert is_unknown_host(caught.value)


async def test_closing_before_any_request_and_twice_is_harmless() -> None:
    """Closing an unused transport, then closing it again, does nothing."""
    transport = AiohttpTransport(max_connections=1)
    await transport.aclose()
    await transport.aclose()


PROXY_PASSWORD = "pr0xy-s3cret-7f3a9c"  # a canary: never in an error


@pytest.mark.parametrize("bypassed", [False, True])
async def test_a_proxied_request_goes_to_the_proxy_in_absolute_form_with_its_credentials(
    serve: Callable[[bytes], Awaitable[Server]], bypassed: bool
) -> None:
    """HTTP_PROXY: the proxy gets the absolute URL and Proxy-Authorization; NO_PROXY: not."""
    proxy = await serve(ACCEPTED)
    environ = {"HTTP_PROXY": proxy.url.replace("http://", f"http://signal:{PROXY_PASSWORD}@")}
    if bypassed:
        environ["NO_PROXY"] = "127.0.0.1"
    transport = AiohttpTransport(max_connections=1, proxies=ProxyRules.from_environ(environ))
    try:
        response, _ = await send(transport, post(proxy.url))
    finally:
        await transport.aclose()

    assert response.status_code == 202
    (request,) = proxy.requests
    target = (proxy.url if not bypassed else "").encode() + b"/prof/events/is-1a2b?a=b%20c"
    assert request.startswith(b"POST " + target + b" HTTP/1.1\r\n")
    credentials = base64.b64encode(f"signal:{PROXY_PASSWORD}".encode())
    assert (b"Proxy-Authorization: Basic " + credentials in request) is not bypassed


async def test_an_unreachable_proxy_is_a_proxy_error_naming_it_without_its_password() -> None:
    """Nothing listens at the proxy: httpx.ProxyError naming it, credentials redacted."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = {"HTTP_PROXY": f"http://signal:{PROXY_PASSWORD}@127.0.0.1:{port}"}
    transport = AiohttpTransport(max_connections=1, proxies=ProxyRules.from_environ(environ))
    try:
        with pytest.raises(httpx.ProxyError) as caught:
            await send(transport, post("http://amperity.test"))
    finally:
        await transport.aclose()

    message = str(caught.value)
    assert f"cannot connect to the proxy http://[REDACTED]@127.0.0.1:{port} (HTTP_PROXY)" in message
    for error in (caught.value, caught.value.__cause__):
        assert PROXY_PASSWORD not in f"{error} {error!r}"


def tunnel_answer(status: int) -> bytes:
    """A proxy's answer to CONNECT, with a reason phrase it made up (never to be shown)."""
    return f"HTTP/1.1 {status} Denied by rule 12\r\nContent-Length: 0\r\n\r\n".encode()


@pytest.mark.parametrize("status", [403, 404, 405, 400])
async def test_a_connect_refused_with_a_4xx_is_a_tunnel_refused_naming_target_and_proxy(
    serve: Callable[[bytes], Awaitable[Server]], status: int
) -> None:
    """The proxy's own 4xx to CONNECT: TunnelRefused with its status and host:port."""
    proxy = await serve(tunnel_answer(status))
    environ = {"HTTPS_PROXY": proxy.url.replace("http://", f"http://signal:{PROXY_PASSWORD}@")}
    transport = AiohttpTransport(max_connections=1, proxies=ProxyRules.from_environ(environ))
    try:
        with pytest.raises(TunnelRefused) as caught:
            await send(transport, post("https://acme.amperity.test:8443"))
    finally:
        await transport.aclose()

    refused = caught.value
    assert (refused.status, refused.target) == (status, "acme.amperity.test:8443")
    assert refused.proxy.variable == "HTTPS_PROXY"
    assert isinstance(refused, httpx.ProxyError)
    [connect] = proxy.requests
    assert connect.startswith(b"CONNECT acme.amperity.test:8443 HTTP/1.1\r\n")
    for error in (refused, refused.__cause__):
        assert PROXY_PASSWORD not in f"{error} {error!r}"


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_connect_the_proxy_could_not_carry_out_stays_a_plain_proxy_error(
    serve: Callable[[bytes], Awaitable[Server]], status: int
) -> None:
    """5xx to CONNECT (upstream unreachable): an httpx.ProxyError, retried by the caller."""
    proxy = await serve(tunnel_answer(status))
    transport = AiohttpTransport(
        max_connections=1, proxies=ProxyRules.from_environ({"HTTPS_PROXY": proxy.url})
    )
    try:
        with pytest.raises(httpx.ProxyError) as caught:
            await send(transport, post("https://acme.amperity.test"))
    finally:
        await transport.aclose()

    assert not isinstance(caught.value, TunnelRefused)
    assert f"refused the tunnel: {status}" in str(caught.value)


async def test_a_403_to_a_plain_http_request_is_amperitys_answer_not_the_proxys(
    serve: Callable[[bytes], Awaitable[Server]],
) -> None:
    """Through an http proxy the status is the forwarded answer's: a 403 response, as sent."""
    proxy = await serve(tunnel_answer(403))
    transport = AiohttpTransport(
        max_connections=1, proxies=ProxyRules.from_environ({"HTTP_PROXY": proxy.url})
    )
    try:
        response, _ = await send(transport, post("http://acme.amperity.test"))
    finally:
        await transport.aclose()

    assert response.status_code == 403
