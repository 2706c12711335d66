"""Live Events for operators: ``/live`` (a page) streaming ``WatchDeliveries`` as SSE.

Everything here sits behind ``[server] admin_token``. The token arrives once, either as
``Authorization: Bearer`` or as ``/live?token=...`` (which is answered with a redirect to
``/live``, so the token leaves the address bar and the history); either way the answer
sets an HttpOnly cookie holding an HMAC of the token, never the token itself. Records are
already redacted by the service; the gateway, which may run as its own process against a
service of another version, redacts again with the same ``redaction.scrub`` (sensitive
keys, and any configured secret found anywhere in a record, as written or base64-encoded)
before a byte reaches the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import grpc.aio
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from amperity_signal.gateway.backend import ServiceClient
from amperity_signal.gateway.errors import GatewayError, from_rpc_error
from amperity_signal.gateway.ratelimit import TokenBuckets, client_keys
from amperity_signal.gateway.routes_api import FirstCookie
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.limits import INTEGRATION_ID, INTEGRATION_ID_RULE, MAX_LIVE_REPLAY
from amperity_signal.logs import scrub_forms
from amperity_signal.redaction import scrub

SESSION_COOKIE = "dfadmin"
# First-wins, as the API routes read ``_dfid``: the first is the one for the longest path.
_session_cookie = FirstCookie(SESSION_COOKIE)
STREAM_PATH = "/live/stream"
_SESSION_CONTEXT = b"amperity-signal live events session"
_SESSION_MAX_AGE = 8 * 3600
# Wrong admin tokens one client may present (``_authorise``): a few at once, for typos,
# then one per 12 s; a guesser is answered 429 before its guess is even compared.
_WRONG_TOKENS_BURST = 5
_WRONG_TOKENS_PER_SECOND = 1 / 12
# The page loads only its own script and stylesheet and talks only to its own stream.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_Item = dict[str, Any] | GatewayError | None
"""What waits for a stream's page: a record, the error that ends it, or its end."""
Watch = Callable[[str, int, Callable[[], None]], AsyncIterator[dict[str, Any]]]
"""``watch(integration_id, replay, subscribed)``: a stream's records, as
``ServiceClient.watch_deliveries`` gives them."""
LIVE_ASSETS = {
    "live.js": "text/javascript; charset=utf-8",
    "live.css": "text/css; charset=utf-8",
}


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id:
        lines.append(f"id: {event_id.replace(chr(10), ' ').replace(chr(13), ' ')}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


_GATEWAY_STOPPING = GatewayError(
    503,
    "SERVICE_UNAVAILABLE",
    "The gateway is shutting down; this page reconnects by itself once it is back.",
)
"""How an open stream ends when the gateway stops: as it ends when the service stops."""
_WATCH_NOT_TAKEN = GatewayError(
    504,
    "DEADLINE_EXCEEDED",
    "The service did not take the watch in time; this page reconnects by itself.",
)
"""How a stream ends whose watch the service has not subscribed within ``rpc_timeout``."""
_RETRY = "retry: 3000\n\n"
"""The stream's first chunk: how long a page waits before it reconnects."""


def _watch_error(error: grpc.aio.AioRpcError) -> GatewayError:
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return GatewayError(
            404,
            "UNKNOWN_INTEGRATION",
            "No integration has that id; use an [[integrations]] id from the config.",
            field="integration",
        )
    return from_rpc_error(error)


class LiveEndpoints:
    """The operator's Live Events page and its server-sent event stream.

    Args:
        client: The gRPC client; ``WatchDeliveries`` feeds the stream.
        settings: The admin token, the secrets to redact, the replay size, and
            ``rpc_timeout``: how long the service may take to subscribe a stream's watch.
        static_dir: Where ``live.html``, ``live.js`` and ``live.css`` live.
        heartbeat: Seconds between SSE comments that keep idle proxies from hanging up.
        now: The current UTC time, against which session cookies expire.
        watch: What feeds a stream instead of ``client.watch_deliveries`` (same arguments):
            under ``serve --workers``, every worker's watch merged (``live_merge``).
        clock: Monotonic seconds, for the limit on wrong admin tokens per client.
    """

    def __init__(
        self,
        client: ServiceClient,
        settings: GatewaySettings,
        static_dir: Path,
        heartbeat: float = 15.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        watch: Watch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now
        self._wrong_tokens = TokenBuckets(
            _WRONG_TOKENS_PER_SECOND, _WRONG_TOKENS_BURST, clock, settings.rate_limit_max_clients
        )
        self._client_key = client_keys(settings.rate_limit_ipv6_prefix)
        self._watch = watch or client.watch_deliveries
        self._token = settings.admin_token
        self._secrets = tuple(scrub_forms(settings.redact))
        self._replay = settings.live_replay
        self._static_dir = static_dir
        self._heartbeat = heartbeat
        self._subscribe_timeout = settings.rpc_timeout
        # Each open stream's WatchDeliveries pump and the queue its events wait in.
        self._streams: dict[asyncio.Task[None], asyncio.Queue[_Item]] = {}
        self._closed = False

    def close(self) -> None:
        """End every open stream with a ``failure`` event: the gateway is stopping.

        A stream never ends by itself, and the server waits for open responses before it
        stops: without this, a Live Events page open held every stop of the gateway for
        its whole shutdown timeout, and its stream was then cut mid-body. The records
        still queued for the page are dropped; a reconnecting page replays recent ones.
        """
        self._closed = True
        for pump, queue in self._streams.items():
            pump.cancel()  # puts nothing more: the queue has room for the last word
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_GATEWAY_STOPPING)

    def routes(self) -> list[Route]:
        """``/live``, ``/live/stream`` and the page's two assets."""
        return [
            Route("/live", self.page, methods=["GET"]),
            Route(STREAM_PATH, self.stream, methods=["GET"]),
            Route("/live/{name}", self.asset, methods=["GET"]),
        ]

    def _session(self, token: str, expires: int) -> str:
        """``EXPIRES.MAC``: the expiry is signed, so the server enforces the 8 hours too."""
        message = _SESSION_CONTEXT + b"\0" + str(expires).encode()
        return f"{expires}.{hmac.new(token.encode(), message, hashlib.sha256).hexdigest()}"

    def _valid_session(self, cookie: str, token: str) -> bool:
        expires_text, _, _ = cookie.partition(".")
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
            return False
        expires = int(expires_text)
        if expires <= self._now().timestamp():
            return False
        return hmac.compare_digest(cookie.encode(), self._session(token, expires).encode())

    def _authorise(self, request: Request, *, allow_query: bool) -> str:
        """How the caller proved the token: ``header``, ``query`` or ``cookie``.

        Raises:
            GatewayError: 404 when no admin token is configured, 429 when the client
                presented too many wrong tokens lately, 401 otherwise.
        """
        token = self._token
        if not token:
            raise GatewayError(
                404,
                "LIVE_EVENTS_DISABLED",
                "Live Events is off; set [server] admin_token in the configuration.",
            )
        unauthorised = {"WWW-Authenticate": 'Bearer realm="live"'}
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        query_token = request.query_params.get("token") if allow_query else None
        if scheme.lower() == "bearer" or query_token is not None:
            presented = given.strip() if scheme.lower() == "bearer" else str(query_token)
            client = self._client_key(request.client.host if request.client else "unknown")
            wait = self._wrong_tokens.wait(client)
            if wait:
                raise GatewayError(
                    429,
                    "RATE_LIMITED",
                    "Too many wrong admin tokens from this client; copy [server] admin_token "
                    "from the config and retry after the Retry-After delay.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            if hmac.compare_digest(presented.encode(), token.encode()):
                return "header" if scheme.lower() == "bearer" else "query"
            self._wrong_tokens.take(client)
            raise GatewayError(
                401,
                "INVALID_ADMIN_TOKEN",
                "That is not the admin token; copy [server] admin_token from the config.",
                headers=unauthorised,
            )
        cookie = _session_cookie.of_request(request) or ""
        if cookie and self._valid_session(cookie, token):
            return "cookie"
        raise GatewayError(
            401,
            "ADMIN_TOKEN_REQUIRED",
            "Live Events needs the admin token: open /live?token=... once, or send "
            "Authorization: Bearer <[server] admin_token>.",
            headers=unauthorised,
        )

    def _set_session(self, request: Request, response: Response) -> None:
        assert self._token is not None
        response.set_cookie(
            SESSION_COOKIE,
            self._session(self._token, int(self._now().timestamp()) + _SESSION_MAX_AGE),
            max_age=_SESSION_MAX_AGE,
            path="/live",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    async def page(self, request: Request) -> Response:
        """``GET /live``: the page; ``?token=`` sets the session cookie and redirects."""
        proof = self._authorise(request, allow_query=True)
        if proof == "query":
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = "/live" + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, 303, headers=_PAGE_HEADERS)
        else:
            response = FileResponse(
                self._static_dir / "live.html",
                media_type="text/html; charset=utf-8",
                headers=_PAGE_HEADERS,
            )
        if proof != "cookie":
            self._set_session(request, response)
        return response

    async def asset(self, request: Request) -> Response:
        """``GET /live/live.js`` and ``/live/live.css``."""
        self._authorise(request, allow_query=False)
        name = request.path_params["name"]
        if name not in LIVE_ASSETS:
            raise GatewayError(404, "NOT_FOUND", "Live Events serves live.js and live.css.")
        return FileResponse(
            self._static_dir / name, media_type=LIVE_ASSETS[name], headers=_PAGE_HEADERS
        )

    async def stream(self, request: Request) -> Response:
        """``GET /live/stream``: ``delivery`` events (JSON records), until the page closes."""
        self._authorise(request, allow_query=False)
        integration_id = request.query_params.get("integration", "")
        if integration_id and not INTEGRATION_ID.fullmatch(integration_id):
            raise GatewayError(
                400,
                "INVALID_PARAMETER",
                f"integration is an integration id from the config: {INTEGRATION_ID_RULE}.",
                field="integration",
            )
        raw_replay = request.query_params.get("replay")
        replay = self._replay
        if raw_replay is not None:
            # isascii: str.isdigit() accepts "²", which int() refuses (a 500).
            if (
                not (raw_replay.isascii() and raw_replay.isdigit())
                or int(raw_replay) > MAX_LIVE_REPLAY
            ):
                raise GatewayError(
                    400,
                    "INVALID_PARAMETER",
                    f"replay is a whole number from 0 to {MAX_LIVE_REPLAY}.",
                    field="replay",
                )
            replay = int(raw_replay)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            # The stream's headers, and its end: a HEAD answer has no body to wait for, and
            # it held a watch (and its connection) open until the client hung up.
            return StreamingResponse(iter(()), media_type="text/event-stream", headers=headers)
        events = self._events(integration_id, replay)
        # The first chunk comes once the service has subscribed the watch, and only then
        # may the headers go: a page that delivers an event as soon as its stream opens
        # must see that event's record.
        first = await anext(events)
        return StreamingResponse(
            _after(first, events), media_type="text/event-stream", headers=headers
        )

    async def _events(self, integration_id: str, replay: int) -> AsyncGenerator[str]:
        """The stream's chunks; the first one waits until the watch is subscribed."""
        if self._closed:
            yield _RETRY
            yield _sse("failure", _GATEWAY_STOPPING.body())
            return
        queue: asyncio.Queue[_Item] = asyncio.Queue(1000)
        subscribed = asyncio.Event()

        async def pump() -> None:
            try:
                watch = self._watch(integration_id, replay, subscribed.set)
                async for record in watch:
                    await queue.put(record)
            except grpc.aio.AioRpcError as error:
                await queue.put(_watch_error(error))
            else:
                await queue.put(None)
            finally:
                subscribed.set()  # refused or cancelled: the queue says what happened

        task = asyncio.create_task(pump())
        self._streams[task] = queue
        try:
            try:
                await asyncio.wait_for(subscribed.wait(), self._subscribe_timeout)
            except TimeoutError:
                yield _RETRY
                yield _sse("failure", _WATCH_NOT_TAKEN.body())
                return
            yield _RETRY
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self._heartbeat)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if item is None:
                    return
                if isinstance(item, GatewayError):
                    yield _sse("failure", item.body())
                    return
                record = scrub(item, self._secrets)
                yield _sse("delivery", record, str(record.get("message_id", "")))
        finally:
            del self._streams[task]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _after(first: str, rest: AsyncGenerator[str]) -> AsyncIterator[str]:
    """``first``, then the chunks of ``rest``, which is closed however the stream ends."""
    async with contextlib.aclosing(rest):
        yield first
        async for chunk in rest:
            yield chunk
