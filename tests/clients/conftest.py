"""Fixtures: the scriptable fake service and clients (async, sync) of it; the real service.

Both serve on 127.0.0.1:0; the real one runs in-process on the sandbox, for what only it
can answer (which consent states meet an integration's condition).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from amperity_signal.sandbox import SandboxApp, create_app
from amperity_signal.service.app import Deps, Service, build_server
from amperity_signal_client import AmperityClient, AsyncAmperityClient, RetryPolicy
from tests.contract.harness import SANDBOX_URL
from tests.support import integration_dict, mint_keys, settings_for

from .fakes import FakeSleep, FakeSyncSleep, RunningService, start_service

INTEGRATION_ID = "shop"


@pytest.fixture
async def running() -> AsyncIterator[RunningService]:
    """The scripted AmperityService, serving on 127.0.0.1:0."""
    started = await start_service()
    try:
        yield started
    finally:
        await started.server.stop(None)


@pytest.fixture
def fake_sleep() -> FakeSleep:
    """A sleep that records its waits instead of waiting."""
    return FakeSleep()


ClientFactory = Callable[..., AsyncAmperityClient]


@pytest.fixture
async def make_client(
    running: RunningService, fake_sleep: FakeSleep
) -> AsyncIterator[ClientFactory]:
    """Builds async clients against the fake (constructor arguments as keywords)."""
    clients: list[AsyncAmperityClient] = []

    def build(**options: object) -> AsyncAmperityClient:
        settings: dict[str, object] = {
            "integration_id": INTEGRATION_ID,
            "sleep": fake_sleep,
            "rng": random.Random(7),
            "retry": RetryPolicy(max_attempts=5, total_timeout=60.0),
        }
        settings.update(options)
        client = AsyncAmperityClient(running.target, **settings)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: ClientFactory) -> AsyncAmperityClient:
    """An async client with the default settings and a fake sleep."""
    return make_client()


@pytest.fixture
def sync_sleep() -> FakeSyncSleep:
    """A blocking sleep that records its waits."""
    return FakeSyncSleep()


@pytest.fixture
def sync_client(running: RunningService, sync_sleep: FakeSyncSleep) -> Iterator[AmperityClient]:
    """A sync client against the fake, with a fake sleep."""
    client = AmperityClient(
        running.target,
        integration_id="shop",
        sleep=sync_sleep,
        rng=random.Random(7),
        retry=RetryPolicy(total_timeout=60.0),
    )
    yield client
    client.close()


RealServiceFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def real_service() -> AsyncIterator[RealServiceFactory]:
    """Starts the real service for integration "web" (pipeline key "pk_web") on the sandbox.

    Keywords override the integration's settings (e.g. ``browser_consent``); each start
    returns the gRPC target, and every service is stopped after the test.
    """
    started: list[Service] = []

    async def start(**overrides: Any) -> str:
        sandbox = create_app(profile_delay=0.0, seed=7)
        assert isinstance(sandbox, SandboxApp)
        settings = settings_for(integration_dict(SANDBOX_URL, mint_keys(), **overrides))
        service = build_server(settings, Deps(transport=httpx.ASGITransport(app=sandbox)))
        await service.start()
        started.append(service)
        return f"127.0.0.1:{service.port}"

    yield start
    for service in started:
        await service.stop(0)
