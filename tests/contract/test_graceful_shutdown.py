"""Stopping the service: open streams and watches end promptly, their events answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from amperity_signal.service.app import SERVICE_NAME, Deps, Service, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.test_contract import details, event, v1_reflection
from tests.support import Keys, delivery_record, integration_dict, settings_for

GRACE = 10.0
"""Longer than any of these tests needs: only a stream left open would wait it out."""
LONG_GRACE = 60.0
"""A grace no test waits out: a stop held by a watch would still be held at the end."""
ANSWERS_GRACE = 5.0
"""A grace a test waits out: a stream whose caller reads no answers holds the stop so long."""
CUT_GRACE = 0.2
"""A grace the held POST outlasts: the calls still delivering at its end are cut."""
NOT_READING = [("grpc.http2.lookahead_bytes", 0), ("grpc.http2.bdp_probe", 0)]
"""Channel options of a client that stops reading: a receive window of 0 that never grows.

It takes a message only while a read is pending; one more sent to it waits on flow control.
"""


class GatedAmperity(httpx.AsyncBaseTransport):
    """Holds every event POST until ``gate`` opens; answers 202 then (404 to the rest)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()
        self.posted = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/prof/events/"):
            return httpx.Response(404, json={"message": "not found"})
        self.posted += 1
        self.arrived.set()
        await self.gate.wait()
        return httpx.Response(202)


@pytest.fixture
async def amperity() -> GatedAmperity:
    """Amperity whose answers the test releases."""
    return GatedAmperity()


@pytest.fixture
async def service(keys: Keys, amperity: GatedAmperity) -> AsyncIterator[Service]:
    """A running service delivering to the gated Amperity."""
    settings = settings_for(integration_dict("http://amperity.test", keys))
    built = build_server(settings, Deps(transport=amperity))
    await built.start()
    yield built
    await built.stop(0)


async def open_requests(first: pb.Event) -> AsyncIterator[pb.DeliverStreamRequest]:
    """A stream's requests: ``first``, then nothing more, yet (the caller does not half-close)."""
    yield pb.DeliverStreamRequest(integration_id="web", event=first)
    await asyncio.Event().wait()


async def begin_stopping(service: Service, channel: grpc.aio.Channel) -> asyncio.Task[None]:
    """Start stopping the service; return once health says NOT_SERVING (it has begun)."""
    health: Any = health_pb2_grpc.HealthStub(channel)
    # Opened before the stop: a stopping server takes no new calls.
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(service.stop(GRACE))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    return stopping


async def test_stop_answers_a_streams_event_in_flight_then_ends_the_stream_unavailable(
    service: Service, amperity: GatedAmperity
) -> None:
    """The event being POSTed is answered, not cancelled; then UNAVAILABLE, SERVICE_STOPPING."""
    in_flight = event(type="track", event="add_to_cart")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=in_flight)
        await asyncio.Event().wait()  # a caller with nothing more to send, yet

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        call = stub.DeliverStream(requests())
        await amperity.arrived.wait()
        stopping = await begin_stopping(service, channel)
        amperity.gate.set()
        answer = await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        await stopping

    assert isinstance(answer, pb.DeliverStreamResponse)
    assert answer.message_id == in_flight.message_id
    assert answer.result.vendor_request.status_code == 202
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    found = details(ended.value)
    assert found["ErrorInfo"].reason == "SERVICE_STOPPING"
    assert "RetryInfo" in found
    assert amperity.posted == 1


async def test_stop_answers_the_events_of_a_half_closed_stream(
    service: Service, amperity: GatedAmperity
) -> None:
    """A stream with nothing more to send keeps its events in flight: each is answered."""
    in_flight = event(type="track", event="add_to_cart")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=in_flight)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        call = stub.DeliverStream(requests())
        await amperity.arrived.wait()
        stopping = await begin_stopping(service, channel)
        amperity.gate.set()
        answer = await call.read()
        code = await call.code()
        trailing = await call.trailing_metadata()
        await stopping

    assert isinstance(answer, pb.DeliverStreamResponse)
    assert answer.message_id == in_flight.message_id
    assert answer.result.vendor_request.status_code == 202
    # OK when the service had read the half-close before it began to stop; else it ends
    # as any stream it stopped reading does.
    if code != grpc.StatusCode.OK:
        assert code == grpc.StatusCode.UNAVAILABLE
        assert any(key == "grpc-status-details-bin" for key, _ in trailing)


async def test_stop_ends_an_open_watch_unavailable_at_once(service: Service) -> None:
    """A watch does not hold the shutdown for its grace period."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        watch = stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
        await watch.initial_metadata()
        stopping = asyncio.create_task(service.stop(GRACE))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await watch.read()
        await stopping

    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(ended.value)["ErrorInfo"].reason == "SERVICE_STOPPING"


async def test_stop_ends_health_watches_not_serving_while_real_calls_finish(
    service: Service, amperity: GatedAmperity
) -> None:
    """Watchers see NOT_SERVING, then their watch ends; the stop waits only for the Deliver."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        watches = [
            health.Watch(health_pb2.HealthCheckRequest(service=name)) for name in ("", SERVICE_NAME)
        ]
        for watch in watches:
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.AmperityServiceStub(channel)
        deliver = stub.Deliver(
            pb.DeliverRequest(integration_id="web", event=event(type="track", event="add_to_cart"))
        )
        await amperity.arrived.wait()
        stopping = asyncio.create_task(service.stop(LONG_GRACE))
        ended = []
        for watch in watches:
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as watch_end:
                await watch.read()
            ended.append(watch_end.value)
        # The watches ended on their own, not at the grace's end: the Deliver holds it yet.
        assert not stopping.done()
        amperity.gate.set()
        delivered = await deliver
        await stopping

    for error in ended:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert details(error)["ErrorInfo"].reason == "SERVICE_STOPPING"
    assert delivered.vendor_request.status_code == 202


async def test_a_stop_just_after_watchers_hang_up_logs_no_error(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A watch whose caller just left is ended quietly: no failure logged, no second abort."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        deliveries = pb_grpc.AmperityServiceStub(channel).WatchDeliveries(
            pb.WatchDeliveriesRequest(integration_id="web")
        )
        await deliveries.initial_metadata()
        health: Any = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        deliveries.cancel()
        watch.cancel()
    await service.stop(GRACE)

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


class Heard(logging.Handler):
    """Sets ``event`` once a record holding ``words`` is logged (on the event loop's thread)."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Note the record if it holds the words."""
        if self.words in record.getMessage():
            self.event.set()


@pytest.fixture
def stuck_watches_noticed() -> Iterator[asyncio.Event]:
    """Set when the service logs that health watchers stopped reading at a stop."""
    heard = Heard("stopped reading")
    logger = logging.getLogger("amperity_signal.server")
    level = logger.level
    logger.setLevel(logging.INFO)  # the notice is logged at info
    logger.addHandler(heard)
    yield heard.event
    logger.removeHandler(heard)
    logger.setLevel(level)


def heard_from_the_service(words: str) -> Iterator[asyncio.Event]:
    """A fixture's body: an event set once the servicer logs ``words``."""
    heard = Heard(words)
    logger = logging.getLogger("amperity_signal.service")
    logger.addHandler(heard)
    yield heard.event
    logger.removeHandler(heard)


@pytest.fixture
def answers_given_up() -> Iterator[asyncio.Event]:
    """Set when the service logs that a stop gave up a DeliverStream's answers."""
    yield from heard_from_the_service("gave up answers")


async def test_a_health_watcher_that_stopped_reading_is_cancelled_once_real_calls_are_done(
    service: Service,
    amperity: GatedAmperity,
    stuck_watches_noticed: asyncio.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its NOT_SERVING cannot be sent: the Deliver in flight is answered, then the watch ends."""
    caplog.set_level(logging.INFO)
    target = f"127.0.0.1:{service.port}"
    async with (
        grpc.aio.insecure_channel(target, options=NOT_READING) as watching,
        grpc.aio.insecure_channel(target) as delivering,
    ):
        health: Any = health_pb2_grpc.HealthStub(watching)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        # From here on the watcher reads nothing.
        deliver = pb_grpc.AmperityServiceStub(delivering).Deliver(
            pb.DeliverRequest(integration_id="web", event=event(type="track", event="add_to_cart"))
        )
        await amperity.arrived.wait()
        stopping = asyncio.create_task(service.stop(LONG_GRACE))
        # The watcher had its moment to take NOT_SERVING, and did not.
        await asyncio.wait_for(stuck_watches_noticed.wait(), LONG_GRACE / 2)
        assert not stopping.done(), "the Deliver in flight holds the stop, not the watch"
        amperity.gate.set()
        delivered = await deliver
        # Well before the grace's end: the watch was cancelled once the Deliver was answered.
        await asyncio.wait_for(stopping, LONG_GRACE / 2)
        watch.cancel()

    assert delivered.vendor_request.status_code == 202
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_deliveries_watcher_that_stopped_reading_is_cancelled_once_real_calls_are_done(
    service: Service,
    amperity: GatedAmperity,
    stuck_watches_noticed: asyncio.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its records cannot be sent: the Deliver in flight is answered, then the watch is cut."""
    caplog.set_level(logging.INFO)
    target = f"127.0.0.1:{service.port}"
    async with (
        grpc.aio.insecure_channel(target, options=NOT_READING) as watching,
        grpc.aio.insecure_channel(target) as delivering,
    ):
        for number in range(3):
            service.live.publish(delivery_record(number))
        # The watcher reads nothing: the records it asked for wait on its flow control.
        watch = pb_grpc.AmperityServiceStub(watching).WatchDeliveries(
            pb.WatchDeliveriesRequest(integration_id="web", replay=3)
        )
        await watch.initial_metadata()
        deliver = pb_grpc.AmperityServiceStub(delivering).Deliver(
            pb.DeliverRequest(integration_id="web", event=event(type="track", event="add_to_cart"))
        )
        await amperity.arrived.wait()
        stopping = asyncio.create_task(service.stop(LONG_GRACE))
        # The watcher had its moment to take its records and the stop, and did not.
        await asyncio.wait_for(stuck_watches_noticed.wait(), LONG_GRACE / 2)
        assert not stopping.done(), "the Deliver in flight holds the stop, not the watch"
        amperity.gate.set()
        delivered = await deliver
        # Well before the grace's end: the watch was cancelled once the Deliver was answered.
        await asyncio.wait_for(stopping, LONG_GRACE / 2)
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            async for _ in watch:
                pass

    assert delivered.vendor_request.status_code == 202
    # What both clients take for a broken stream: the Python client's watch reopens it.
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_stream_slow_to_read_its_answer_holds_the_stop_past_a_stuck_watch(
    service: Service, amperity: GatedAmperity, stuck_watches_noticed: asyncio.Event
) -> None:
    """A stream does work: unlike a stuck watch it is not cut, and its late reader is answered.

    Then only the watch holds the stop, which ends well before the grace.
    """
    amperity.gate.set()
    sent = event(type="track", event="add_to_cart")
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{service.port}", options=NOT_READING
    ) as channel:
        stub = pb_grpc.AmperityServiceStub(channel)
        # Replayed if it comes first: the delivery's record reaches the watch either way.
        watch = stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web", replay=1))
        await watch.initial_metadata()
        async with aclosing(service.live.watch("web")) as records:
            call = stub.DeliverStream(open_requests(sent))
            await anext(records)  # delivered: its record and its answer wait unread
        stopping = asyncio.create_task(service.stop(LONG_GRACE))
        await asyncio.wait_for(stuck_watches_noticed.wait(), LONG_GRACE / 2)
        assert not stopping.done(), "the stream's unread answer holds the stop"
        answer = await call.read()  # the caller reads again, after the watches' farewell
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        await asyncio.wait_for(stopping, LONG_GRACE / 2)
        watch.cancel()

    assert isinstance(answer, pb.DeliverStreamResponse)
    assert answer.message_id == sent.message_id
    assert answer.result.vendor_request.status_code == 202
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(ended.value)["ErrorInfo"].reason == "SERVICE_STOPPING"
    assert amperity.posted == 1


async def test_answers_a_stream_caller_never_reads_are_given_up_at_the_grace_and_logged(
    keys: Keys,
    service: Service,
    amperity: GatedAmperity,
    answers_given_up: asyncio.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its event is delivered; its answer waits out the grace, then is logged without secrets."""
    amperity.gate.set()
    sent = event(type="track", event="add_to_cart")
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{service.port}", options=NOT_READING
    ) as channel:
        async with aclosing(service.live.watch("web")) as records:
            call = pb_grpc.AmperityServiceStub(channel).DeliverStream(open_requests(sent))
            await anext(records)  # delivered: its answer waits unread
        await service.stop(ANSWERS_GRACE)
        await asyncio.wait_for(answers_given_up.wait(), ANSWERS_GRACE)
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            async for _ in call:
                pass

    assert amperity.posted == 1
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE  # the client sends it again
    (given_up,) = [r for r in caplog.records if "gave up answers" in r.getMessage()]
    assert given_up.levelno == logging.WARNING
    fields: Any = given_up.__dict__
    assert (fields["answers_not_sent"], fields["events_cancelled"]) == (1, 0)
    assert fields["message_ids"] == [sent.message_id]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert keys.ingest not in logged
    assert keys.profile not in logged
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.fixture
def events_cut() -> Iterator[asyncio.Event]:
    """Set when the service logs that a stop cut a DeliverStream's events being delivered."""
    yield from heard_from_the_service("the stop cut a DeliverStream's events")


def cut_deliveries(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The level and message_id of each delivery's log line about its cancellation."""
    return [
        (r.levelno, r.__dict__["message_id"])
        for r in caplog.records
        if r.name == "amperity_signal.delivery" and r.__dict__.get("outcome") == "cancelled"
    ]


async def test_a_stream_event_the_grace_cuts_mid_post_is_logged_as_cut_not_as_an_answer(
    service: Service,
    amperity: GatedAmperity,
    events_cut: asyncio.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No answer was waiting, an event was in its POST: the stop says it cut it, and why."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal")
    sent = event(type="track", event="add_to_cart")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        call = pb_grpc.AmperityServiceStub(channel).DeliverStream(open_requests(sent))
        await amperity.arrived.wait()  # the gate never opens: the POST outlasts the grace
        await service.stop(CUT_GRACE)
        await asyncio.wait_for(events_cut.wait(), ANSWERS_GRACE)
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in call:
                pass

    (cut,) = [r for r in caplog.records if "events_cancelled" in r.__dict__]
    fields: Any = cut.__dict__
    assert (fields["answers_not_sent"], fields["events_cancelled"]) == (0, 1)
    # One line per failure: the event's own line names it, the stream's only counts it
    # (until session 27 both named it).
    assert "message_ids" not in fields
    assert "gave up answers" not in cut.getMessage()
    assert cut_deliveries(caplog) == [(logging.WARNING, sent.message_id)]


async def test_a_unary_deliver_the_grace_cuts_mid_post_is_logged_with_its_message_id(
    service: Service, amperity: GatedAmperity, caplog: pytest.LogCaptureFixture
) -> None:
    """Its POST may have reached Amperity and its caller got no answer: one warning."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal")
    sent = event(type="track", event="add_to_cart")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        call = pb_grpc.AmperityServiceStub(channel).Deliver(
            pb.DeliverRequest(integration_id="web", event=sent)
        )
        await amperity.arrived.wait()  # the gate never opens: the POST outlasts the grace
        await service.stop(CUT_GRACE)
        with pytest.raises(grpc.aio.AioRpcError):
            await call

    assert cut_deliveries(caplog) == [(logging.WARNING, sent.message_id)]
    [line] = [r.getMessage() for r in caplog.records if r.__dict__.get("outcome") == "cancelled"]
    assert "the service stopped past its grace period" in line
    assert "attempt 1's POST may have been sent" in line


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_an_idle_reflection_stream_does_not_hold_the_stop_for_the_grace(
    service: Service, version: str
) -> None:
    """An idle reflection stream (grpcurl and IDEs keep one open) does no work.

    It is cut like a watch, not waited for until the grace ends.
    """
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        asked = asyncio.Queue[reflection_pb2.ServerReflectionRequest]()
        await asked.put(reflection_pb2.ServerReflectionRequest(list_services=""))

        async def questions() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            while True:  # a caller that may ask more and never half-closes
                yield await asked.get()

        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
        reflect = stub.ServerReflectionInfo if version == "v1alpha" else v1_reflection(channel)
        call = reflect(questions())
        listed = await call.read()
        assert SERVICE_NAME in {s.name for s in listed.list_services_response.service}
        stopping = asyncio.create_task(service.stop(LONG_GRACE))
        # Well before the grace's end: nothing but the idle stream was in flight.
        await asyncio.wait_for(stopping, LONG_GRACE / 2)
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await call.read()

    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
