"""Fixtures: a fake AmperityService on a real gRPC server, and the gateway in front of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest
from starlette.applications import Starlette

from amperity_signal.gateway import GatewaySettings, PipelineSettings, create_gateway_app
from amperity_signal.gateway.server import (
    GatewayServer,
    bind_socket,
    gateway_server,
    listening_url,
)

from .fakes import KNOWN_KEY, RunningService, start_fake_service

SHOP_ORIGIN = "https://shop.example.com"
CLIENT_IP = "203.0.113.7"
FIXED_NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gateway_settings(**changes: object) -> GatewaySettings:
    """Settings allowing the shop origin for the known key, plus any changes."""
    base = GatewaySettings(pipelines=(PipelineSettings(KNOWN_KEY, (SHOP_ORIGIN,)),))
    return base.replace(**changes)


@contextlib.asynccontextmanager
async def serving(
    app: Starlette, settings: GatewaySettings
) -> AsyncIterator[tuple[GatewayServer, str]]:
    """The app served by uvicorn on 127.0.0.1:0 as the gateway serves it: server and URL."""
    sock = bind_socket("127.0.0.1:0")
    server = gateway_server(app, settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the gateway failed to start"
            await asyncio.sleep(0.01)
        yield server, listening_url(sock, tls=bool(settings.listener_tls))
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def served(app: Starlette, settings: GatewaySettings) -> AsyncIterator[str]:
    """The app served by uvicorn on 127.0.0.1:0 as the gateway serves it; yields its URL."""
    async with serving(app, settings) as (_, url):
        yield url


@pytest.fixture
async def service() -> AsyncIterator[RunningService]:
    """The fake AmperityService, serving on 127.0.0.1:0."""
    running = await start_fake_service()
    try:
        yield running
    finally:
        await running.server.stop(None)


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock for the rate limiter."""
    return FakeClock()


GatewayFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_gateway(service: RunningService, clock: FakeClock) -> AsyncIterator[GatewayFactory]:
    """Builds gateways against the fake (settings changes as keyword arguments)."""
    apps: list[Starlette] = []
    clients: list[httpx.AsyncClient] = []

    def build(**changes: object) -> httpx.AsyncClient:
        app = create_gateway_app(
            settings=gateway_settings(**changes),
            grpc_target=service.target,
            clock=clock,
            now=lambda: FIXED_NOW,
        )
        apps.append(app)
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 50000))
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()
    for app in apps:
        # ASGITransport runs no lifespan; run its shutdown half to close the channel.
        async with app.router.lifespan_context(app):
            pass


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> httpx.AsyncClient:
    """A gateway with the test settings."""
    return make_gateway()
