"""An httpx transport over aiohttp: the same HTTP/1.1 requests, parsed by llhttp in C.

httpx's own transport (httpcore, h11, anyio) cost ~0.9-1.2 ms of CPU per POST in Deliver
profiles, the largest single item of an event; aiohttp's connection pool and C parser
send the same request for about a third of that. Callers keep httpx's API (``Request``,
``Response``, ``TransportError`` and its subclasses), so retries, timeouts and error
mapping do not change, and tests still inject ``httpx.MockTransport`` or an ASGI transport.

Only the headers of the ``httpx.Request`` go out: aiohttp's own defaults (``User-Agent``,
``Accept``, ``Accept-Encoding``, ``Content-Type``) are switched off, and bodies are not
decompressed here: the caller decodes them, in bounded steps (``decoding.py``).

Proxies come from ``ProxyRules`` (``proxies.py``: the environment, read as httpx reads
it). Their credentials go as a ``Proxy-Authorization`` header (on the request for http, on
the ``CONNECT`` for https); aiohttp is never given a URL holding them, so none of its
errors can show them. A ``CONNECT`` the proxy answers 407 comes back as a 407 response,
as the same refusal of a plain http request does, so that both are the permanent
``PROXY_AUTH_REQUIRED`` (wrong or missing credentials) rather than a connection failure
retried until ``max_retries`` runs out. Any other 4xx to the ``CONNECT`` is the proxy's
own refusal by policy, which it will repeat: a ``TunnelRefused`` (an ``httpx.ProxyError``
with the status, the tunnel's target and the proxy) that the caller does not retry. A 5xx
(the proxy could not reach the target) and a proxy that cannot be reached are a plain
``httpx.ProxyError``, retried as connection failures. For plain http the proxy forwards
Amperity's answer, so its status is Amperity's: only the 407 is taken for the proxy's.

A request carrying a ``CallProgress`` (``progress.PROGRESS``) has it moved along: connecting
until aiohttp has a connection for it (nothing written), sending from then on, answered
once the status line is in.

As with httpx's own transport, the response comes back once its status line and headers
are in, and its body is read from the response's stream: a body cut off (a reset, a
stalled read) fails that read, with the status and headers already in the caller's hands.
For an event POST the status line is Amperity's answer (``caller.py``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import aiohttp
import httpx
from yarl import URL

from amperity_signal.amperity.progress import PROGRESS, CallProgress, Stage
from amperity_signal.proxies import Proxy, ProxyRules

PROXY_AUTH_REQUIRED: Final = 407
_NO_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

# The progress of the request being sent in this task, for the connector to move on once
# it has a connection: aiohttp hands the connector no way to reach the caller's request.
_connecting: ContextVar[CallProgress | None] = ContextVar("connecting", default=None)


@contextmanager
def httpx_errors(request: httpx.Request, proxy: Proxy | None = None) -> Iterator[None]:
    """Raise aiohttp's failures as the ``httpx.TransportError`` httpcore raises for them.

    The original error stays chained as ``__cause__``, so a DNS failure is still found by
    ``retry.is_unknown_host``. A proxy that cannot be reached or refuses the tunnel is an
    ``httpx.ProxyError`` naming it (credentials redacted) and its variable.
    """
    try:
        yield
    except aiohttp.ClientProxyConnectionError as exc:
        where = f"the proxy {proxy.shown} ({proxy.variable})" if proxy else "the proxy"
        raise httpx.ProxyError(f"cannot connect to {where}: {exc}", request=request) from exc
    except aiohttp.ClientHttpProxyError as exc:
        where = f"the proxy {proxy.shown} ({proxy.variable})" if proxy else "the proxy"
        raise httpx.ProxyError(
            f"{where} refused the tunnel: {exc.status} {exc.message}", request=request
        ) from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except TimeoutError as exc:  # aiohttp.ServerTimeoutError and SocketTimeoutError
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(_connect_failure(exc, request.url), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        ) from exc
    except (aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc


def _connect_failure(exc: aiohttp.ClientConnectorError, url: httpx.URL) -> str:
    """What a failed connect says: aiohttp's words, but no ``ssl:default`` for a plain http URL.

    aiohttp's connection key carries the connector's TLS context whatever the scheme, so a
    refused ``http://`` sandbox read as a TLS failure: "Cannot connect to host
    127.0.0.1:8080 ssl:default [Connect call failed ...]".
    """
    if url.scheme != "http":
        return str(exc)
    reason = exc.strerror or type(exc.os_error).__name__  # an OSError may carry no text
    return f"Cannot open a TCP connection to {exc.host}:{exc.port} [{reason}]"


class TunnelRefused(httpx.ProxyError):
    """The proxy answered an https tunnel's ``CONNECT`` with a 4xx other than 407.

    Attributes:
        status: The proxy's status (403, 404, 405...).
        phrase: Its reason phrase, as the proxy sent it.
        target: The tunnel's ``host:port``.
        proxy: The proxy that refused it (``shown`` hides its credentials).
    """

    def __init__(
        self, *, request: httpx.Request, status: int, phrase: str, target: str, proxy: Proxy
    ) -> None:
        super().__init__(
            f"the proxy {proxy.shown} ({proxy.variable}) refused the tunnel to {target}: "
            f"{status} {phrase}",
            request=request,
        )
        self.status = status
        self.phrase = phrase
        self.target = target
        self.proxy = proxy


def _tunnel_refusal(error: httpx.ProxyError) -> aiohttp.ClientHttpProxyError | None:
    """The error aiohttp raised for a ``CONNECT`` the proxy answered, or None for another."""
    cause = error.__cause__
    return cause if isinstance(cause, aiohttp.ClientHttpProxyError) else None


def _target(url: httpx.URL) -> str:
    """``host:port`` as a ``CONNECT`` names it (an IPv6 address in brackets)."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port or 443}"


class _Connector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that marks a request as sending once it has its connection.

    aiohttp writes the request right after ``connect`` returns, with no wait between.
    """

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[aiohttp.tracing.Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own signature
    ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        progress = _connecting.get()
        if progress is not None:
            progress.stage = Stage.SENDING
        return connection


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections to any host, at most ``max_connections`` at once.

    Args:
        max_connections: Connections open (and so requests in flight) at most.
        keepalive_expiry: Seconds an idle connection is kept (httpx's default, 5).
        ssl_context: For https; httpx's default context (certifi) when None.
        proxies: Which proxy each URL goes through (none when None or empty).
    """

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxyRules | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._proxies = proxies or ProxyRules()
        # Without a proxy configured (the usual case) no request looks one up.
        self._proxied = bool(self._proxies)
        self._proxy_cache: dict[tuple[str, str, int | None], Proxy | None] = {}
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._session: aiohttp.ClientSession | None = None
        # The last timeouts asked for and their ClientTimeout: a caller's timeouts change
        # only near its deadline, so one entry saves building one per request.
        self._timeouts: tuple[Any, Any, Any] = (None, None, None)
        self._client_timeout = aiohttp.ClientTimeout(total=None)

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use: aiohttp binds it to the running loop."""
        connector = _Connector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            ssl=self._ssl_context,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            skip_auto_headers=_NO_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; the answer comes back with its headers, the body when read."""
        session = self._session or self._open()
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        asked = (timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read"))
        if asked != self._timeouts:
            self._timeouts = asked
            self._client_timeout = aiohttp.ClientTimeout(
                total=None, connect=asked[0], sock_connect=asked[1], sock_read=asked[2]
            )
        headers = [
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw
        ]
        proxy = proxy_headers = None
        if self._proxied:
            proxy = self._proxy_for(request.url)
            if proxy is not None and proxy.authorization is not None:
                if request.url.scheme == "https":  # said to the proxy in the CONNECT
                    proxy_headers = {"Proxy-Authorization": proxy.authorization}
                else:  # the request itself goes to the proxy
                    headers.append(("Proxy-Authorization", proxy.authorization))
        progress: CallProgress | None = request.extensions.get(PROGRESS)
        if progress is not None:
            progress.stage = Stage.CONNECTING
        connecting = _connecting.set(progress)
        try:
            with httpx_errors(request, proxy):
                answer = await session.request(
                    request.method,
                    # Already percent-encoded by httpx: sent exactly as httpx would send it.
                    URL(str(request.url), encoded=True),
                    headers=headers,
                    data=request.content or None,
                    allow_redirects=False,
                    compress=None,
                    timeout=self._client_timeout,
                    proxy=proxy.url if proxy is not None else None,
                    proxy_headers=proxy_headers,
                )
        except httpx.ProxyError as failed:
            refusal = _tunnel_refusal(failed)
            if refusal is None or proxy is None or not 400 <= refusal.status < 500:
                raise
            if refusal.status == PROXY_AUTH_REQUIRED:
                return httpx.Response(PROXY_AUTH_REQUIRED, content=b"", request=request)
            raise TunnelRefused(
                request=request,
                status=refusal.status,
                phrase=refusal.message,
                target=_target(request.url),
                proxy=proxy,
            ) from refusal
        finally:
            _connecting.reset(connecting)
        if progress is not None:
            progress.stage = Stage.ANSWERED
            progress.status = answer.status
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            # Read when the caller reads the response, and decoded then (decoding.py).
            stream=_Body(answer, request, proxy),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _proxy_for(self, url: httpx.URL) -> Proxy | None:
        """The proxy for ``url``'s scheme, host and port, looked up once for each."""
        key = (url.scheme, url.host, url.port)
        try:
            return self._proxy_cache[key]
        except KeyError:
            proxy = self._proxy_cache[key] = self._proxies.proxy_for(*key)
            return proxy

    async def aclose(self) -> None:
        """Close every connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    """An aiohttp response's body, handed over as it arrives, in the chunks read off the socket.

    Never read whole here: the caller counts the chunks and stops past its cap on an
    answer's size (``caller.MAX_ANSWER_BYTES``), so a huge body is never held in memory.
    Closing it gives the connection back to the pool once the body was read, and closes
    it otherwise (a cancelled, failed or abandoned read leaves the connection mid-answer).
    """

    __slots__ = ("_answer", "_proxy", "_request")

    def __init__(
        self, answer: aiohttp.ClientResponse, request: httpx.Request, proxy: Proxy | None
    ) -> None:
        self._answer = answer
        self._request = request
        self._proxy = proxy

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors(self._request, self._proxy):
            async for chunk in self._answer.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # release() also closes a connection whose answer was not read to its end.
        self._answer.release()
