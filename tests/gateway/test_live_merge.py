"""Live Events under ``serve --workers``: every worker's watch merged into one stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pytest

from amperity_signal.gateway.live_merge import Opened, WorkerWatches, merged, worker_socket
from amperity_signal.service.app import Service, build_server
from tests.contract.harness import SANDBOX_URL
from tests.support import delivery_record, integration_dict, mint_keys, settings_for

_End = grpc.aio.AioRpcError | None


def record(message_id: str, delivered_at: str) -> dict[str, Any]:
    """A merged watch's record: only what the merge reads, and its id."""
    return {"message_id": message_id, "delivered_at": delivered_at}


class Source:
    """A worker's watch: its replayed records at once, then what a test sends it."""

    def __init__(self, *replayed: dict[str, Any]) -> None:
        self.replayed = replayed
        self.queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue()

    async def _records(self) -> AsyncIterator[dict[str, Any]]:
        for item in self.replayed:
            yield item
        while True:
            sent = await self.queue.get()
            if sent is None:
                return
            if isinstance(sent, grpc.aio.AioRpcError):
                raise sent
            yield sent

    def opened(self) -> Opened:
        return Opened(len(self.replayed), self._records())


def _stopping() -> grpc.aio.AioRpcError:
    empty = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, empty, empty, "stopping")


async def test_replay_is_the_newest_records_of_every_watch_in_delivery_order() -> None:
    """Three of five replayed records across two workers, by time (not by text: .5Z < Z)."""
    first = Source(record("a1", "2026-12-05T10:00:01Z"), record("a2", "2026-12-05T10:00:03Z"))
    second = Source(
        record("b1", "2026-12-05T10:00:00Z"),
        record("b2", "2026-12-05T10:00:02.500Z"),
        record("b3", "2026-12-05T10:00:02Z"),
    )
    watch = merged([first.opened(), second.opened()], replay=3)
    shown = [(await anext(watch))["message_id"] for _ in range(3)]
    assert shown == ["b3", "b2", "a2"]
    await watch.aclose()


async def test_live_records_of_every_watch_follow_and_one_ending_leaves_the_rest() -> None:
    """After the replay, live records as each watch yields them; a stopped worker drops out."""
    first = Source(record("a1", "2026-12-05T10:00:05Z"))
    second = Source()
    watch = merged([first.opened(), second.opened()], replay=10)
    assert (await anext(watch))["message_id"] == "a1"
    second.queue.put_nowait(record("b-live", "2026-12-05T10:00:04Z"))
    assert (await anext(watch))["message_id"] == "b-live"
    first.queue.put_nowait(_stopping())  # that worker stops: the stream goes on
    second.queue.put_nowait(record("b-live-2", "2026-12-05T10:00:06Z"))
    assert (await anext(watch))["message_id"] == "b-live-2"
    second.queue.put_nowait(None)
    # The last one gone, the merged watch ends with the failure it saw, as one watch would.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await anext(watch)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_replay_asked_shows_only_live_records() -> None:
    """replay=0: what the workers replayed anyway is dropped (they were asked for none)."""
    source = Source(record("old", "2026-12-05T10:00:00Z"))
    watch = merged([source.opened()], replay=0)
    source.queue.put_nowait(record("new", "2026-12-05T10:00:01Z"))
    assert (await anext(watch))["message_id"] == "new"
    await watch.aclose()


@contextlib.asynccontextmanager
async def worker(path: str) -> AsyncIterator[Service]:
    """A real service listening on ``path``, as a ``serve --workers`` worker does."""
    settings = settings_for(integration_dict(SANDBOX_URL, mint_keys()))
    service = build_server(settings, bind=False)
    service.listen(settings.server, worker_socket=path)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(0)


async def test_worker_watches_merge_every_socket_and_leave_out_a_gone_worker() -> None:
    """Two workers answer, a third's socket is left by a killed process: two workers shown."""
    with tempfile.TemporaryDirectory(prefix="lm", dir="/tmp") as directory:
        with socket.socket(socket.AF_UNIX) as gone:  # bound, never listening: refuses
            gone.bind(worker_socket(directory, 2))
        async with (
            worker(worker_socket(directory, 0)) as one,
            worker(worker_socket(directory, 1)) as two,
        ):
            base = datetime(2026, 12, 5, tzinfo=UTC)
            for n, service in ((1, one), (2, two), (3, one)):
                stamped = dataclasses.replace(
                    delivery_record(n), delivered_at=base + timedelta(seconds=n)
                )
                service.live.publish(stamped)
            subscribed = asyncio.Event()
            watch = WorkerWatches(directory, 5.0).watch("", 2, subscribed.set)
            shown = [(await anext(watch))["message_id"] for _ in range(2)]
            assert subscribed.is_set()
            assert shown == ["msg-2", "msg-3"]
            two.live.publish(delivery_record(4))
            assert (await anext(watch))["message_id"] == "msg-4"
            await watch.aclose()
            # Every worker refuses an unknown integration: the stream says so, as with one.
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await anext(WorkerWatches(directory, 5.0).watch("nope", 0))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
