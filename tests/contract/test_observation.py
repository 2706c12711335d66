"""Every RPC the server answers is observed: request id, latency per method and code, failures.

The observation is wrapped around each method handler when it is registered
(``ObservedRegistration``), so these calls go over the socket to each kind of handler the
server has: a unary servicer method, a failing one, the health service, and reflection's
bidirectional stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from amperity_signal.service import status
from amperity_signal.service.app import Deps, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.harness import SANDBOX_URL, Harness
from tests.contract.test_contract import V1_REFLECTION, event, v1_reflection
from tests.support import Keys, integration_dict, settings_for, until

ENRICH = "/datafly.amperity.v1.AmperityService/Enrich"
HEALTH = "/grpc.health.v1.Health/Check"
WATCH = "/datafly.amperity.v1.AmperityService/WatchDeliveries"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _calls(harness: Harness, method: str, code: str) -> float:
    value = harness.service.metrics.registry.get_sample_value(
        "amperity_signal_rpc_seconds_count", {"method": method, "code": code}
    )
    return value or 0.0


async def _calls_reach(harness: Harness, method: str, code: str, count: float) -> float:
    """The count once it reaches ``count`` (``until``'s 30 s at most: else it fails).

    An aborted call's status leaves the server inside ``context.abort``, before the
    observing wrapper around the handler has caught the abort and counted the call, so a
    client can hold the error a moment (on a loaded machine, seconds) before the histogram
    has it. The callers then assert the count is no higher.
    """
    await until(
        lambda: _calls(harness, method, code) >= count,
        lambda: f"{method} {code} counted {_calls(harness, method, code)}, not {count}",
    )
    return _calls(harness, method, code)


def _request_id(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "x-request-id":
            return str(value)
    return None


async def test_a_unary_call_answers_its_request_id_and_is_timed(harness: Harness) -> None:
    before = _calls(harness, ENRICH, "OK")
    request = pb.EnrichRequest(integration_id="web", event=event(type="page"))
    call = harness.stub.Enrich(request, metadata=(("x-request-id", "req-from-caller"),))
    await call
    assert _request_id(await call.trailing_metadata()) == "req-from-caller"
    anonymous = harness.stub.Enrich(request)
    await anonymous
    minted = _request_id(await anonymous.trailing_metadata())
    assert minted is not None and len(minted) == 32 and int(minted, 16) >= 0
    assert _calls(harness, ENRICH, "OK") == before + 2


def _failed(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, str, str | None]]:
    """The ``rpc failed`` lines: level, method, code and reason."""
    return [
        (r.levelno, r.__dict__["method"], r.__dict__["code"], r.__dict__.get("reason"))
        for r in caplog.records
        if r.getMessage() == "rpc failed"
    ]


async def test_a_call_the_caller_got_wrong_is_timed_and_logged_at_debug_with_its_reason(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown integration (any visitor can send one) is a debug line, with the reason."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal.rpc")
    before = _calls(harness, ENRICH, "NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Enrich(pb.EnrichRequest(integration_id="nope", event=event()))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _request_id(caught.value.trailing_metadata()) is not None
    assert await _calls_reach(harness, ENRICH, "NOT_FOUND", before + 1) == before + 1
    assert _failed(caplog) == [(logging.DEBUG, ENRICH, "NOT_FOUND", "UNKNOWN_INTEGRATION")]


async def test_a_failure_no_other_line_tells_is_logged_at_info_with_its_reason(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A Live Events watch ended by a stop: info, SERVICE_STOPPING (its caller reconnects)."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal.rpc")
    watch = harness.stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
    await watch.initial_metadata()
    await harness.service.stop(0)
    assert await watch.code() == grpc.StatusCode.UNAVAILABLE
    assert _failed(caplog) == [(logging.INFO, WATCH, "UNAVAILABLE", "SERVICE_STOPPING")]


async def test_a_watch_its_caller_lets_expire_is_logged_at_debug(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A watch's deadline ends it as a matter of course: a debug line, not one per page."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal.rpc")
    watch = harness.stub.WatchDeliveries(
        pb.WatchDeliveriesRequest(integration_id="web"), timeout=0.2
    )
    assert await watch.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server's observation ends a moment after the caller's (on a loaded machine,
    # seconds): wait for its line, bounded by until's 30 s.
    await until(lambda: bool(_failed(caplog)), lambda: "the watch's end was never logged")
    assert _failed(caplog) == [(logging.DEBUG, WATCH, "DEADLINE_EXCEEDED", None)]


async def test_a_call_does_not_inherit_an_answer_its_server_was_started_beside(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A reason told in the context the server was started from is no call's reason.

    grpc.aio's call tasks copy the server's context; a value set there (by a status built
    before the start, as a test does) once suppressed every unlogged failure's line.
    """
    leaked = status.ANSWERED_WITH.set(("LEAKED", True))
    try:
        harness = await make_harness()
    finally:
        status.ANSWERED_WITH.reset(leaked)  # the server's context holds it; no later test's
    caplog.set_level(logging.DEBUG, logger="amperity_signal.rpc")
    watch = harness.stub.WatchDeliveries(
        pb.WatchDeliveriesRequest(integration_id="web"), timeout=0.2
    )
    assert await watch.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: bool(_failed(caplog)), lambda: "the watch's end was never logged")
    assert _failed(caplog) == [(logging.DEBUG, WATCH, "DEADLINE_EXCEEDED", None)]


async def test_health_and_reflection_are_observed_too(harness: Harness) -> None:
    health_before = _calls(harness, HEALTH, "OK")
    reflection_before = _calls(harness, REFLECTION, "OK")
    health: Any = health_pb2_grpc.HealthStub(harness.channel)
    await health.Check(health_pb2.HealthCheckRequest(service=""))
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(harness.channel)  # type: ignore[arg-type]

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    answers = [answer async for answer in stub.ServerReflectionInfo(ask())]
    assert answers and answers[0].list_services_response.service
    assert _calls(harness, HEALTH, "OK") == health_before + 1
    assert _calls(harness, REFLECTION, "OK") == reflection_before + 1


async def test_reflection_v1_is_observed_under_its_own_method(harness: Harness) -> None:
    """grpc.reflection.v1 goes through the same observed registration as v1alpha."""
    before = _calls(harness, V1_REFLECTION, "OK")

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    call = v1_reflection(harness.channel)(ask(), metadata=(("x-request-id", "req-v1"),))
    answers = [answer async for answer in call]
    assert answers and answers[0].list_services_response.service
    assert _request_id(await call.trailing_metadata()) == "req-v1"
    assert _calls(harness, V1_REFLECTION, "OK") == before + 1


class _LeakyTransport(httpx.AsyncBaseTransport):
    """A transport failing with an error no code expects, its text holding the key sent."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"could not send {request.headers['Authorization']}")


async def test_an_unexpected_error_answers_internal_with_a_request_id_and_no_text(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug's exception reaches the caller as INTERNAL naming the request id, never its text."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal.rpc")
    settings = settings_for(integration_dict(SANDBOX_URL, keys))
    service = build_server(settings, Deps(transport=_LeakyTransport()))
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    stub = pb_grpc.AmperityServiceStub(channel)
    request = pb.DeliverRequest(integration_id="web", event=event(type="page"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Deliver(request)
    finally:
        await channel.close()
        await service.stop(0)
    error = caught.value
    request_id = _request_id(error.trailing_metadata())
    assert error.code() == grpc.StatusCode.INTERNAL
    assert request_id is not None and request_id in (error.details() or "")
    assert keys.ingest not in f"{error.details()} {error.debug_error_string()}"
    assert "RuntimeError" not in (error.details() or "")
    logged = [r for r in caplog.records if r.getMessage() == "rpc failed unexpectedly"]
    assert [r.exc_info and r.exc_info[0] for r in logged] == [RuntimeError]
    assert _failed(caplog) == []  # logged once: no second line for the same failure


async def test_an_unexpected_error_fails_its_own_stream_answer_not_the_stream(
    keys: Keys,
) -> None:
    """On DeliverStream a bug fails each event it meets as INTERNAL; the stream ends OK."""
    settings = settings_for(integration_dict(SANDBOX_URL, keys))
    service = build_server(settings, Deps(transport=_LeakyTransport()))
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    stub = pb_grpc.AmperityServiceStub(channel)
    requests = [
        pb.DeliverStreamRequest(integration_id="web", event=event(type="page")) for _ in range(3)
    ]
    try:
        call = stub.DeliverStream(iter(requests))
        answers = [answer async for answer in call]
        code = await call.code()
    finally:
        await channel.close()
        await service.stop(0)
    assert code == grpc.StatusCode.OK
    assert sorted(a.message_id for a in answers) == sorted(r.event.message_id for r in requests)
    assert {(a.error.code, a.error.reason) for a in answers} == {
        (grpc.StatusCode.INTERNAL.value[0], "INTERNAL")
    }
    assert all("request id" in a.error.message for a in answers)
    assert not [a for a in answers if keys.profile in str(a) or keys.ingest in str(a)]


class _HangingTransport(httpx.AsyncBaseTransport):
    """A transport whose requests never get an answer; ``sent`` is set by the first."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_call_its_caller_cancels_is_timed_as_cancelled_not_ok(keys: Keys) -> None:
    """An RPC the caller cancels mid-flight is observed under CANCELLED, never under OK."""
    deliver = "/datafly.amperity.v1.AmperityService/Deliver"
    transport = _HangingTransport()
    settings = settings_for(integration_dict(SANDBOX_URL, keys, profile_api_key=None))
    service = build_server(settings, Deps(transport=transport))
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    harness: Any = type("H", (), {"service": service})
    try:
        stub = pb_grpc.AmperityServiceStub(channel)
        call = stub.Deliver(pb.DeliverRequest(integration_id="web", event=event(type="page")))
        await transport.sent.wait()
        call.cancel()
        assert await _calls_reach(harness, deliver, "CANCELLED", 1) == 1
        assert _calls(harness, deliver, "OK") == 0
    finally:
        await channel.close()
        await service.stop(0)


async def test_unmapped_event_names_share_one_deliveries_label(harness: Harness) -> None:
    """Events no handler maps count under amperity_type "unmapped", not one series per name."""
    for name in ("Clicked banner 1", "Clicked banner 2", "Clicked banner 3"):
        request = pb.DeliverRequest(integration_id="web", event=event(type="track", event=name))
        answer = await harness.stub.Deliver(request)
        assert answer.amperity_type.startswith("clicked_banner_")  # the payload keeps its name
    registry = harness.service.metrics.registry
    types = {
        sample.labels["amperity_type"]
        for family in registry.collect()
        if family.name == "amperity_signal_deliveries"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert types == {"unmapped"}
    delivered = {
        "integration": "web",
        "amperity_type": "unmapped",
        "outcome": "delivered",
        "reason": "",
    }
    assert registry.get_sample_value("amperity_signal_deliveries_total", delivered) == 3


def _cache_count(harness: Harness, cache: str, result: str) -> float:
    labels = {"cache": cache, "result": result}
    value = harness.service.metrics.registry.get_sample_value("amperity_signal_cache_total", labels)
    return value or 0.0


async def test_each_enrichment_counts_one_cache_lookup_per_linking_key(harness: Harness) -> None:
    """A miss that calls the Profile API counts once, so hit / all is the real hit ratio."""
    first = pb.EnrichRequest(
        integration_id="web", event=event(type="page", anonymous_id="anon_alice_01")
    )
    answer = await harness.stub.Enrich(first)
    assert answer.resolved and answer.cache_status == pb.CACHE_STATUS_MISS
    assert (_cache_count(harness, "res", "miss"), _cache_count(harness, "res", "hit")) == (1, 0)
    again = await harness.stub.Enrich(first)
    assert again.cache_status == pb.CACHE_STATUS_HIT
    assert (_cache_count(harness, "res", "miss"), _cache_count(harness, "res", "hit")) == (1, 1)
