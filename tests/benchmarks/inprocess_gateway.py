"""In-process CPU per request of ``GET /v1/enrich`` against the bare route of the benchmark.

Part of ``python -m tests.benchmarks.inprocess``. Two layers, each for both routes:

- ``gateway_*_asgi``: the ASGI app called directly with a prebuilt scope (the gateway's
  own HTTP work, the in-process channel and the servicer; no HTTP parsing);
- ``gateway_*_h11``: uvicorn's h11 protocol (``serve``'s until session 19, httptools since:
  kept here so the figures compare with the earlier ones), fed the request bytes the load
  generator sends, over a transport that only collects what is written;
- ``gateway_*_h11_cold``: the same with the CPU's caches evicted before each request.

The bare route is ``tests.benchmarks.gateway_serve``'s, behind the same dispatcher, so
``bare / enrich`` of the h11 figures is what the throughput ratio would be if CPU were all
that counted (the load generator shares the machine, so it is not the same number).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from amperity_signal.config import Settings
from amperity_signal.gateway.app import create_gateway_app
from amperity_signal.gateway.server import gateway_server
from amperity_signal.gateway.settings import GatewaySettings
from amperity_signal.service.app import Service
from tests.benchmarks.gateway_serve import BARE_PATH, with_bare_route

ENRICH_QUERY = b"provider=amperity&anonymous_id=anon-3"
COLD_CALLS = 500
"""Requests per batch of the cold figures (each after an eviction, which is not timed)."""
MAX_TURNS = 10_000
"""Loop turns one in-process request may take (it takes a handful)."""
PerCall = Callable[[int, Callable[[int], Awaitable[Any]]], Awaitable[float]]
PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"h11": H11Protocol, "httptools": HttpToolsProtocol}
"""uvicorn's HTTP/1.1 protocols by the name its ``--http`` option gives them."""


class _Transport(asyncio.Transport):
    """Keeps what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.buffer += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        """Nothing to close."""


def _scope(path: str, query: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8080"), (b"x-pipeline-key", b"pk_web")],
        "state": {},
    }


def _asgi_call(app: Any, path: str, query: bytes) -> Callable[[int], Awaitable[None]]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message

    async def call(_: int) -> None:
        await app(_scope(path, query), receive, send)

    return call


def h11_call(
    server_config: Any,
    path: str,
    query: bytes,
    protocol_class: Any = H11Protocol,
    cookie: str = "",
) -> Callable[[int], Awaitable[None]]:
    """One request through ``protocol_class`` (uvicorn's h11 protocol unless told) per call.

    ``cookie``, when given, is sent as the request's Cookie header.
    """
    protocol = protocol_class(server_config, ServerState(), {}, asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    target = f"{path}?{query.decode()}" if query else path
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Pipeline-Key: pk_web\r\n"
        f"{cookie_line}\r\n"
    ).encode()

    async def call(_: int) -> None:
        protocol.data_received(request)
        # The protocol signals no completion; yield a loop turn at a time until it is done,
        # and fail rather than spin forever when it never completes.
        for _ in range(MAX_TURNS):
            if protocol.cycle.response_complete:
                break
            await asyncio.sleep(0)
        else:
            raise RuntimeError(f"no complete response after {MAX_TURNS} loop turns")
        assert transport.buffer.startswith(b"HTTP/1.1 200 "), bytes(transport.buffer[:200])
        transport.buffer.clear()

    return call


def bench_gateway(service: Service, settings: Settings) -> tuple[Any, Any]:
    """The gateway app with the bare route in front, and uvicorn's config for it.

    As the load benchmark runs it: the service's in-process channel, the rate limit raised
    out of the way.
    """
    gateway_settings = GatewaySettings.from_settings(settings).replace(
        rate_limit_per_second=1e9, rate_limit_burst=10**9
    )
    app = with_bare_route(
        create_gateway_app(
            settings=gateway_settings,
            channel_factory=service.in_process_channel,
            metrics=service.metrics,
        )
    )
    return app, gateway_server(app, gateway_settings).config


async def gateway_figures(
    service: Service, settings: Settings, per_call: PerCall, per_call_cold: PerCall
) -> dict[str, float]:
    """CPU microseconds per request of both routes, at the ASGI and the h11 layer.

    ``*_h11_cold`` are the h11 figures with the CPU's caches evicted before each request
    (``per_call_cold``), which predict the load benchmark better (docs/benchmarks.md).
    """
    app, config = bench_gateway(service, settings)
    routes = {"enrich": ("/v1/enrich", ENRICH_QUERY), "bare": (BARE_PATH, b"")}
    figures: dict[str, float] = {}
    for name, (path, query) in routes.items():
        figures[f"gateway_{name}_asgi"] = await per_call(3000, _asgi_call(app, path, query))
    for name, (path, query) in routes.items():
        figures[f"gateway_{name}_h11"] = await per_call(3000, h11_call(config, path, query))
    for name, (path, query) in routes.items():
        call = h11_call(config, path, query)
        figures[f"gateway_{name}_h11_cold"] = await per_call_cold(COLD_CALLS, call)
    return figures
