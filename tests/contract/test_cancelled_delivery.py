"""A Deliver its caller cancels is still counted and shown in Live Events, as cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from amperity_signal.service.app import Deps, Service, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.test_contract import event
from tests.support import Keys, integration_dict, settings_for


class EndlessBody(httpx.AsyncByteStream):
    """A response body that never comes; ``hung`` is set once it is being read."""

    def __init__(self, hung: asyncio.Event) -> None:
        self._hung = hung

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._hung.set()
        await asyncio.Event().wait()
        yield b""  # unreachable: makes this an async generator


class SilentAmperity(httpx.AsyncBaseTransport):
    """Amperity that never answers (or answers events 202 and never sends the body).

    ``asked`` is set once a call hangs on it; ``paths`` are the paths asked for.
    """

    def __init__(self, *, accepting: bool = False) -> None:
        self.asked = asyncio.Event()
        self.paths: list[str] = []
        self._accepting = accepting

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self._accepting and request.url.path.startswith("/prof/events/"):
            return httpx.Response(202, stream=EndlessBody(self.asked))
        self.asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@dataclass
class Running:
    """A started service, a watch on its Live Events and a stub, over one channel."""

    service: Service
    stub: pb_grpc.AmperityServiceStub
    watch: grpc.aio.UnaryStreamCall[pb.WatchDeliveriesRequest, pb.WatchDeliveriesResponse]


@pytest.fixture
async def amperity(request: pytest.FixtureRequest) -> SilentAmperity:
    """Amperity whose every call hangs (after a 202 for events when the test says so)."""
    return SilentAmperity(accepting=getattr(request, "param", "") == "accepting")


@pytest.fixture
async def running(
    request: pytest.FixtureRequest, keys: Keys, amperity: SilentAmperity
) -> AsyncIterator[Running]:
    """The service, its Profile API enrichment on only when a test cancels during it."""
    overrides: dict[str, Any] = {} if request.param == "enriching" else {"profile_api_key": None}
    settings = settings_for(integration_dict("http://amperity.test", keys, **overrides))
    service = build_server(settings, Deps(transport=amperity))
    await service.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        watch = stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
        await watch.initial_metadata()
        yield Running(service, stub, watch)
        watch.cancel()
    await service.stop(0)


def cancelled_count(service: Service, amperity_type: str) -> float:
    """The deliveries counted as cancelled for one amperity_type label."""
    value = service.metrics.registry.get_sample_value(
        "amperity_signal_deliveries_total",
        {
            "integration": "web",
            "amperity_type": amperity_type,
            "outcome": "cancelled",
            "reason": "",
        },
    )
    return value or 0.0


async def hang_up_mid_delivery(
    running: Running, amperity: SilentAmperity
) -> tuple[pb.Event, pb.WatchDeliveriesResponse]:
    """Send a Deliver, hang up once Amperity was asked something; the record it leaves."""
    sent = event(type="track", event="add_to_cart", user_id="u-cancel")
    # The generated stub's types know only the sync call; the aio call can be cancelled.
    call: Any = running.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
    await amperity.asked.wait()
    call.cancel()
    # Bounded only so that a service which records nothing fails here instead of hanging.
    record = await asyncio.wait_for(running.watch.read(), 10)
    assert isinstance(record, pb.WatchDeliveriesResponse)
    return sent, record


@pytest.mark.parametrize("running", ["posting"], indirect=True)
async def test_a_deliver_cancelled_while_posting_is_recorded_as_maybe_at_amperity(
    running: Running, amperity: SilentAmperity, keys: Keys
) -> None:
    """Live Events shows it cancelled, maybe delivered; the metric counts it under its type."""
    sent, record = await hang_up_mid_delivery(running, amperity)

    assert amperity.paths == [f"/prof/events/{integration_dict('', keys)['event_stream_id']}"]
    assert (record.message_id, record.outcome) == (sent.message_id, "cancelled")
    assert record.amperity_type == "add_to_cart"
    assert "attempt 1's POST may have been sent" in record.error
    assert "the caller hung up" in record.error
    assert record.payload.fields["type"].string_value == "add_to_cart"
    assert not record.HasField("vendor_request")
    for secret in (keys.ingest, keys.profile):
        assert secret not in str(record)
    assert cancelled_count(running.service, "add_to_cart") == 1


@pytest.mark.parametrize("running", ["enriching"], indirect=True)
async def test_a_deliver_cancelled_while_enriching_is_recorded_as_not_sent(
    running: Running, amperity: SilentAmperity
) -> None:
    """Cancelled before its POST: Live Events says it was not sent; counted as cancelled."""
    sent, record = await hang_up_mid_delivery(running, amperity)

    assert not any(path.startswith("/prof/events/") for path in amperity.paths)
    assert (record.message_id, record.outcome) == (sent.message_id, "cancelled")
    assert "before the event was posted" in record.error
    assert "it was not sent" in record.error
    assert cancelled_count(running.service, "unknown") == 1


@pytest.mark.parametrize("running", ["posting"], indirect=True)
@pytest.mark.parametrize("amperity", ["accepting"], indirect=True)
async def test_a_deliver_cancelled_after_amperity_accepted_it_is_recorded_as_accepted(
    running: Running, amperity: SilentAmperity
) -> None:
    """Amperity answered 202, the body never came: the record says the event got there."""
    sent, record = await hang_up_mid_delivery(running, amperity)

    assert (record.message_id, record.outcome) == (sent.message_id, "cancelled")
    assert "cancelled after Amperity answered 202 to attempt 1" in record.error
    assert "the event reached Amperity; do not send it again" in record.error
    assert "may have been sent" not in record.error
    assert cancelled_count(running.service, "add_to_cart") == 1


def cancelled_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, str]]:
    """The delivery's log lines about a cancelled event: level, text and message_id."""
    return [
        (r.levelno, r.getMessage(), r.__dict__["message_id"])
        for r in caplog.records
        if r.name == "amperity_signal.delivery" and r.__dict__.get("outcome") == "cancelled"
    ]


@pytest.mark.parametrize("running", ["posting"], indirect=True)
@pytest.mark.parametrize("amperity", ["", "accepting"], indirect=True, ids=["sent", "202"])
async def test_a_deliver_cancelled_once_its_post_was_sent_is_logged_as_a_warning(
    running: Running, amperity: SilentAmperity, caplog: pytest.LogCaptureFixture
) -> None:
    """Its caller got no answer and may send it again: one warning names its message_id."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal.delivery")

    sent, record = await hang_up_mid_delivery(running, amperity)

    assert cancelled_lines(caplog) == [
        (logging.WARNING, f"delivery {record.error}", sent.message_id)
    ]


@pytest.mark.parametrize("running", ["enriching"], indirect=True)
async def test_a_deliver_cancelled_before_its_post_is_logged_at_debug_only(
    running: Running, amperity: SilentAmperity, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing reached Amperity: a debug line, no warning."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal.delivery")

    sent, record = await hang_up_mid_delivery(running, amperity)

    assert "it was not sent" in record.error
    assert cancelled_lines(caplog) == [(logging.DEBUG, f"delivery {record.error}", sent.message_id)]
