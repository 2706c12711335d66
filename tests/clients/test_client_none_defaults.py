"""None means the default, for every option of both clients and of every method.

Until session 20 it did for some (``integration_id``, ``attempt_timeout``, ``replay``) and
not for others: a None timeout or ``concurrency`` was refused, a None ``retry``, ``sleep``
or ``clock`` failed at the first retry, None ``channel_options`` dropped the client's
defaults for grpc's own, and ``reconnect=None`` turned reconnecting off. The Node client
takes null as it takes undefined (clients/node/test/options.test.js).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing, closing

import pytest

from amperity_signal_client import (
    DEFAULT_CHANNEL_OPTIONS,
    DEFAULT_RETRY,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TIMEOUT,
    AmperityClient,
    AsyncAmperityClient,
)
from amperity_signal_client.client import ClientOptions, client_options
from amperity_signal_client.retry import DEFAULT_STREAM_RETRY
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .fakes import RunningService, live_record, unavailable

EVENT = pb.Event(message_id="m-1", type="track", event="Product Viewed", anonymous_id="a-1")
OPTIONS = (
    "channel_options",
    "credentials",
    "default_timeout",
    "retry",
    "stream_retry",
    "stream_idle_timeout",
    "sleep",
    "clock",
    "rng",
)
HANG_GUARD = 10.0


def test_none_options_resolve_to_the_defaults() -> None:
    """Each of the options both clients resolve alike."""
    assert client_options(None, None, None, None, None) == ClientOptions(
        DEFAULT_CHANNEL_OPTIONS,
        DEFAULT_TIMEOUT,
        DEFAULT_RETRY,
        DEFAULT_STREAM_RETRY,
        DEFAULT_STREAM_IDLE_TIMEOUT,
    )


async def test_an_async_client_built_with_none_everywhere_works_as_a_default_one(
    running: RunningService,
) -> None:
    """Retried once (the default policy, sleep and clock), with the defaults' user agent."""
    none = dict.fromkeys(OPTIONS)
    client = AsyncAmperityClient(running.target, integration_id="shop", **none)
    running.service.unary_failures = [unavailable(None)]
    try:
        delivered = await client.deliver(EVENT, attempt_timeout=None)
        streamed = [r async for r in client.deliver_many([EVENT], concurrency=None)]
        running.service.live.publish(live_record("m-1", 1))
        watch = client.watch_deliveries(replay=1, integration_id=None, reconnect=None)
        async with aclosing(watch) as records:
            watched = await asyncio.wait_for(anext(records), HANG_GUARD)
    finally:
        await client.aclose()

    assert delivered.message_id == "m-1"
    assert [r.message_id for r in streamed] == ["m-1"]
    assert watched.message_id == "m-1"
    assert running.service.calls[:2] == ["Deliver", "Deliver"]
    agent = str(running.service.metadata[0]["user-agent"])
    assert agent.startswith("amperity-signal-client-python/")
    assert all(d is not None and d < DEFAULT_TIMEOUT + 1 for d in running.service.deadlines)


async def test_a_sync_client_built_with_none_everywhere_works_as_a_default_one(
    running: RunningService,
) -> None:
    """The blocking client resolves the same options and method options alike."""
    none = dict.fromkeys(OPTIONS)
    client = AmperityClient(running.target, integration_id="shop", **none)
    running.service.unary_failures = [unavailable(None)]

    def use() -> tuple[str, list[str], str]:
        delivered = client.deliver(EVENT, attempt_timeout=None)
        streamed = [r.message_id for r in client.deliver_many([EVENT], concurrency=None)]
        running.service.live.publish(live_record("m-1", 1))
        watch = client.watch_deliveries(replay=1, integration_id=None, reconnect=None)
        with closing(watch) as records:
            return delivered.message_id, streamed, next(records).message_id

    try:
        answers = await asyncio.wait_for(asyncio.to_thread(use), HANG_GUARD)
    finally:
        client.close()

    assert answers == ("m-1", ["m-1"], "m-1")
    assert running.service.calls[:2] == ["Deliver", "Deliver"]
    assert str(running.service.metadata[0]["user-agent"]).startswith(
        "amperity-signal-client-python/"
    )


@pytest.mark.parametrize("client_class", [AsyncAmperityClient, AmperityClient])
async def test_reconnect_none_reconnects_as_the_default_does(
    running: RunningService, client_class: type[AsyncAmperityClient | AmperityClient]
) -> None:
    """A watch whose first call fails is reopened, as with reconnect left out."""
    running.service.watch_failures = [unavailable(0.0)]
    running.service.live.publish(live_record("m-1", 1))
    client = client_class(running.target, integration_id="shop", sleep=None)
    try:
        if isinstance(client, AsyncAmperityClient):
            async with aclosing(client.watch_deliveries(replay=1, reconnect=None)) as records:
                record = await asyncio.wait_for(anext(records), HANG_GUARD)
        else:
            sync = client

            def first() -> pb.WatchDeliveriesResponse:
                with closing(sync.watch_deliveries(replay=1, reconnect=None)) as records:
                    return next(records)

            record = await asyncio.wait_for(asyncio.to_thread(first), HANG_GUARD)
    finally:
        if isinstance(client, AsyncAmperityClient):
            await client.aclose()
        else:
            client.close()

    assert record.message_id == "m-1"
    assert running.service.calls == ["WatchDeliveries", "WatchDeliveries"]
