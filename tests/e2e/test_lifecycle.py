"""The service process: starts from the example config, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from amperity_signal.processes import Process, start_process
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.e2e.stack import CLI, Stack, free_port
from tests.support import STREAM, message_id, until_held

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SERVICE = "datafly.amperity.v1.AmperityService"
LONG_GRACE = 60.0
"""A grace no test waits out: a stop held by a stream would still be held at the end."""
NOT_READING = [("grpc.http2.lookahead_bytes", 0), ("grpc.http2.bdp_probe", 0)]
"""A receive window of 0 that never grows: a message arrives only while a read waits."""
ADMIN_TOKEN = "adm-3b8e61f0c2d94a57-stop"


async def test_the_example_config_serves_health_and_reflection(tmp_path: Path) -> None:
    """Serving examples/amperity-signal.toml answers SERVING and lists the service."""
    example = (ROOT / "examples" / "amperity-signal.toml").read_text()
    config = tmp_path / "example.toml"
    config.write_text(
        example.replace("127.0.0.1:50051", f"127.0.0.1:{free_port()}").replace(
            "127.0.0.1:8080", f"127.0.0.1:{free_port()}"
        )
    )
    process = await start_process(
        [*CLI, "serve", "--config", str(config)],
        ready="gateway listening on ",
        log=tmp_path / "serve.log",
    )
    try:
        target = process.output_value("grpc listening on ")
        async with grpc.aio.insecure_channel(target) as channel:
            # The health and reflection stubs' type stubs know only sync channels.
            health: Any = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]

            async def ask() -> Any:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            names: list[str] = []
            async for reply in reflection.ServerReflectionInfo(ask()):
                names = [s.name for s in reply.list_services_response.service]
                break
            assert SERVICE in names
    finally:
        assert await process.stop() == 0


async def test_sigterm_flips_health_first_and_finishes_the_rpc_in_flight(stack: Stack) -> None:
    """SIGTERM mid-RPC: health turns NOT_SERVING, the RPC still completes, exit code 0.

    The sandbox holds the RPC's POST (a ``hold`` fault) until health has flipped, then
    releases it: a fixed 1.5 s latency made the test wait, and raced a slow flip.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    await sandbox.fault(hold=True, kind="events", count=1)
    health: Any = health_pb2_grpc.HealthStub(service.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING

    sent = pb.Event(message_id=message_id(), type="page", anonymous_id="anon_shutdown")
    in_flight = asyncio.ensure_future(
        service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent), timeout=20)
    )
    await until_held(sandbox.inspector, in_flight)
    assert not in_flight.done()
    service.process.proc.send_signal(signal.SIGTERM)

    flipped = await asyncio.wait_for(watch.read(), 10)
    assert flipped.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not in_flight.done(), "health must flip before the in-flight RPC is cut short"
    assert await sandbox.release() == 1
    response = await in_flight
    assert response.vendor_request.status_code == 202
    # The watch ends (rather than hold the stop for its grace period) after NOT_SERVING.
    with pytest.raises(grpc.aio.AioRpcError) as watch_end:
        await watch.read()
    assert watch_end.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.wait_for(service.process.proc.wait(), 20) == 0
    received = [e["body"]["message_id"] for e in await sandbox.events(stream=STREAM)]
    assert sent.message_id in received


async def test_a_health_watcher_that_stopped_reading_does_not_hold_the_stop(stack: Stack) -> None:
    """SIGTERM with a watcher whose window is full: exit 0 long before the 60 s grace ends.

    Its NOT_SERVING can never be sent (gRPC flow control), so its watch never ends by
    itself: the service cancels it after a moment instead of waiting out the grace.
    """
    grace = 60.0
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, server={"grace_period": grace})
    # A receive window of 0 that never grows: a message arrives only while a read waits.
    options = [("grpc.http2.lookahead_bytes", 0), ("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(service.grpc_target, options=options) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        # From here on the watcher reads nothing.
        service.process.proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(service.process.proc.wait(), grace / 2)
        watch.cancel()
    assert exit_code == 0


async def test_a_deliveries_watcher_that_stopped_reading_does_not_hold_the_stop(
    stack: Stack,
) -> None:
    """SIGTERM with a Live Events watcher whose window is full: exit 0 long before the grace.

    The records it was sent wait on gRPC flow control, so its watch cannot end by itself:
    the service cuts it after a moment, and the watcher, reading again, sees UNAVAILABLE.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, server={"grace_period": LONG_GRACE})
    async with grpc.aio.insecure_channel(service.grpc_target, options=NOT_READING) as channel:
        watch = pb_grpc.AmperityServiceStub(channel).WatchDeliveries(
            pb.WatchDeliveriesRequest(integration_id="web", replay=1)
        )
        await watch.initial_metadata()
        sent = pb.Event(message_id=message_id(), type="page", anonymous_id="anon_watcher")
        delivered = await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=sent))
        # From here on the watcher reads nothing: its record waits unread.
        service.process.proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(service.process.proc.wait(), LONG_GRACE / 2)
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            async for _ in watch:
                pass
    assert delivered.vendor_request.status_code == 202
    assert exit_code == 0
    # What both clients take for a broken stream: the Python client's watch reopens it.
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not _errors_logged(service.process)


@pytest.mark.parametrize("standalone", [False, True], ids=["embedded", "standalone"])
async def test_sigterm_ends_an_open_live_events_stream_with_a_failure_event(
    stack: Stack, standalone: bool
) -> None:
    """The gateway's stop ends /live/stream at once, cleanly: no wait, no cut body, no error.

    A stream never ends by itself; uvicorn waited for it (5 s) then cut it mid-body, and
    logged the cancelled request as an error. The page hears ``failure``, then reconnects.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(
        sandbox, server={"grace_period": LONG_GRACE, "admin_token": ADMIN_TOKEN}
    )
    gateway, url = service.process, service.http_url
    if standalone:
        gateway = await stack.gateway(service)
        url = gateway.output_value("gateway listening on ")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=LONG_GRACE / 2) as client,
        client.stream("GET", "/live/stream", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        chunks = stream.aiter_text()
        body = await anext(chunks)  # the stream is open: its retry hint came
        gateway.proc.send_signal(signal.SIGTERM)
        body += "".join([chunk async for chunk in chunks])
    exit_code = await asyncio.wait_for(gateway.proc.wait(), LONG_GRACE / 2)

    events = [
        (fields["event"], json.loads(fields["data"]))
        for block in body.split("\n\n")
        if "event" in (fields := dict(line.split(": ", 1) for line in block.splitlines()))
    ]
    assert [(name, error["code"]) for name, error in events] == [("failure", "SERVICE_UNAVAILABLE")]
    assert exit_code == 0
    assert not _errors_logged(gateway)


def _errors_logged(process: Process) -> list[str]:
    """The error lines of a process's JSON log."""
    lines = process.log.read_text(errors="replace").splitlines()
    return [line for line in lines if json.loads(line).get("level") in ("error", "critical")]
