"""The in-process channel answers exactly as the service's socket does.

The embedded gateway calls the service through the generated stub over
``Service.in_process_channel()``; every call here goes both ways and the answers (or the
errors, with their status details) must be the same.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from amperity_signal.logs import integration_id_var, request_id_var
from amperity_signal.metrics import Metrics
from amperity_signal.service.inprocess import HandlerRegistry, InProcessChannel
from amperity_signal.service.interceptors import ObservedRegistration
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.harness import Harness
from tests.contract.test_contract import details, event
from tests.support import ALICE_EMAIL

HANG_GUARD = 30.0
"""Seconds after which a call that should end promptly fails the test instead of hanging it."""


@pytest.fixture
async def inprocess(harness: Harness) -> AsyncIterator[pb_grpc.AmperityServiceAsyncStub]:
    """The generated stub over the in-process channel."""
    channel = harness.service.in_process_channel()
    yield pb_grpc.AmperityServiceStub(channel)
    await channel.close()


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_enrich_answers_the_same_bytes_as_the_socket(
    harness: Harness, inprocess: pb_grpc.AmperityServiceAsyncStub
) -> None:
    request = pb.EnrichRequest(
        integration_id="web", event=event(type="identify", traits={"email": ALICE_EMAIL})
    )
    await harness.stub.Enrich(request)  # fills the cache: both answers below are hits
    over_socket = await harness.stub.Enrich(request)
    in_process = await inprocess.Enrich(request)
    assert in_process.resolved
    assert in_process.cache_status == pb.CACHE_STATUS_HIT
    assert in_process.SerializeToString(deterministic=True) == over_socket.SerializeToString(
        deterministic=True
    )


async def test_errors_carry_the_same_code_details_and_status_details(
    harness: Harness, inprocess: pb_grpc.AmperityServiceAsyncStub
) -> None:
    calls: list[Callable[[Any], Any]] = [
        lambda stub: stub.Deliver(pb.DeliverRequest(integration_id="web", event=pb.Event())),
        lambda stub: stub.Enrich(pb.EnrichRequest(integration_id="nope", event=event())),
        lambda stub: stub.BrowserProfile(
            pb.BrowserProfileRequest(pipeline_key="pk_unknown", anonymous_id="a")
        ),
    ]
    for make in calls:
        socket_error = await _error(make(harness.stub))
        local_error = await _error(make(inprocess))
        assert local_error.code() == socket_error.code()
        assert local_error.code() != grpc.StatusCode.UNKNOWN
        assert local_error.details() == socket_error.details()
        assert details(local_error) == details(socket_error)


async def test_the_pipeline_key_travels_as_metadata(
    harness: Harness, inprocess: pb_grpc.AmperityServiceAsyncStub
) -> None:
    request = pb.DeliverRequest(integration_id="", event=event(type="page"))
    answer = await inprocess.Deliver(request, metadata=(("x-pipeline-key", "pk_web"),))
    assert answer.amperity_type
    missing = await _error(inprocess.Deliver(request))
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "integration_id" in (missing.details() or "")
    assert details(missing)["ErrorInfo"].reason == "INVALID_REQUEST"  # the event is fine


async def test_the_deadline_cuts_a_slow_handler_short_and_cancels_it(harness: Harness) -> None:
    cancelled = asyncio.Event()

    async def slow(request: bytes, context: Any) -> bytes:
        try:
            await asyncio.Event().wait()  # never answers: only the deadline can end the call
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return request

    channel = InProcessChannel(
        {"/t.T/Slow": grpc.unary_unary_rpc_method_handler(slow)},
        fallback_target=f"127.0.0.1:{harness.service.port}",
    )
    call = channel.unary_unary("/t.T/Slow")(b"x", timeout=0.2)
    error = await asyncio.wait_for(_error(call), HANG_GUARD)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(cancelled.wait(), HANG_GUARD)
    await channel.close()


async def test_a_handler_that_finishes_after_its_deadline_is_deadline_exceeded(
    harness: Harness,
) -> None:
    async def blocking(request: bytes, context: Any) -> bytes:
        time.sleep(0.2)  # noqa: ASYNC251 - never yields, so the deadline cannot cancel it
        return request

    channel = InProcessChannel(
        {"/t.T/Blocking": grpc.unary_unary_rpc_method_handler(blocking)},
        fallback_target=f"127.0.0.1:{harness.service.port}",
    )
    error = await _error(channel.unary_unary("/t.T/Blocking")(b"x", timeout=0.05))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "Deadline Exceeded",
    )
    await channel.close()


async def test_health_an_unknown_method_and_bytes_that_do_not_parse(harness: Harness) -> None:
    channel = harness.service.in_process_channel()
    health: Any = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    unknown = await _error(health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    missing = channel.unary_unary("/datafly.amperity.v1.AmperityService/Nope")
    assert (await _error(missing(b""))).code() == grpc.StatusCode.UNIMPLEMENTED
    path = "/datafly.amperity.v1.AmperityService/BrowserProfile"
    garbage = await _error(channel.unary_unary(path)(b"\xff\xff\xff"))
    socket_call: Any = harness.channel.unary_unary(path)
    over_socket = await _error(socket_call(b"\xff\xff\xff"))
    assert (garbage.code(), garbage.details()) == (over_socket.code(), over_socket.details())
    assert "BrowserProfileRequest" in (garbage.details() or "")
    await channel.close()


async def test_the_servers_observation_runs_and_leaves_the_callers_context_alone(
    harness: Harness, inprocess: pb_grpc.AmperityServiceAsyncStub
) -> None:
    def calls() -> float:
        value = harness.service.metrics.registry.get_sample_value(
            "amperity_signal_rpc_seconds_count",
            {"method": "/datafly.amperity.v1.AmperityService/Enrich", "code": "OK"},
        )
        return value or 0.0

    before = calls()
    integration_before = integration_id_var.get()
    token = request_id_var.set("caller")
    try:
        await inprocess.Enrich(pb.EnrichRequest(integration_id="web", event=event(type="page")))
        assert request_id_var.get() == "caller"
        assert integration_id_var.get() == integration_before  # the servicer set "web"
    finally:
        request_id_var.reset(token)
    assert calls() == before + 1


async def test_context_variables_first_set_by_the_call_read_their_defaults_after_it(
    inprocess: pb_grpc.AmperityServiceAsyncStub,
) -> None:
    """In a task where they were never set (uvicorn's per-request task), none outlives the call."""

    async def call_in_fresh_task() -> tuple[str, str]:
        await inprocess.Enrich(pb.EnrichRequest(integration_id="web", event=event(type="page")))
        return request_id_var.get(), integration_id_var.get()

    defaults = contextvars.Context().run(lambda: (request_id_var.get(), integration_id_var.get()))
    task = asyncio.get_running_loop().create_task(
        call_in_fresh_task(), context=contextvars.Context()
    )
    assert await task == defaults


async def test_an_unexpected_error_is_unknown_without_its_text(harness: Harness) -> None:
    async def boom(request: bytes, context: Any) -> bytes:
        raise RuntimeError("secret-token-123")

    channel = InProcessChannel(
        {"/t.T/Boom": grpc.unary_unary_rpc_method_handler(boom)},
        fallback_target=f"127.0.0.1:{harness.service.port}",
    )
    error = await _error(channel.unary_unary("/t.T/Boom")(b""))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert "secret-token-123" not in (error.details() or "")
    await channel.close()


async def test_an_unexpected_error_of_an_observed_handler_is_internal_and_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the observation (as the gateway's calls go): INTERNAL, one error log line.

    The observation asks the context whether the call is over (``done``), which the
    in-process context lacked: the error became an AttributeError, answered UNKNOWN, and
    the "rpc failed unexpectedly" line naming the method was never written.
    """

    async def boom(request: bytes, context: Any) -> bytes:
        raise RuntimeError("secret-token-123")

    registry = HandlerRegistry()
    ObservedRegistration(Metrics(), registry).add_registered_method_handlers(
        "t.T", {"Boom": grpc.unary_unary_rpc_method_handler(boom)}
    )
    channel = InProcessChannel(
        registry.handlers, fallback_target=f"127.0.0.1:{harness.service.port}"
    )
    caplog.set_level(logging.INFO, logger="amperity_signal.rpc")
    metadata = (("x-request-id", "rid-boom-1"),)
    error = await _error(channel.unary_unary("/t.T/Boom")(b"", metadata=metadata))
    await channel.close()

    assert error.code() == grpc.StatusCode.INTERNAL
    assert "report request id rid-boom-1" in (error.details() or "")
    assert "secret-token-123" not in (error.details() or "")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    (line,) = errors
    assert line.name == "amperity_signal.rpc"
    assert line.getMessage() == "rpc failed unexpectedly"
    assert getattr(line, "method", None) == "/t.T/Boom"
    assert line.exc_info is not None
    assert isinstance(line.exc_info[1], RuntimeError)


async def test_streaming_calls_take_the_socket(
    harness: Harness, inprocess: pb_grpc.AmperityServiceAsyncStub
) -> None:
    watch = inprocess.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
    await watch.initial_metadata()  # sent once the watch is subscribed (the servicer's rule)
    first = asyncio.ensure_future(watch.read())
    delivered = await inprocess.Deliver(
        pb.DeliverRequest(integration_id="web", event=event(type="page"))
    )
    record: Any = await asyncio.wait_for(first, 10)
    assert record.message_id == delivered.message_id
    watch.cancel()


def _one_method(harness: Harness, path: str, behaviour: Any) -> InProcessChannel:
    return InProcessChannel(
        {path: grpc.unary_unary_rpc_method_handler(behaviour)},
        fallback_target=f"127.0.0.1:{harness.service.port}",
    )


async def test_a_handler_answering_without_waiting_arms_no_deadline_timer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call answered in its handler's first step (a cache hit) arms no timer; a wait does."""

    async def instant(request: bytes, context: Any) -> bytes:
        return request

    async def waits(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0)
        return request

    channel = InProcessChannel(
        {
            "/t.T/Instant": grpc.unary_unary_rpc_method_handler(instant),
            "/t.T/Waits": grpc.unary_unary_rpc_method_handler(waits),
        },
        fallback_target=f"127.0.0.1:{harness.service.port}",
    )
    loop = asyncio.get_running_loop()
    call_at = loop.call_at
    armed: list[Any] = []

    def spy(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(callback)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", spy)
    assert await channel.unary_unary("/t.T/Instant")(b"x", timeout=5) == b"x"
    assert armed == []
    assert await channel.unary_unary("/t.T/Waits")(b"y", timeout=5) == b"y"
    assert len(armed) == 1
    await channel.close()


async def test_a_handler_that_waits_answers_with_or_without_a_deadline(harness: Harness) -> None:
    """A handler that waits several times gets its answer through, deadline or none."""

    async def waits(request: bytes, context: Any) -> bytes:
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return request + b"!"

    channel = _one_method(harness, "/t.T/Waits", waits)
    assert await channel.unary_unary("/t.T/Waits")(b"x", timeout=5) == b"x!"
    assert await channel.unary_unary("/t.T/Waits")(b"y") == b"y!"
    await channel.close()


async def test_a_handler_cut_short_by_its_deadline_may_still_await_its_clean_up(
    harness: Harness,
) -> None:
    """The deadline's cancellation reaches the handler where it waits, after its first step."""
    cleaned = asyncio.Event()

    async def slow(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
            cleaned.set()
            raise
        return request

    channel = _one_method(harness, "/t.T/Slow", slow)
    error = await _error(channel.unary_unary("/t.T/Slow")(b"x", timeout=0.1))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "Deadline Exceeded",
    )
    assert cleaned.is_set()
    await channel.close()


async def test_cancelling_the_caller_cancels_the_waiting_handler(harness: Harness) -> None:
    """A caller cancelled while the handler waits (the page went away) cancels the handler."""
    waiting, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(request: bytes, context: Any) -> bytes:
        waiting.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return request

    channel = _one_method(harness, "/t.T/Slow", slow)
    call = asyncio.ensure_future(channel.unary_unary("/t.T/Slow")(b"x", timeout=10))
    await waiting.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert cancelled.is_set()
    await channel.close()
