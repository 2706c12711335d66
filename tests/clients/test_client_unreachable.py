"""deliver_many against a service that is down: it fails within the configured bounds."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from amperity_signal_client import AmperityClient, AsyncAmperityClient, RetryPolicy, Unavailable
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .fakes import FakeSleep, FakeSyncSleep, start_service

EVENT = pb.Event(message_id="m-1", type="track", event="Product Viewed", anonymous_id="a-1")
# Bounds the old behaviour (wait for the idle timeout, reopen under stream_retry) would
# also reach in well under a second, so a regression fails an assertion, not the clock.
IDLE = 0.4
STREAM_RETRY = RetryPolicy(max_attempts=2)
SERVICE_UNREACHABLE = "SERVICE_UNREACHABLE"


@pytest.fixture
def closed_port() -> str:
    """A 127.0.0.1 address nothing listens on: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A 127.0.0.1 address that takes connections and never speaks: a hung host."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def _client(target: str, sleep: FakeSleep, **options: object) -> AsyncAmperityClient:
    settings: dict[str, object] = {
        "integration_id": "shop",
        "sleep": sleep,
        "rng": random.Random(7),
        "retry": RetryPolicy(max_attempts=3, total_timeout=60.0),
        "stream_retry": STREAM_RETRY,
        "stream_idle_timeout": IDLE,
    }
    settings.update(options)
    return AsyncAmperityClient(target, **settings)  # type: ignore[arg-type]


async def _deliver_all(client: AsyncAmperityClient) -> list[pb.DeliverStreamResponse]:
    async with client:
        return [response async for response in client.deliver_many([EVENT])]


async def test_deliver_many_to_a_closed_port_fails_under_the_retry_policy(
    closed_port: str,
) -> None:
    """A refused connection fails each attempt at once; after max_attempts: UNAVAILABLE."""
    sleep = FakeSleep()
    client = _client(closed_port, sleep)

    with pytest.raises(Unavailable) as raised:
        await _deliver_all(client)

    assert raised.value.reason == SERVICE_UNREACHABLE
    assert raised.value.metadata["target"] == closed_port
    assert f"service at {closed_port} (the connection failed)" in str(raised.value)
    # Three attempts under the unary retry policy: two backoffs between them.
    assert len(sleep.waits) == 3 - 1


async def test_deliver_many_to_a_hung_host_waits_default_timeout_per_attempt(
    silent_port: str,
) -> None:
    """A connection that never completes is given up after default_timeout, per attempt."""
    sleep = FakeSleep()
    client = _client(silent_port, sleep, default_timeout=0.2, retry=RetryPolicy(max_attempts=2))

    with pytest.raises(Unavailable) as raised:
        await _deliver_all(client)

    assert raised.value.reason == SERVICE_UNREACHABLE
    assert f"service at {silent_port} (not connected within 0.2 s)" in str(raised.value)
    assert len(sleep.waits) == 2 - 1


async def test_deliver_many_connect_waits_end_by_the_retry_total_timeout(
    silent_port: str,
) -> None:
    """Before the service was reached, the last wait is cut to what total_timeout leaves."""
    sleep = FakeSleep()
    retry = RetryPolicy(max_attempts=10, total_timeout=0.3)
    client = _client(silent_port, sleep, default_timeout=0.2, retry=retry)

    with pytest.raises(Unavailable) as raised:
        await _deliver_all(client)

    waited = float(raised.value.metadata["waited_seconds"])
    assert raised.value.reason == SERVICE_UNREACHABLE
    # The first attempt waited default_timeout; the last only what was left of the 0.3 s.
    assert waited < 0.2
    assert len(sleep.waits) < 10 - 1


async def test_deliver_many_that_lost_the_service_reopens_then_names_the_target() -> None:
    """A run that reached the service and lost it for good raises after stream_retry."""
    running = await start_service()
    sleep = FakeSleep()
    client = _client(running.target, sleep, default_timeout=0.2)
    first_answered = asyncio.Event()
    stopped = asyncio.Event()

    async def source() -> AsyncIterator[pb.Event]:
        yield EVENT
        await first_answered.wait()
        await running.server.stop(None)
        stopped.set()
        yield pb.Event(message_id="m-2", type="track", event="Viewed", anonymous_id="a-1")

    answered: list[str] = []

    async def deliver() -> None:
        async with client:
            async for response in client.deliver_many(source()):
                answered.append(response.message_id)
                first_answered.set()

    with pytest.raises(Unavailable) as raised:
        await deliver()

    assert answered == ["m-1"]
    assert stopped.is_set()
    assert raised.value.reason == SERVICE_UNREACHABLE
    assert f"service at {running.target} (not connected within 0.2 s)" in str(raised.value)
    # Reopened under stream_retry (two attempts), not the unary retry policy (three).
    assert len(sleep.waits) == STREAM_RETRY.max_attempts - 1


def test_sync_deliver_many_to_a_closed_port_fails_under_the_retry_policy(
    closed_port: str,
) -> None:
    """The blocking client fails the same way: UNAVAILABLE naming the target."""
    sleep = FakeSyncSleep()
    client = AmperityClient(
        closed_port,
        integration_id="shop",
        sleep=sleep,
        rng=random.Random(7),
        retry=RetryPolicy(max_attempts=3, total_timeout=60.0),
        stream_retry=STREAM_RETRY,
        stream_idle_timeout=IDLE,
    )

    with client, pytest.raises(Unavailable) as raised:
        list(client.deliver_many([EVENT]))

    assert raised.value.reason == SERVICE_UNREACHABLE
    assert f"service at {closed_port} (the connection failed)" in str(raised.value)
    assert len(sleep.waits) == 3 - 1
