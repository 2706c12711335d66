"""Cross-cutting HTTP concerns, as plain ASGI middleware: CORS, header size, rate limit.

CORS is per pipeline key: a response carries ``Access-Control-Allow-Origin`` (the echoed
origin, with credentials) only when the origin is in that key's ``allowed_origins``. A
preflight cannot carry the key's value, so it is checked against every key's origins
(or the ``pipeline_key`` query parameter's, when given).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import parse_qs

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amperity_signal.gateway.errors import GatewayError, error_response
from amperity_signal.gateway.ratelimit import TokenBuckets
from amperity_signal.gateway.settings import GatewaySettings, normalise_origin

API_PREFIX = "/v1/"
_ALLOWED_HEADERS = "Content-Type, X-Pipeline-Key"
_PREFLIGHT_MAX_AGE = "600"


def pipeline_key_of(scope: Scope) -> str | None:
    """The pipeline key of a request: the ``X-Pipeline-Key`` header, else the query."""
    header = Headers(scope=scope).get("x-pipeline-key")
    if header:
        return header
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("pipeline_key")
    return values[0] if values else None


class CorsMiddleware:
    """Answers preflights and adds CORS headers for the allowed origins of each key.

    Args:
        app: The wrapped application.
        settings: Where the allowed origins per key come from.
        methods: The methods of each API path, e.g. ``{"/v1/enrich": ("GET",)}``.
    """

    def __init__(
        self, app: ASGIApp, settings: GatewaySettings, methods: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.app = app
        self._settings = settings
        self._methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        key = pipeline_key_of(scope)
        allowed = origin is not None and (
            normalise_origin(origin) in self._settings.allowed_origins(key)
        )
        if scope["method"] == "OPTIONS" and path in self._methods:
            await self._preflight(scope, receive, send, origin, allowed=allowed)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Origin")
                if allowed and origin is not None:
                    headers["Access-Control-Allow-Origin"] = origin
                    headers["Access-Control-Allow-Credentials"] = "true"
                    headers["Access-Control-Expose-Headers"] = "Retry-After"
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: str | None, *, allowed: bool
    ) -> None:
        methods = ", ".join((*self._methods[scope["path"]], "OPTIONS"))
        if origin is not None and not allowed:
            error = GatewayError(
                403,
                "ORIGIN_NOT_ALLOWED",
                "This origin is not in the integration's allowed_origins; add it there.",
                headers={"Vary": "Origin"},
            )
            await error_response(error)(scope, receive, send)
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


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class HeaderLimitMiddleware:
    """Refuses requests whose headers add up to more than ``max_header_bytes`` (431).

    Args:
        app: The wrapped application.
        max_header_bytes: The largest total of header names and values.
    """

    def __init__(self, app: ASGIApp, max_header_bytes: int) -> None:
        self.app = app
        self._max = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self._max:
                error = GatewayError(
                    431,
                    "HEADERS_TOO_LARGE",
                    f"The request headers exceed {self._max} bytes; send fewer cookies.",
                )
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RateLimitMiddleware:
    """Limits API requests per client IP; over the limit answers 429 with Retry-After.

    Args:
        app: The wrapped application.
        buckets: The per-client token buckets.
    """

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self._buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        limited = (
            scope["type"] == "http"
            and scope.get("path", "").startswith(API_PREFIX)
            and scope["method"] != "OPTIONS"
        )
        if limited:
            client = scope.get("client")
            wait = self._buckets.take(client[0] if client else "unknown")
            if wait > 0:
                error = GatewayError(
                    429,
                    "RATE_LIMITED",
                    "Too many requests from this client; retry after the Retry-After delay.",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
