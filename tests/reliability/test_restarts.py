"""At least once across a service that dies: ``kill -9`` and a graceful SIGTERM, mid-run.

Each test streams events through the Python client's ``deliver_many`` to a service on a
fixed port, takes the service down a third of the way through, and starts a new one on
the same port. The client reopens the stream and re-sends whatever was not acknowledged;
afterwards every offered message id is in the sandbox and every acknowledged one too.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service, Stack, free_port
from tests.reliability.profile import PROFILE
from tests.reliability.support import (
    Outcome,
    RunReport,
    make_events,
    patient_client,
    received,
    stream_all,
)
from tests.support import Keys, integration_dict, mint_keys, until

pytestmark = pytest.mark.e2e

SERVICE = "datafly.amperity.v1.AmperityService"
GRACE = 5.0


async def fixed_port_service(
    stack: Stack, sandbox: Sandbox, port: int, keys: Keys | None = None, *more: str
) -> Service:
    """A service whose gRPC port survives restarts, so the caller's channel finds it again.

    Its integrations: ``web``, and one more by each id in ``more``, of the same tenant.
    """
    keys = keys or mint_keys()
    tables = [
        integration_dict(sandbox.url, keys, integration_id=name, max_retries=8, request_timeout=5.0)
        for name in ("web", *more)
    ]
    return await stack.service(
        sandbox,
        *tables,
        keys=keys,
        server={"grpc_address": f"127.0.0.1:{port}", "grace_period": GRACE},
    )


async def test_kill_9_mid_run_and_restart_loses_nothing(stack: Stack) -> None:
    """A kill -9 a third of the way in, a restart on the port: the caller re-sends, none lost."""
    sandbox = await stack.sandbox()
    port = free_port()
    service = await fixed_port_service(stack, sandbox, port)
    # Slow half the posts a little, so events are in flight when the process dies.
    await sandbox.fault(latency_ms=150, latency_rate=0.5, kind="events")
    events = make_events(PROFILE.crash_events, "crash")
    crash: dict[str, Any] = {}

    async def kill_and_restart(outcome: Outcome) -> None:
        crash["acknowledged_at_kill"] = len(outcome.acknowledged)
        service.process.proc.kill()
        crash["exit_code"] = await service.process.proc.wait()
        restarted = await fixed_port_service(stack, sandbox, port, service.keys)
        crash["restarted"] = restarted

    async def watch(outcome: Outcome) -> None:
        if "task" not in crash and len(outcome.acknowledged) >= len(events) // 3:
            crash["task"] = asyncio.create_task(kill_and_restart(outcome))

    async with patient_client(f"127.0.0.1:{port}") as client:
        outcome = await stream_all(client, events, on_answer=watch)
    await crash["task"]
    report = RunReport(
        "crash",
        [e.message_id for e in events],
        outcome,
        await received(sandbox),
        extra={"acknowledged_at_kill": crash["acknowledged_at_kill"]},
    )
    report.write()

    assert crash["exit_code"] == -signal.SIGKILL
    assert outcome.errors == {}
    assert report.lost == []
    assert report.acknowledged_but_missing == []
    assert len(set(outcome.acknowledged)) == len(events)
    assert crash["acknowledged_at_kill"] < len(events), "the kill came after the run"
    assert crash["restarted"].process.proc.returncode is None


async def test_sigterm_under_load_flips_health_finishes_in_flight_and_loses_nothing(
    stack: Stack,
) -> None:
    """SIGTERM mid-run: health NOT_SERVING first, in-flight RPCs finish OK, exit 0, none lost."""
    sandbox = await stack.sandbox()
    port = free_port()
    # The unary calls go through an integration of their own, with its own connection
    # pool: behind the stream's held posts in web's, they might not reach the sandbox.
    service = await fixed_port_service(stack, sandbox, port, None, "unary")
    events = make_events(PROFILE.shutdown_events, "shutdown")
    unary = make_events(8, "shutdown-unary")
    health: Any = health_pb2_grpc.HealthStub(service.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    shutdown: dict[str, Any] = {}

    async def unary_at_the_sandbox() -> bool:
        arrived = {request["message_id"] for request in await sandbox.in_flight()}
        return {e.message_id for e in unary} <= arrived

    async def terminate_and_restart() -> None:
        # Every post is now held until released, so the unary calls below are in flight at
        # SIGTERM: their posts are at the sandbox (until session 27 a 0.4 s sleep hoped so).
        await sandbox.fault(hold=True, kind="events")
        in_flight = [
            asyncio.ensure_future(
                service.stub.Deliver(pb.DeliverRequest(integration_id="unary", event=e), timeout=20)
            )
            for e in unary
        ]
        await until(unary_at_the_sandbox, lambda: "the unary calls' posts never reached it")
        assert not any(task.done() for task in in_flight)
        service.process.proc.send_signal(signal.SIGTERM)
        flipped = await asyncio.wait_for(watch.read(), 10)
        shutdown["health"] = flipped.status
        shutdown["in_flight_done_at_flip"] = sum(task.done() for task in in_flight)
        await sandbox.clear_faults()
        await sandbox.release()
        shutdown["unary"] = await asyncio.gather(*in_flight, return_exceptions=True)
        shutdown["exit_code"] = await asyncio.wait_for(service.process.proc.wait(), GRACE + 15)
        shutdown["restarted"] = await fixed_port_service(
            stack, sandbox, port, service.keys, "unary"
        )

    async def trigger(outcome: Outcome) -> None:
        if "task" not in shutdown and len(outcome.acknowledged) >= len(events) // 3:
            shutdown["acknowledged_at_sigterm"] = len(outcome.acknowledged)
            shutdown["task"] = asyncio.create_task(terminate_and_restart())

    async with patient_client(f"127.0.0.1:{port}") as client:
        outcome = await stream_all(client, events, on_answer=trigger)
    await shutdown["task"]
    found = await received(sandbox)
    unary_failures = [r for r in shutdown["unary"] if isinstance(r, BaseException)]
    report = RunReport(
        "shutdown",
        [e.message_id for e in events],
        outcome,
        found,
        extra={
            "acknowledged_at_sigterm": shutdown["acknowledged_at_sigterm"],
            "unary_in_flight": len(unary),
            "unary_failed": len(unary_failures),
        },
    )
    report.write()

    assert shutdown["health"] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert shutdown["in_flight_done_at_flip"] == 0, "health must flip before in-flight RPCs end"
    assert unary_failures == [], [
        e.code() if isinstance(e, grpc.aio.AioRpcError) else e for e in unary_failures
    ]
    assert {r.vendor_request.status_code for r in shutdown["unary"]} == {202}
    assert all(found[e.message_id] >= 1 for e in unary)
    assert shutdown["exit_code"] == 0
    assert outcome.errors == {}
    assert report.acknowledged_but_missing == []
    assert report.lost == []
