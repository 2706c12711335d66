"""``run_gateway``: serve the gateway with uvicorn on a pre-bound socket (port 0 works)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httptools
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from amperity_signal.gateway.app import create_gateway_app
from amperity_signal.gateway.connections import (
    PER_CLIENT,
    TOTAL,
    ConnectionCaps,
    ConnectionGate,
    open_file_limit,
    proxy_test,
)
from amperity_signal.gateway.errors import GatewayError, error_response
from amperity_signal.gateway.live import STREAM_PATH
from amperity_signal.gateway.ratelimit import client_keys
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.metrics import GatewayMetrics
from amperity_signal.processes import CUT_SECONDS, EXIT_FORCED, ProcessServer, announce

_log = logging.getLogger(__name__)

# The most of a request head the gateway buffers. The gateway's own limit
# (max_header_bytes, answered 431 JSON) sits well below it; only heads beyond this
# ceiling get a 400 (JsonErrorHttpToolsProtocol), and memory per connection stays bounded.
_HEAD_CEILING = 256 * 1024
# uvicorn closes a keep-alive connection idle this long (its default, said here because the
# stop's drain window is tied to it: GatewayServer).
_KEEP_ALIVE_SECONDS = 5
_CONNECTION_CLOSE = (b"connection", b"close")
# How often, at most, the server looks for requests arriving too slowly (GatewayServer).
_READ_SWEEP_SECONDS = 1.0
_INVALID_REQUEST = GatewayError(
    400,
    "INVALID_HTTP_REQUEST",
    "The request is not valid HTTP/1.1 (or its head is far too large): percent-encode "
    "the path and query, and send well-formed headers.",
)
_REQUEST_TIMEOUT = GatewayError(
    408,
    "REQUEST_TIMEOUT",
    "The request's head or body did not arrive in time; send the whole request at once.",
)
_RETRY_SOON = {"Retry-After": "1"}
# A refused connection's 503 is followed by our end of the stream, and what the client sends
# is read and dropped until its own end or this long: closed with its request unread, the
# socket answers the request with a reset, which most clients read instead of the 503. At
# most a quarter of the gateway's connection cap, and 256, linger at once (past it, closed at
# once): a flood holds no more files than that beyond the cap.
_LINGER_SECONDS = 1.0
_MAX_LINGERING = 256
_LINGERING_SHARE = 4
# The answers of a connection the gate refuses (``ConnectionGate``), by the limit it is over.
_TOO_MANY_CONNECTIONS = {
    PER_CLIENT: GatewayError(
        503,
        "TOO_MANY_CONNECTIONS",
        "This client has too many connections open to the gateway; send requests on the "
        "connections it has (keep-alive), or close some and retry after the Retry-After delay.",
        headers=_RETRY_SOON,
    ),
    TOTAL: GatewayError(
        503,
        "TOO_MANY_CONNECTIONS",
        "The gateway has as many connections open as it may; retry after the Retry-After delay.",
        headers=_RETRY_SOON,
    ),
}


class GatedState(ServerState):
    """uvicorn's state shared by a server's connections, with the gate that counts them.

    ``lingering`` counts the refused connections held open a moment after their 503
    (``JsonErrorHttpToolsProtocol.connection_made``): at most a quarter of the total cap,
    and ``_MAX_LINGERING``.
    """

    def __init__(self, gate: ConnectionGate) -> None:
        super().__init__()
        self.gate = gate
        self.lingering = 0


class _ClientMistakesAtDebug(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's protocol logger, with its warnings (all about what a client sent) at debug.

    uvicorn warns once per request the parser rejects and per ``Upgrade:`` request (the
    protocol below also drops its advice to install a WebSocket library the gateway has no
    use for). Each is answered (400 JSON, or HTTP/1.1 as if no upgrade was asked), and a
    warning each would let any scanner fill the logs. Errors (the app failing) stay errors.
    """

    @property
    def level(self) -> int:
        """The wrapped logger's level (uvicorn reads it to decide on trace logging)."""
        return self.logger.level

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        """Log at debug instead."""
        self.debug(msg, *args, **kwargs)


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The header line framing a request's body (``b""`` when it has none)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 ")):
            return name + b": " + value
    return b""


def _new_parser(protocol: object) -> httptools.HttpRequestParser:
    """A request parser calling ``protocol``, as lenient as uvicorn's."""
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class _UpgradeBodyThen:
    """Parser callbacks: the body of an Upgrade request, then the connection's next requests.

    llhttp hands over the bytes after an Upgrade request's head, body included, as another
    protocol's. This parser is fed a head framing that body as the request's did; its body
    goes to the request, and every request after it to the protocol, as usual.
    """

    def __init__(self, protocol: JsonErrorHttpToolsProtocol) -> None:
        self._protocol = protocol
        self._in_body = True
        self._in_trailers = False

    def on_message_begin(self) -> None:
        if not self._in_body:
            self._protocol.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._in_body:
            self._protocol.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_body or self._in_trailers:
            self._protocol.on_header(name, value)  # the body's trailers: counted, dropped

    def on_headers_complete(self) -> None:
        if self._in_body:
            self._in_trailers = True
        else:
            self._protocol.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._protocol.on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._protocol.on_message_complete()


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp), answering what it refuses in the JSON shape.

    A garbled request line, raw non-ASCII or NUL in the target, a malformed header or a
    head over the ceiling (``Config.h11_max_incomplete_event_size``, which uvicorn's own
    httptools protocol ignores) never reaches the app; uvicorn answered it with a
    plain-text 400, and buffered a head of any size. The gateway served h11 until session
    19; this gives h11's answers (``tests/gateway/test_socket.py``) for ~45 % fewer CPU
    instructions per request, but for what llhttp's grammar refuses and h11 took
    (docs/gateway.md).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _ClientMistakesAtDebug(self.logger, {})  # type: ignore[assignment]
        self._stopping = False
        self._head_ceiling = self.config.h11_max_incomplete_event_size or _HEAD_CEILING
        # Bytes received since the head in progress began (None: no head in progress).
        self._head_bytes: int | None = None
        # A request refused while earlier ones are answered: its 400 follows theirs.
        self._refused = False
        # The head in progress is complete: a header now is a trailer (after a chunked body).
        self._head_done = False
        # What the connection was last seen waiting for (``check_read_timeout``), and since.
        self._awaited: object = None
        self._awaited_since = 0.0
        # The gate that admitted the connection, told when it closes (``connection_made``).
        self._gate: ConnectionGate | None = None
        # Refused, and held open a moment after the 503 (``connection_made``): the state
        # counting such connections, and the timer that closes this one.
        self._lingering: GatedState | None = None
        self._linger_end: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection, or answer 503 ``TOO_MANY_CONNECTIONS`` and close it.

        The gate (``GatedState``) counts the connections open per client and in all; a
        refused one is answered, then lingers up to ``_LINGER_SECONDS`` (its request read
        and dropped, so the close does not reset the 503 away), then is closed.
        """
        super().connection_made(transport)
        state = self.server_state
        if not isinstance(state, GatedState):
            return
        host = self.client[0] if self.client else None
        refused = state.gate.admit(host, self.loop.time())
        if refused is None:
            self._gate = state.gate
            return
        error = error_response(_TOO_MANY_CONNECTIONS[refused])
        self._write_closing("503 Service Unavailable", error)
        most = min(_MAX_LINGERING, state.gate.caps.total // _LINGERING_SHARE)
        if state.lingering >= most or not transport.can_write_eof():
            self.transport.close()
            return
        state.lingering += 1
        self._lingering = state
        transport.write_eof()
        self._linger_end = self.loop.call_later(_LINGER_SECONDS, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: the gate that admitted it counts it no more."""
        if self._gate is not None:
            self._gate.release(self.client[0] if self.client else None)
            self._gate = None
        if self._lingering is not None:
            self._lingering.lingering -= 1
            self._lingering = None
            if self._linger_end is not None:
                self._linger_end.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        """A refused connection's client is done: close it now, its request all read."""
        if self._lingering is not None:
            self.transport.close()
            return
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; refuse what llhttp rejects and a head over the ceiling.

        A refused connection's data (it lingers after its 503) is read and dropped.

        After an ``Upgrade:`` request (answered as plain HTTP/1.1) the parser stops at the
        end of its head; uvicorn dropped what followed in the same read (its body, a
        pipelined request), which is parsed here.
        """
        if self._lingering is not None:
            return
        self._unset_keepalive_if_required()
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.logger.debug("Invalid HTTP request received.")
                cycle = self.cycle
                if cycle is not None and not cycle.more_body and not cycle.response_complete:
                    # A request after one complete but unanswered: as h11 did, the requests
                    # before it are answered first.
                    self._refused = True
                    self.flow.pause_reading()
                else:
                    self.send_400_response("")
                return
            except httptools.HttpParserUpgrade as upgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                    return
                self._unsupported_upgrade_warning()
                data = data[upgrade.args[0] :]
                framing = _body_framing(self.headers)
                if framing:
                    # httptools skips an Upgrade request's body: read it as h11 did.
                    self.cycle.more_body = True
                    self.cycle.message_event.clear()
                    self.parser = _new_parser(_UpgradeBodyThen(self))
                    data = b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n" + data
                if data:
                    continue
            break
        if self._head_bytes is not None:
            # The head began in this read or before: what h11 would have buffered, at most.
            self._head_bytes += len(data)
            if self._head_bytes > self._head_ceiling:
                self.logger.debug("Invalid HTTP request received: the head is over the ceiling.")
                self.send_400_response("")

    def check_read_timeout(self, now: float, timeout: float) -> None:
        """Close the connection when what it is waiting for has taken ``timeout`` seconds.

        A request's head (from its first byte; on a new connection, from its opening) and
        then its body each get ``timeout``. uvicorn has no such limit: a client trickling a
        head, or stopping mid-body, held its connection and buffers for ever (300 of them,
        61 MB). Called about once a second by ``GatewayServer`` with loop time: a request
        costs nothing more, the sweep compares what each connection waits for with what it
        waited for last time. Nothing is timed while the gateway itself keeps the bytes
        waiting (reading paused: the app is busy with earlier bytes), nor between requests
        (uvicorn's keep-alive timeout), nor while a request is being answered.
        """
        awaited = self._awaited_now()
        if awaited is not self._awaited:
            self._awaited = awaited
            self._awaited_since = now
        elif awaited is not None and now - self._awaited_since >= timeout:
            self._read_timed_out(awaited)

    def _awaited_now(self) -> object:
        """What the connection waits for the client to send: a head, a body, or None."""
        if self.transport.is_closing() or self.flow.read_paused:
            return None
        if self._head_bytes is not None:  # a head (or a chunked body's trailers) under way
            return self.headers
        cycle = self.cycle
        if cycle is None:
            return self.transport  # a new connection: its first request has not begun
        if cycle.more_body:
            return cycle
        return None

    def _read_timed_out(self, awaited: object) -> None:
        cycle = self.cycle
        if awaited is self.transport:
            # Nothing was sent: no request to answer (an idle preconnected socket, say).
            self.logger.debug("Connection closed: no request arrived in time.")
            self.transport.close()
            return
        if awaited is cycle:
            answered = cycle.response_started
            # The app reading the body hears the end of its request, as on a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        else:  # a head: answerable unless an earlier request's answer is under way
            answered = cycle is not None and not cycle.response_complete
        self.logger.debug("Request timed out: its head or body arrived too slowly.")
        if not answered:
            response = error_response(_REQUEST_TIMEOUT)
            self._write_closing("408 Request Timeout", response)
        self.transport.close()

    def on_message_begin(self) -> None:
        """A request starts: its head is counted until it is complete."""
        super().on_message_begin()
        self._head_bytes = 0
        self._head_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header of the head; a trailer is dropped, and counted against the ceiling.

        llhttp reports a chunked body's trailers as headers, which uvicorn appended to the
        request's headers, the app already running on them (a trailer could pose as a header
        a proxy in front vetted), without limit: 30 MB of trailers cost the process 590 MB.
        h11 dropped trailers and buffered them up to the ceiling, as this does.
        """
        if not self._head_done:
            super().on_header(name, value)
        elif self._head_bytes is None:
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        """The head is complete: refused as h11 refused it, else read as h11 read it.

        h11 wanted one ``Host`` (none allowed in HTTP/1.0) and a version in the request
        line, and split the target at its first ``?``: uvicorn's httptools protocol parses
        it as a URL instead, which answered ``http://host/healthz`` and ``/healthz#x`` as
        ``/healthz`` (h11: 404) and refused a target over 64 KB (h11: up to the ceiling).
        Raising here makes llhttp reject the request (``data_received``'s 400).
        """
        self._head_bytes = None
        self._head_done = True
        hosts = [name for name, _ in self.headers if name == b"host"]
        version = self.parser.get_http_version()
        if len(hosts) > 1 or (not hosts and version == "1.1") or version == "0.9":
            raise ValueError("no single Host header, or no HTTP version")
        target, self.url = self.url, b"/"
        super().on_headers_complete()
        self.url = target
        raw_path, _, query = target.partition(b"?")
        self.scope["path"] = self.root_path + unquote(raw_path.decode("ascii"))
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = query

    def on_message_complete(self) -> None:
        """The request is complete, trailers and all: no more of it is counted."""
        self._head_bytes = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """A response is complete: the next pipelined request starts, or a refusal follows."""
        super().on_response_complete()
        refusal_due = self._refused and not self.pipeline and self.cycle.response_complete
        if refusal_due and not self.transport.is_closing():
            self.send_400_response("")

    def shutdown(self) -> None:
        """Begin the graceful stop; a Live Events stream nobody reads is dropped at once.

        The stop first ends each stream with a ``failure`` event (``GatewayServer``); a
        stream whose client stopped reading cannot send it: its send waits for the socket
        to drain, which never happens, and held the stop for uvicorn's whole graceful
        timeout before being cancelled with an error. Its connection is closed instead,
        now or as soon as its writes back up, so the page reconnects as on any cut.
        """
        super().shutdown()
        self._stopping = True
        self._drop_stalled_stream()

    def pause_writing(self) -> None:
        """The socket's buffer is full: at a stop, a stream's last words wait for nobody."""
        super().pause_writing()
        if self._stopping:
            self._drop_stalled_stream()

    def _drop_stalled_stream(self) -> None:
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_complete
            and self.flow.write_paused
            and cycle.scope["path"] == STREAM_PATH
        ):
            _log.info("Live Events stream dropped at the stop: its client was not reading")
            self.transport.abort()

    def _unsupported_upgrade_warning(self) -> None:
        """One debug line; uvicorn's second one advises installing a WebSocket library."""
        self.logger.debug("Upgrade request ignored: the gateway answers HTTP/1.1 only.")

    def send_400_response(self, msg: str) -> None:
        """Write a 400 JSON error and close the connection (``msg``, uvicorn's text, unused)."""
        self._write_closing("400 Bad Request", error_response(_INVALID_REQUEST))
        self.transport.close()

    def _write_closing(self, status: str, response: Response) -> None:
        """Write ``response`` with ``Connection: close`` straight to the socket."""
        # uvicorn's default headers, as on every other answer: Date, which HTTP asks of an
        # origin server with a clock, and never Server (gateway_server turns it off).
        headers = [
            *self.server_state.default_headers,
            *response.raw_headers,
            _CONNECTION_CLOSE,
        ]
        head = [b"HTTP/1.1 %s\r\n" % status.encode("ascii")]
        head += [b"%s: %s\r\n" % header for header in headers]
        self.transport.write(b"".join([*head, b"\r\n", bytes(response.body)]))


class ClosingWhenDraining:
    """The gateway app, whose answers say ``Connection: close`` once its server drains.

    A client reads it as "send the next request on a new connection": under a handoff
    that connection reaches the new process. uvicorn, h11 and httptools alike, closes a
    connection after an answer carrying it. Until the drain, requests pass through as
    they are (one ``if`` and one call each); a request already in flight when it begins keeps its
    connection, and the next request on it is answered with the header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Serve ``scope``; while draining, an HTTP answer closes its connection.

        Not a coroutine of its own: it hands back the app's, one frame less per request
        (uvicorn is told the interface, ``asgi3``, since it cannot infer it from this).
        """
        if self.draining and scope["type"] == "http":
            return self.app(scope, receive, _closing(send))
        return self.app(scope, receive, send)


def _closing(send: Send) -> Send:
    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
            message = {**message, "headers": [*headers, _CONNECTION_CLOSE]}
        await send(message)

    return send_closing


class GatewayServer(ProcessServer):
    """The gateway's uvicorn server: it stops accepting, drains, then finishes within the grace.

    uvicorn's stop closes every idle keep-alive connection at once; a request its client
    sent on one at that moment got no answer ("Server disconnected without sending a
    response"), which under a handoff (README, "Rotating keys and certificates") cost
    keep-alive HTTP callers a request or two per stop. The stop now drains first: the
    listening socket is closed, and for ``drain_seconds`` every request arriving on an
    open connection is answered in full with ``Connection: close`` (``ClosingWhenDraining``),
    its connection closed after it; the drain ends early once no connection is left.
    Connections idle through the whole drain are closed at its end.

    The requests in flight then get what is left of ``grace_seconds`` (``[server]
    grace_period``, counted from the stop's start, the drain included), as the service's
    gRPC calls do; those still running at its end are cut, one warning saying how many
    (``ProcessServer``, as the sandbox's). uvicorn's own wait (``timeout_graceful_shutdown``)
    was a fixed 5 s after the drain, whatever the grace: a request was cut ~10 s into a
    stop with a 60 s grace, and uvicorn logged an error line for it.

    An open Live Events page would hold every stop that long: ``end_streams`` ends those
    streams first (``LiveEndpoints.close``), so the stop waits only for the requests doing
    work. A stream whose client stopped reading cannot send that last event; its
    connection is closed instead (``JsonErrorHttpToolsProtocol.shutdown``).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        end_streams: Callable[[], None],
        app: ClosingWhenDraining,
        grace_seconds: float,
        gate: ConnectionGate,
        read_timeout: float = 60.0,
    ) -> None:
        super().__init__(config, grace_seconds=grace_seconds, logger=_log)
        self.server_state = GatedState(gate)
        self.gate = gate
        self._end_streams = end_streams
        self._app = app
        self._read_timeout = read_timeout
        # uvicorn ticks every 0.1 s; the sweep runs every this many ticks.
        self._sweep_ticks = max(1, round(min(_READ_SWEEP_SECONDS, read_timeout / 4) * 10))
        # Past the keep-alive timeout no connection the drain could still move is left:
        # uvicorn has closed those idle when the stop began.
        self._drain_seconds = min(grace_seconds, _KEEP_ALIVE_SECONDS)

    async def on_tick(self, counter: int) -> bool:
        """Run uvicorn's tick (every 0.1 s), and now and then the sweep for slow requests.

        Each connection closes itself when a request's head or body has taken longer than
        ``read_timeout`` (``JsonErrorHttpToolsProtocol.check_read_timeout``); a streak of
        refused connections that has stopped is told over (``ConnectionGate.sweep``).
        """
        if counter % self._sweep_ticks == 0:
            now = asyncio.get_running_loop().time()
            self.gate.sweep(now)
            for connection in list(self.server_state.connections):
                if isinstance(connection, JsonErrorHttpToolsProtocol):
                    connection.check_read_timeout(now, self._read_timeout)
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the endless streams, then stop as every ``ProcessServer`` does, draining first."""
        self._end_streams()
        await super().shutdown(sockets)

    async def _drain(self, deadline: float) -> None:
        """Answer with ``Connection: close`` until no connection is left or the window ends.

        The window, ``drain_seconds``, is part of the grace that ends at ``deadline``.
        """
        self._app.draining = True
        connections = self.server_state.connections
        if not connections or self._drain_seconds <= 0:
            return
        _log.info(
            "gateway draining: requests on open connections are answered with Connection: close",
            extra={"connections": len(connections), "drain_seconds": self._drain_seconds},
        )
        # Those left at its end are idle (closed next) or busy (``_finish`` waits for them).
        loop = asyncio.get_running_loop()
        await self._wait_until(
            lambda: not connections, min(deadline, loop.time() + self._drain_seconds)
        )


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as a (host, port) pair.

    Raises:
        ValueError: When the address has no valid port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port; write e.g. 127.0.0.1:8080.")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def bind_socket(http_address: str, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port``; port 0 picks a free port.

    ``reuse_port`` lets several worker processes bind the same address (SO_REUSEPORT), so
    the kernel spreads connections across them; off by default, so a second server started
    by mistake on a taken port fails instead of silently sharing it.
    """
    host, port = split_address(http_address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def listening_url(sock: socket.socket, *, tls: bool = False) -> str:
    """The URL a bound socket serves, e.g. ``http://127.0.0.1:8080`` (``https://`` with TLS)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def gateway_server(app: Starlette, settings: GatewaySettings) -> GatewayServer:
    """A uvicorn server for the app, with the gateway's header limit and proxy trust.

    ``app`` is one ``create_gateway_app`` built: its stop ends its Live Events streams,
    drains the keep-alive connections for up to ``settings.grace_period`` seconds, at
    most the 5 s keep-alive timeout, and lets the requests in flight finish until that
    grace period's end (``GatewayServer``).

    uvicorn configures no logging and writes no access log: its loggers propagate to the
    process's JSON lines (``logs.configure_logging``, secrets scrubbed), and an access log
    would carry query strings, among them ``/live?token=<admin token>``.

    With ``settings.listener_tls`` it serves HTTPS and asks no client certificate: browsers
    call it, and they have none to show.

    Its connections are capped per client and in all (``settings.max_connections_per_client``
    and ``max_connections``, derived from the open-file limit when unset: ``ConnectionGate``).
    """
    tls = settings.listener_tls
    served = ClosingWhenDraining(app)
    config = uvicorn.Config(
        served,
        interface="asgi3",
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        # No "Server: uvicorn": a production gateway does not advertise its software.
        server_header=False,
        http=JsonErrorHttpToolsProtocol,
        # HTTP/1.1 only, whatever is installed: uvicorn's "auto" hands an Upgrade: websocket
        # connection to websockets or wsproto when importable, and the gate never heard it
        # close (JsonErrorHttpToolsProtocol.connection_lost), its place held for good.
        ws="none",
        # The head's ceiling: uvicorn's name for it is h11's, ours enforces it on llhttp.
        h11_max_incomplete_event_size=max(_HEAD_CEILING, 4 * settings.max_header_bytes),
        log_config=None,
        access_log=False,
        timeout_keep_alive=_KEEP_ALIVE_SECONDS,
        # uvicorn's wait once the stop has cut what outlived the grace (GatewayServer): only
        # a request ignoring its cancellation is still there, and uvicorn logs it an error.
        timeout_graceful_shutdown=CUT_SECONDS,
        ssl_certfile=tls.cert_file if tls else None,
        ssl_keyfile=tls.key_file if tls else None,
    )
    caps = ConnectionCaps.derive(
        settings.max_connections, settings.max_connections_per_client, open_file_limit()
    )
    gate = ConnectionGate(
        caps,
        client_key=client_keys(settings.rate_limit_ipv6_prefix),
        is_proxy=proxy_test(settings.trusted_proxies),
        refused=app.state.count_refused_connection,
    )
    return GatewayServer(
        config,
        end_streams=app.state.end_streams,
        app=served,
        grace_seconds=settings.grace_period,
        gate=gate,
        read_timeout=settings.request_read_timeout,
    )


def run_gateway(
    http_address: str,
    grpc_target: str,
    settings: GatewaySettings | None = None,
    *,
    static_dir: Path | None = None,
) -> int:
    """Serve the gateway until interrupted (blocking); the exit code.

    Prints ``gateway listening on http://HOST:PORT`` once the socket is bound, so a caller
    that passed port 0 learns the port. A stop forced by a second Ctrl-C, its requests in
    flight cut, exits ``EXIT_FORCED`` (130), as ``serve`` does; any other, 0.

    Args:
        http_address: Where to listen, ``host:port``; port 0 picks a free port.
        grpc_target: The AmperityService address, e.g. ``127.0.0.1:50051``.
        settings: The gateway settings; the defaults (no CORS origins) when None.
        static_dir: Where the demo and browser client live (the packaged copy by default).
    """
    gateway_settings = settings or GatewaySettings()
    sock = bind_socket(http_address)
    app = create_gateway_app(
        settings=gateway_settings,
        grpc_target=grpc_target,
        static_dir=static_dir,
        metrics=GatewayMetrics(),
        multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
    )
    server = gateway_server(app, gateway_settings)
    announce(f"gateway listening on {listening_url(sock, tls=bool(gateway_settings.listener_tls))}")
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
    return EXIT_FORCED if server.force_exit else 0
