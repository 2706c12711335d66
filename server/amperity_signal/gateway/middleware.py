"""Cross-cutting HTTP concerns as one plain ASGI layer: latency, CORS, header size, rate limit.

They were four middlewares, each a call and a ``send`` wrapper per request, each reading
the headers again; one layer reads the headers once and wraps ``send`` once. The order is
unchanged, as if still stacked outermost first:

1. **latency**: every request but the untimed paths is observed in
   ``amperity_signal_gateway_seconds{route, status}``, refusals included (500 when the app
   raised without answering). A request the server cuts (a forced stop, or the end of
   the stop's grace period cancelling its task) before its answer began gets a JSON 503 with
   ``Connection: close`` and ``Retry-After``, and no traceback is logged;
2. **CORS** on ``/v1/`` paths, per pipeline key: a response carries
   ``Access-Control-Allow-Origin`` (the echoed origin, with credentials) only when the
   origin is in that key's ``allowed_origins``; every one carries ``Vary: Origin``. A
   preflight cannot carry the key's value, so it is checked against every key's origins
   (or the ``pipeline_key`` query parameter's, when given) and answered here; a refused
   one whose query does not decode, or names an unknown key, is told that instead;
3. **header size**: more than ``max_header_bytes`` of names and values answers 431;
4. **rate limit** per client on ``/v1/`` paths (not preflights): 429 with Retry-After. A
   client is an IPv4 address, or an IPv6 network (``rate_limit_ipv6_prefix``, /64).

Refusals of 3 and 4 carry the CORS headers of 2, so a page can read them. Then the request
reaches the app, or, for the ``direct`` routes (``GET /v1/enrich``), that route's own ASGI
app without Starlette's router and exception layers in between.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amperity_signal.gateway.errors import GatewayError, error_response
from amperity_signal.gateway.ratelimit import TokenBuckets, client_keys
from amperity_signal.gateway.routes_api import query_pairs
from amperity_signal.gateway.settings import GatewaySettings, normalise_origin
from amperity_signal.metrics import GatewayMetrics, Observes
from amperity_signal.processes import cut_by_the_server

API_PREFIX = "/v1/"
_ALLOWED_HEADERS = "Content-Type, X-Pipeline-Key"
_PREFLIGHT_MAX_AGE = "600"
_VARY = b"vary"
# A request whose task the server cancelled (a forced stop, or the grace period's end)
# before it was answered: its caller may send it again, on a new connection.
_CUT = GatewayError(
    503,
    "SERVICE_UNAVAILABLE",
    "The gateway stopped before answering; send the request again after the Retry-After delay.",
    headers={"Retry-After": "1", "Connection": "close"},
)
_CORS_ANSWER = (
    (b"access-control-allow-origin", None),
    (b"access-control-allow-credentials", b"true"),
    (b"access-control-expose-headers", b"Retry-After"),
)


def pipeline_key_of(header: str | None, query_string: bytes) -> str | None:
    """The pipeline key of a request: the ``X-Pipeline-Key`` header, else the query."""
    if header:
        return header
    values = parse_qs(query_string.decode("latin-1")).get("pipeline_key")
    return values[0] if values else None


def _set_header(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    """Set a header (lower-case ``name``), replacing every earlier value, in place."""
    found = [i for i, (key, _) in enumerate(headers) if key == name]
    for index in reversed(found[1:]):
        del headers[index]
    if found:
        headers[found[0]] = (name, value)
    else:
        headers.append((name, value))


def _add_cors(message: Message, origin: str | None) -> None:
    """``Vary: Origin`` (joined to any Vary values), and the allow headers for ``origin``.

    What Starlette's ``MutableHeaders.add_vary_header`` and item assignment do, without
    building the header objects for every response.
    """
    headers = list(message["headers"])
    message["headers"] = headers
    varies = [value for name, value in headers if name == _VARY]
    if varies:
        _set_header(headers, _VARY, b", ".join([*varies, b"Origin"]))
    else:  # the usual answer: no Vary of its own
        headers.append((_VARY, b"Origin"))
    if origin is not None:
        encoded = origin.encode("latin-1")
        for name, value in _CORS_ANSWER:
            _set_header(headers, name, encoded if value is None else value)


class GatewayMiddleware:
    """Latency, CORS, header size and rate limit of every HTTP request (module docstring).

    Args:
        app: The wrapped application.
        metrics: Where ``gateway_latency`` is observed.
        routes: Known paths; anything else is recorded as ``other`` to bound cardinality.
        settings: The allowed origins per key and ``max_header_bytes``.
        methods: The methods of each API path, e.g. ``{"/v1/enrich": ("GET",)}``.
        buckets: The per-client token buckets.
        untimed: Paths not recorded at all: streams, whose duration is the viewer's.
        direct: API paths whose ASGI app this layer calls itself for their methods (and HEAD
            with GET, as Starlette's routes take it); the app must answer its own errors.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        routes: frozenset[str],
        settings: GatewaySettings,
        methods: Mapping[str, tuple[str, ...]],
        buckets: TokenBuckets,
        untimed: frozenset[str] = frozenset(),
        direct: Mapping[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes
        self._untimed = untimed
        self._methods = methods
        self._buckets = buckets
        self._client_key = client_keys(settings.rate_limit_ipv6_prefix)
        self._max_header_bytes = settings.max_header_bytes
        # Settings are frozen: each key's origins (and the union, for no key) once.
        self._origins = {
            p.pipeline_key: settings.allowed_origins(p.pipeline_key) for p in settings.pipelines
        }
        self._any_origin = settings.allowed_origins(None)
        # One tally per (route, status): ``labels()`` validates and locks per call.
        self._latency: dict[tuple[str, int], Observes] = {}
        self._direct = {
            (path, method): route
            for path, route in (direct or {}).items()
            for method in _with_head(methods[path])
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        # One pass over the headers: the size, and the first Origin and X-Pipeline-Key.
        size = 0
        origin: str | None = None
        key_header: str | None = None
        for name, value in scope["headers"]:
            size += len(name) + len(value)
            if name == b"origin" and origin is None:
                origin = value.decode("latin-1")
            elif name == b"x-pipeline-key" and key_header is None:
                key_header = value.decode("latin-1")
        api = path.startswith(API_PREFIX)
        preflight = api and scope["method"] == "OPTIONS" and path in self._methods
        allowed = (
            api
            and origin is not None
            and normalise_origin(origin)
            in self._allowed(pipeline_key_of(key_header, scope.get("query_string", b"")))
        )
        cors = api and not preflight  # a preflight's answer carries its own CORS headers
        echoed = origin if allowed else None
        timed = path not in self._untimed
        status = 0  # no answer begun yet

        # One wrapper for the latency's status and the CORS headers, instead of one each.
        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if cors:
                    _add_cors(message, echoed)
            await send(message)

        wrapped = send_observed if timed or cors else send
        try:
            if preflight:
                await self._preflight(scope, receive, wrapped, origin, allowed=allowed)
            else:
                await self._limited(scope, receive, wrapped, size, api=api)
        except asyncio.CancelledError:
            if not cut_by_the_server():
                raise
            # A 503 if nothing was sent yet; half an answer is not finished (the server
            # closes its connection). No traceback: a stop, not the gateway failing.
            if not status and wrapped is send_observed:
                await error_response(_CUT)(scope, receive, wrapped)
        finally:
            if timed:
                self._observe(path, status or 500, time.perf_counter() - started)

    def _observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in self._routes else "other"
        child = self._latency.get((route, status))
        if child is None:
            child = self._metrics.gateway_latency.tally(route, str(status))
            self._latency[(route, status)] = child
        child.observe(seconds)

    def _allowed(self, pipeline_key: str | None) -> frozenset[str]:
        if pipeline_key is None:
            return self._any_origin
        return self._origins.get(pipeline_key, frozenset())

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, size: int, *, api: bool
    ) -> None:
        """The header size limit, then the rate limit (API paths only), then the app."""
        if size > self._max_header_bytes:
            error = GatewayError(
                431,
                "HEADERS_TOO_LARGE",
                f"The request headers exceed {self._max_header_bytes} bytes; send fewer cookies.",
            )
            await error_response(error)(scope, receive, send)
            return
        if api and scope["method"] != "OPTIONS":
            client = scope.get("client")
            wait = self._buckets.take(self._client_key(client[0]) if client else "unknown")
            if wait > 0:
                error = GatewayError(
                    429,
                    "RATE_LIMITED",
                    "Too many requests from this client; retry after the Retry-After delay.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await error_response(error)(scope, receive, send)
                return
            direct = self._direct.get((scope["path"], scope["method"]))
            if direct is not None:
                await direct(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: str | None, *, allowed: bool
    ) -> None:
        methods = allow_header(self._methods[scope["path"]])
        if origin is not None and not allowed:
            await error_response(self._preflight_refusal(scope))(scope, receive, send)
            return
        headers = {"Allow": methods, "Vary": "Origin", "Cache-Control": "no-store"}
        if origin is not None:
            headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Allow-Methods": methods,
                    "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                    "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
                }
            )
        await send({"type": "http.response.start", "status": 204, "headers": _raw(headers)})
        await send({"type": "http.response.body", "body": b""})

    def _preflight_refusal(self, scope: Scope) -> GatewayError:
        """Why a preflight is refused: its query, its ``pipeline_key``, else its origin.

        A query that does not decode, or a key no integration has, left no origins to
        allow: the 403 blamed the origin, and sent its developer to allowed_origins.
        """
        query: bytes = scope.get("query_string", b"")
        try:
            query_pairs(query.decode("latin-1"))
        except GatewayError as error:
            error.headers.setdefault("Vary", "Origin")
            return error
        # Read as the check read it (a preflight carries no X-Pipeline-Key value).
        key = pipeline_key_of(None, query)
        if key is not None and key not in self._origins:
            return GatewayError(
                404,
                "UNKNOWN_PIPELINE_KEY",
                "No integration uses the pipeline_key this preflight names; copy the key "
                "from the integration's pipeline_key.",
                field="pipeline_key",
                headers={"Vary": "Origin"},
            )
        return GatewayError(
            403,
            "ORIGIN_NOT_ALLOWED",
            "This origin is not in the integration's allowed_origins; add it there.",
            headers={"Vary": "Origin"},
        )


def allow_header(methods: tuple[str, ...]) -> str:
    """An API path's ``Allow``: its methods, HEAD with GET, and OPTIONS (its preflight).

    The same in a preflight's answer and in a 405's (RFC 9110: the methods the target
    supports): the preflight's left out HEAD, which ``/v1/enrich`` takes, and the 405's
    (Starlette's) left out OPTIONS, which every ``/v1`` route answers.
    """
    return ", ".join((*_with_head(methods), "OPTIONS"))


def _with_head(methods: tuple[str, ...]) -> tuple[str, ...]:
    return (*methods, "HEAD") if "GET" in methods and "HEAD" not in methods else methods


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
