"""``create_gateway_app``: the HTTP → gRPC gateway as a Starlette app, wired explicitly."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from amperity_signal.gateway.backend import ChannelFactory, ServiceClient
from amperity_signal.gateway.errors import (
    GatewayError,
    error_response,
    from_rpc_error,
    http_status_error,
    refusal,
    service_request_id,
)
from amperity_signal.gateway.live import STREAM_PATH, LiveEndpoints
from amperity_signal.gateway.live_merge import WorkerWatches
from amperity_signal.gateway.middleware import GatewayMiddleware, allow_header
from amperity_signal.gateway.openapi import openapi_document
from amperity_signal.gateway.ratelimit import TokenBuckets
from amperity_signal.gateway.routes_api import API_METHODS, ApiEndpoints
from amperity_signal.gateway.routes_ops import PACKAGED_STATIC_DIR, OpsEndpoints
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.metrics import GatewayMetrics
from datafly.amperity.v1 import amperity_service_pb2 as pb

_log = logging.getLogger(__name__)

_CLIENT_CLOSED_REQUEST = 499


# gRPC's own resend of a call a stopping service answered CANCELLED with nothing else
# (one it had received but not started: the old process of a handoff, README "Rotating
# keys and certificates"), as the shipped clients do. Deliver's events carry a messageId
# (filled in when missing), so a resent one is one event to Amperity. The clients hold
# the same config (tests/unit/test_retry_dropped_calls_parity.py keeps the three equal).
_RETRY_DROPPED_CALLS = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": pb.DESCRIPTOR.services_by_name["AmperityService"].full_name}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["CANCELLED"],
                },
            }
        ]
    }
)


def _channel(target: str, settings: GatewaySettings) -> ChannelFactory:
    """Channels to the service at ``target``: TLS with ``[gateway] service_ca_file``."""
    # Bodies are capped well below this; the margin covers proto overhead.
    limit = max(4 * 1024 * 1024, 4 * settings.max_batch_body_bytes)
    options = [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.service_config", _RETRY_DROPPED_CALLS),
    ]
    tls = settings.service_tls
    if tls is None:
        return lambda: grpc.aio.insecure_channel(target, options=options)
    # Read once, at start: a file that went missing since the check fails the start.
    credentials = tls.channel_credentials()
    return lambda: grpc.aio.secure_channel(target, credentials, options=options)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = exc.headers
    methods = API_METHODS.get(request.scope["path"])
    if exc.status_code == 405 and methods is not None:
        headers = {**(headers or {}), "Allow": allow_header(methods)}
    return error_response(http_status_error(exc.status_code, exc.detail, headers))


async def _rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    error = from_rpc_error(exc)
    if error.status >= 500:
        # The service's request id for the call, which its own lines about it carry.
        request_id = service_request_id(exc)
        extra = {"request_id": request_id} if request_id else {}
        refused = refusal(exc)
        if refused is None:
            _log.warning(
                "RPC failed on %s %s: %s", request.method, request.url.path, exc.code(), extra=extra
            )
        else:
            # The service warned of this failure, naming the integration and the fix, under
            # this request id ("delivery failed: ..."), and so did the route when the
            # service's log is elsewhere (``ApiEndpoints``): a warning here named neither.
            _log.debug(
                "%s %s answered %d %s: the service refused it with %s for integration %s",
                request.method,
                request.url.path,
                error.status,
                error.code,
                refused.reason,
                refused.integration_id,
                extra=extra,
            )
    return error_response(error)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client closed the connection while sending its body: nobody reads an answer
    # and nothing failed here, so no error log (anyone could flood it). The status is
    # nginx's "client closed request", for the latency histogram; uvicorn sends nothing.
    _log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=_CLIENT_CLOSED_REQUEST)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette logs and re-raises after this answer; the caller sees no internals.
    error = GatewayError(500, "INTERNAL", "The gateway failed unexpectedly; retry later.")
    return error_response(error)


def _answering_errors(app: ASGIApp) -> ASGIApp:
    """``app``, its ``GatewayError`` and ``AioRpcError`` answered by the app's handlers.

    For a route the middleware calls directly, outside Starlette's exception layer: its
    errors get the answers (and the log line) they would get through the router.
    """

    async def answering(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except GatewayError as exc:
            await error_response(exc)(scope, receive, send)
        except grpc.aio.AioRpcError as exc:
            response = await _rpc_error(Request(scope, receive, send), exc)
            await response(scope, receive, send)

    return answering


def create_gateway_app(
    *,
    settings: GatewaySettings,
    grpc_target: str | None = None,
    channel_factory: ChannelFactory | None = None,
    static_dir: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    metrics: GatewayMetrics | None = None,
    multiprocess_dir: str | None = None,
    workers_dir: str | None = None,
    embedded: bool = False,
) -> Starlette:
    """Build the gateway app.

    Args:
        settings: CORS origins, limits and deadlines.
        grpc_target: The service's address, e.g. ``127.0.0.1:50051`` (a plaintext channel,
            or TLS with ``settings.service_ca_file``).
        channel_factory: Makes the gRPC channel instead (TLS, interceptors, tests); exactly
            one of ``grpc_target`` and ``channel_factory`` is required.
        static_dir: Where the demo page and browser client live: the packaged copy by
            default, or a ``clients/browser`` checkout.
        clock: Monotonic seconds, for rate limiting.
        now: The current UTC time: the receive time of events without a timestamp, and
            the time Live Events session cookies expire by.
        metrics: Where request latency by route and status is recorded and what
            ``/metrics`` exposes: the service's when embedded; None makes the gateway's own
            (``GatewayMetrics``: its request latency and refused connections alone).
        multiprocess_dir: ``PROMETHEUS_MULTIPROC_DIR`` when several workers share metrics.
        workers_dir: Where ``serve --workers`` workers listen on Unix sockets: Live Events
            then watches them all (``live_merge``), not only the worker ``client`` reaches.
        embedded: Served in the service's own process (``serve``), whose log already has
            the service's warning of each delivery Amperity refused: the gateway does not
            repeat it. A gateway of its own process (False) warns of each, with the
            reason and the service's advice, as its operator may see only its log.

    Returns:
        The Starlette app; its lifespan closes the gRPC channel, and
        ``app.state.end_streams()`` ends its open Live Events streams.
    """
    if (grpc_target is None) == (channel_factory is None):
        raise ValueError("Pass exactly one of grpc_target and channel_factory.")
    factory = channel_factory or _channel(str(grpc_target), settings)
    client = ServiceClient(
        factory, rpc_timeout=settings.rpc_timeout, deliver_timeout=settings.deliver_timeout
    )
    metrics = metrics if metrics is not None else GatewayMetrics()
    api = ApiEndpoints(client, settings, now, warn_refusals=not embedded)
    ops = OpsEndpoints(
        client,
        openapi_document(),
        static_dir or PACKAGED_STATIC_DIR,
        metrics.registry,
        multiprocess_dir,
        before_scrape=metrics.refresh_key_expiry,
    )
    # The operator page is part of the package, whatever serves the demo.
    workers = WorkerWatches(workers_dir, settings.rpc_timeout) if workers_dir else None
    live = LiveEndpoints(
        client,
        settings,
        PACKAGED_STATIC_DIR,
        now=now,
        watch=workers.watch if workers else None,
        clock=clock,
    )
    buckets = TokenBuckets(
        settings.rate_limit_per_second,
        settings.rate_limit_burst,
        clock,
        settings.rate_limit_max_clients,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.close()

    routes = [*api.routes(), *ops.routes(), *live.routes()]
    known = frozenset(r.path for r in routes)
    middleware = [
        Middleware(
            GatewayMiddleware,
            metrics=metrics,
            routes=known,
            settings=settings,
            methods=API_METHODS,
            buckets=buckets,
            untimed=frozenset({STREAM_PATH}),
            direct={"/v1/enrich": _answering_errors(api.enrich_route)},
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            grpc.aio.AioRpcError: _rpc_error,
            ClientDisconnect: _client_gone,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    # A path one slash off a route is a 404 like any unknown path, not Starlette's 307 to the
    # other spelling: that redirect's Location was an absolute URL built from the request's
    # Host header (anyone's choice) and the socket's scheme (http:// behind a proxy that
    # ends TLS), with no JSON body and no Cache-Control.
    app.router.redirect_slashes = False
    # What the server calls as its shutdown begins (``GatewayServer``): the Live Events
    # streams never end by themselves, and it waits for open responses before it stops.
    app.state.end_streams = live.close
    # What the server calls for each connection it refuses as it is made (``ConnectionGate``).
    refused = metrics.connections_refused
    app.state.count_refused_connection = lambda limit: refused.labels(limit=limit).inc()
    return app
