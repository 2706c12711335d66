"""Gateway latency in the service's Prometheus metrics, by route and status."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from amperity_signal.metrics import Metrics


class LatencyMiddleware:
    """Observes ``amperity_signal_gateway_seconds{route, status}`` for every request.

    Args:
        app: The wrapped application.
        metrics: The metrics holder.
        routes: Known paths; anything else is recorded as ``other`` to bound cardinality.
        untimed: Paths not recorded at all: streams, whose duration is the viewer's.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: frozenset[str],
        untimed: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes
        self._untimed = untimed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope.get("path", "") in self._untimed:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            path = scope.get("path", "")
            route = path if path in self._routes else "other"
            self._metrics.gateway_latency.labels(route=route, status=str(status)).observe(
                time.perf_counter() - started
            )
