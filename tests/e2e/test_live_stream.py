"""/live/stream over real sockets: no record missed at its start, no stop held by it."""

from __future__ import annotations

import httpx
import pytest

from amperity_signal.processes import Process, start_process
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import CLI, Service, Stack
from tests.support import message_id

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "adm-9d41c7e2a6b3f058-stream"


async def _standalone_gateway(stack: Stack, service: Service) -> Process:
    """``amperity-signal gateway`` in its own process, in front of ``service``."""
    gateway = await start_process(
        [
            *CLI,
            "gateway",
            "--config",
            str(service.config),
            "--grpc-target",
            service.grpc_target,
            "--http-address",
            "127.0.0.1:0",
        ],
        ready="gateway listening on ",
        log=stack.workdir / "gateway.log",
    )
    stack.processes.append(gateway)
    return gateway


@pytest.mark.parametrize("standalone", [False, True], ids=["embedded", "standalone"])
async def test_a_delivery_made_once_the_stream_answers_is_on_the_stream(
    stack: Stack, standalone: bool
) -> None:
    """Deliver as soon as /live/stream's headers arrive: the stream carries that record.

    The gateway answered before its WatchDeliveries call was subscribed, so a page that
    delivered on ``open`` could miss its record; a second delivery ends the read.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, server={"admin_token": ADMIN_TOKEN})
    url = service.http_url
    if standalone:
        url = (await _standalone_gateway(stack, service)).output_value("gateway listening on ")
    first, second = (
        pb.Event(message_id=message_id(), type="page", anonymous_id="anon_open_01")
        for _ in range(2)
    )
    seen: list[str] = []
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        client.stream("GET", "/live/stream?replay=0", headers=headers) as stream,
    ):
        assert stream.status_code == 200  # the headers, and nothing of the body read yet
        for event in (first, second):
            await service.stub.Deliver(pb.DeliverRequest(integration_id="web", event=event))
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                seen.append(line.removeprefix("id: "))
            if second.message_id in seen:
                break
    assert seen == [first.message_id, second.message_id]
