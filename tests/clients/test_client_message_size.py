"""gRPC's own refusal of a message over its size limit is final, never retried."""

from __future__ import annotations

import asyncio

import pytest

from amperity_signal_client import (
    AmperityClient,
    AsyncAmperityClient,
    MessageTooLarge,
    RetryPolicy,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .conftest import ClientFactory
from .fakes import FakeSleep, FakeSyncSleep, RunningService

SERVER_LIMIT = 4 * 1024 * 1024
"""grpc.aio's default receive limit, which the fake service keeps."""


def oversized(message_id: str = "big-1") -> pb.Event:
    """A track event a little over the fake service's receive limit."""
    event = pb.Event(message_id=message_id, type="track", event="Viewed", anonymous_id="a-1")
    event.properties.update({"blob": "x" * (SERVER_LIMIT + 1_000)})
    return event


async def test_an_event_over_the_services_size_limit_is_not_retried(
    client: AsyncAmperityClient, fake_sleep: FakeSleep
) -> None:
    """One attempt; the error names both sizes and what to change."""
    with pytest.raises(MessageTooLarge) as raised:
        await client.deliver(oversized())

    assert fake_sleep.waits == []
    error = raised.value
    assert error.reason == "MESSAGE_TOO_LARGE"
    assert error.metadata["limit"] == str(SERVER_LIMIT)
    assert error.metadata["refused_by"] == "service"
    assert "send smaller events" in str(error)


async def test_an_answer_over_the_clients_size_limit_is_not_delivered_again(
    running: RunningService, make_client: ClientFactory, fake_sleep: FakeSleep
) -> None:
    """The call ran on the service: retrying it would deliver the event once more."""
    client = make_client(channel_options=[("grpc.max_receive_message_length", 8)])
    event = pb.Event(message_id="m-1", type="track", event="Viewed", anonymous_id="a-1")

    with pytest.raises(MessageTooLarge) as raised:
        await client.deliver(event)

    assert running.service.calls == ["Deliver"]
    assert fake_sleep.waits == []
    assert raised.value.metadata["refused_by"] == "client"
    assert "grpc.max_receive_message_length" in str(raised.value)


async def test_a_streamed_event_over_the_size_limit_ends_deliver_many_without_reopening(
    running: RunningService, make_client: ClientFactory
) -> None:
    """The stream is not reopened to send the same oversized event again and again."""
    client = make_client(stream_retry=RetryPolicy(max_attempts=5, total_timeout=60.0))

    with pytest.raises(MessageTooLarge):
        async for _ in client.deliver_many([oversized()]):
            pass

    assert running.service.streams_opened == 1


async def test_the_sync_client_does_not_retry_an_event_over_the_size_limit(
    running: RunningService, sync_client: AmperityClient, sync_sleep: FakeSyncSleep
) -> None:
    """The blocking client decides as the asyncio one does."""
    with pytest.raises(MessageTooLarge):
        await asyncio.to_thread(sync_client.deliver, oversized())

    assert sync_sleep.waits == []
