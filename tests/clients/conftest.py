"""Fixtures: the scriptable fake service on 127.0.0.1:0 and clients (async, sync) of it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from amperity_signal_client import AmperityClient, AsyncAmperityClient, RetryPolicy

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
