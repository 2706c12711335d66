"""Operational routes: liveness, readiness, metrics, the OpenAPI description, the demo page.

``/metrics`` exposes the ``Metrics`` registry the app was built with: the service's own
when embedded in ``serve``, the gateway's when it runs alone. With
``PROMETHEUS_MULTIPROC_DIR`` set, every worker's values are read from that directory
instead (prometheus-client's multiprocess mode), so any worker answers for all. The cache
hit ratio is computed from the very counters the page shows (``WithCacheHitRatio``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from amperity_signal.gateway.backend import ServiceClient
from amperity_signal.gateway.errors import GatewayError, json_response
from amperity_signal.metrics import WithCacheHitRatio

PACKAGED_STATIC_DIR = Path(__file__).parent / "static"
# Served name → (path in the packaged flat copy, path in the clients/browser checkout).
DEMO_ASSETS: dict[str, tuple[str, str, str]] = {
    "index.html": ("index.html", "demo/index.html", "text/html; charset=utf-8"),
    "datafly.js": ("datafly.js", "dist/datafly.js", "text/javascript; charset=utf-8"),
    "datafly.mjs": ("datafly.mjs", "src/datafly.mjs", "text/javascript; charset=utf-8"),
}


class OpsEndpoints:
    """Health, readiness, OpenAPI and the demo storefront.

    Args:
        client: The gRPC client, asked for readiness.
        openapi: The OpenAPI document served at ``/openapi.json``.
        static_dir: Either the packaged flat copy (``index.html``, ``datafly.js``,
            ``datafly.mjs``) or a ``clients/browser`` checkout (``demo/``, ``dist/``, ``src/``).
        registry: The metrics registry ``/metrics`` exposes.
        multiprocess_dir: ``PROMETHEUS_MULTIPROC_DIR`` when workers share metrics; then
            ``/metrics`` aggregates the files there instead of reading ``registry``.
        before_scrape: Called before each ``/metrics`` answer, to bring values that
            depend on the time (days to a key's expiry) up to date.
    """

    def __init__(
        self,
        client: ServiceClient,
        openapi: dict[str, Any],
        static_dir: Path,
        registry: CollectorRegistry,
        multiprocess_dir: str | None = None,
        *,
        before_scrape: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._before_scrape = before_scrape
        self._registry = registry
        self._multiprocess_dir = multiprocess_dir
        self._openapi = openapi
        self._checkout = (static_dir / "demo" / "index.html").is_file()
        self._static_dir = static_dir

    def routes(self) -> list[Route]:
        """The operational routes."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/demo", self.demo_redirect, methods=["GET"]),
            Route("/demo/", self.demo_asset, methods=["GET"]),
            Route("/demo/{name}", self.demo_asset, methods=["GET"]),
            Route("/favicon.ico", self.favicon, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process is alive."""
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: the service's gRPC health check answers SERVING."""
        if await self._client.ready():
            return json_response({"status": "ready"})
        error = GatewayError(
            503, "SERVICE_NOT_READY", "The gRPC service is not serving yet; retry shortly."
        )
        return json_response({"error": error.body()}, 503, {"Retry-After": "1"})

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text exposition."""
        self._before_scrape()
        source: Collector = self._registry
        if self._multiprocess_dir:
            # prometheus-client leaves this constructor unannotated.
            source = MultiProcessCollector(None, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        body = generate_latest(WithCacheHitRatio(source))
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: this gateway's OpenAPI 3 description."""
        return json_response(self._openapi)

    async def favicon(self, request: Request) -> Response:
        """``GET /favicon.ico``: no icon, said without an error.

        Every browser asks for it on the demo and Live Events pages; a 404 put a red
        "Failed to load resource" in the console of pages that work.
        """
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    async def demo_redirect(self, request: Request) -> Response:
        """``GET /demo``: to ``/demo/``, keeping the query string."""
        query = request.url.query
        return RedirectResponse("/demo/" + (f"?{query}" if query else ""), status_code=308)

    async def demo_asset(self, request: Request) -> Response:
        """``GET /demo/`` and ``/demo/datafly.js`` / ``.mjs``: the storefront and client."""
        name = request.path_params.get("name", "index.html")
        asset = DEMO_ASSETS.get(name)
        path = None
        if asset is not None:
            path = self._static_dir / (asset[1] if self._checkout else asset[0])
        if asset is None or path is None or not path.is_file():
            raise GatewayError(
                404, "NOT_FOUND", "The demo serves index.html, datafly.js and datafly.mjs."
            )
        return FileResponse(path, media_type=asset[2], headers={"Cache-Control": "no-cache"})
