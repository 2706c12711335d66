"""DeliverStream's flow control: a caller that stops reading answers stops being read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx

from amperity_signal.service.app import Deps, build_server
from amperity_signal.service.servicer import STREAM_CONCURRENCY
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.contract.test_contract import event
from tests.support import Keys, integration_dict, settings_for

DELIVER_STREAM = "/datafly.amperity.v1.AmperityService/DeliverStream"


def amperity(request: httpx.Request) -> httpx.Response:
    """Accepts every event at once; knows no profile (enrichment finds nobody)."""
    if request.url.path.startswith("/prof/events/"):
        return httpx.Response(202)
    return httpx.Response(404, json={"message": "not found"})


class CallContext:
    """The part of a server call's context the observed DeliverStream handler uses.

    Its caller reads nothing until the test says so: each ``write`` waits for a permit.
    """

    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.written: list[pb.DeliverStreamResponse] = []
        self.permits = asyncio.Semaphore(0)

    async def write(self, message: pb.DeliverStreamResponse) -> None:
        self.written.append(message)
        await self.permits.acquire()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> grpc.StatusCode | None:
        return None


async def run_ready_tasks(rounds: int = 2_000) -> None:
    """Let every runnable task run (the fake Amperity answers without I/O or timers)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_a_stream_whose_answers_are_not_read_takes_no_more_events_than_its_window(
    keys: Keys,
) -> None:
    """Unread answers hold their slots: the service reads no further than 64 events ahead."""
    settings = settings_for(integration_dict("http://amperity.test", keys))
    service = build_server(settings, Deps(transport=httpx.MockTransport(amperity)), bind=False)
    handler: Any = service.handlers[DELIVER_STREAM]
    taken = 0

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        nonlocal taken
        for _ in range(STREAM_CONCURRENCY * 4):
            taken += 1
            yield pb.DeliverStreamRequest(integration_id="web", event=event(type="page"))

    context = CallContext()
    call = asyncio.create_task(handler.stream_stream(requests(), context))
    try:
        await run_ready_tasks()
        first = context.written[0]
        assert first.result.vendor_request.status_code == 202
        # The answer being sent still holds its slot: the window's 64 events are taken,
        # plus one read and waiting for a slot.
        assert taken == STREAM_CONCURRENCY + 1
        for _ in range(10):
            context.permits.release()
        await run_ready_tasks()
        assert taken == STREAM_CONCURRENCY + 11  # ten answers sent, ten slots freed
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        await service.registry.aclose()
