"""The gRPC health service: Check, List and Watch over grpc.health.v1's messages."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from amperity_signal.service.app import SERVICE_NAME
from tests.contract.harness import Harness
from tests.contract.test_contract import details

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_list_reports_the_server_and_the_service_serving(harness: Harness) -> None:
    """List names the whole server ("") and AmperityService, both SERVING."""
    health: Any = health_pb2_grpc.HealthStub(harness.channel)
    messages: Any = health_pb2  # its type stubs predate List
    answer = await health.List(messages.HealthListRequest())
    assert {name: entry.status for name, entry in answer.statuses.items()} == {
        "": SERVING,
        SERVICE_NAME: SERVING,
    }


async def test_check_of_an_unknown_service_is_not_found_naming_the_known_ones(
    harness: Harness,
) -> None:
    """NOT_FOUND, as the health protocol says, with a message listing what to ask for."""
    health: Any = health_pb2_grpc.HealthStub(harness.channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert SERVICE_NAME in (error.value.details() or "")
    info = details(error.value)["ErrorInfo"]
    # Every variable of the message is metadata: the service asked for, those known.
    known = f"'', '{SERVICE_NAME}'"
    assert f"ask for one of {known}" in (error.value.details() or "")
    assert info.reason == "UNKNOWN_HEALTH_SERVICE"
    assert dict(info.metadata) == {"service": "nope", "known_services": known}


async def test_graceful_shutdown_turns_check_and_watch_not_serving_for_good(
    harness: Harness,
) -> None:
    """After enter_graceful_shutdown every status is NOT_SERVING and set() no longer moves it."""
    health: Any = health_pb2_grpc.HealthStub(harness.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert (await watch.read()).status == SERVING
    await harness.service.health.enter_graceful_shutdown()
    assert (await watch.read()).status == NOT_SERVING
    await harness.service.health.set(SERVICE_NAME, SERVING)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert answer.status == NOT_SERVING
    watch.cancel()
