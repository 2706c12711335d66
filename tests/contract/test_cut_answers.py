"""An answer whose status line arrived and whose body was then cut off: the status decides.

Amperity is a small asyncio server on 127.0.0.1:0 that writes a status line and headers
announcing a 100-byte body, then hangs up or stalls part-way. The service talks to it
through its real aiohttp transport, as it talks to Amperity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
import pytest

from amperity_signal.service.app import Deps, Service, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.test_contract import details, event
from tests.support import ALICE_EMAIL, Keys, integration_dict, settings_for
from tests.unit.amperity.test_amperity_aiohttp_transport import read_request

# Heads announcing a 100-byte body, and the first bytes of it: all that ever comes.
CUT_202 = b'HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{"status": 202'
CUT_400 = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"status": 400, "message": "body is not'
)
CUT_200 = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"profile_id": "p-cut'
PROFILE = orjson.dumps(
    {"collection_id": "apc-vPsQheAm", "profile_id": "p-whole", "attributes": {"Persona": "Z"}}
)
WHOLE_200 = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PROFILE), PROFILE)


@dataclass
class Reply:
    """What to write for one request, then whether to hang up (else stall until the end)."""

    data: bytes
    hang_up: bool = True


@dataclass
class CuttingAmperity:
    """Answers each request with the next reply (the last one again once they run out).

    ``requests`` holds the request line of every request that arrived.
    """

    replies: list[Reply]
    requests: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: one reply per request, until a reply hangs up or stalls."""
        try:
            while request := await read_request(reader):
                self.requests.append(request.split(b"\r\n", 1)[0].decode())
                reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
                writer.write(reply.data)
                await writer.drain()
                if not reply.hang_up:
                    await self.done.wait()
                break
        finally:
            writer.close()


@dataclass
class Running:
    """The fake Amperity and a service pointed at it, with a stub and a Live Events watch."""

    amperity: CuttingAmperity
    service: Service
    stub: pb_grpc.AmperityServiceStub
    watch: grpc.aio.UnaryStreamCall[pb.WatchDeliveriesRequest, pb.WatchDeliveriesResponse]


@pytest.fixture
async def start(keys: Keys) -> AsyncIterator[Any]:
    """Start the fake Amperity with the given replies and a service (aiohttp) in front."""
    cleanups: list[Any] = []

    async def started(*replies: Reply, **overrides: Any) -> Running:
        amperity = CuttingAmperity(list(replies))
        server = await asyncio.start_server(amperity.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        table = integration_dict(f"http://127.0.0.1:{port}", keys, **overrides)
        # No Deps.transport: the service sends through its own aiohttp transport.
        service = build_server(settings_for(table), Deps())
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        stub = pb_grpc.AmperityServiceStub(channel)
        watch = stub.WatchDeliveries(pb.WatchDeliveriesRequest(integration_id="web"))
        await watch.initial_metadata()

        async def stop() -> None:
            watch.cancel()
            await channel.close()
            await service.stop(0)
            amperity.done.set()
            server.close()
            await server.wait_closed()

        cleanups.append(stop)
        return Running(amperity, service, stub, watch)

    yield started
    for stop in cleanups:
        await stop()


async def live_record(running: Running) -> pb.WatchDeliveriesResponse:
    """The next Live Events record (bounded, so a missing one fails instead of hanging)."""
    record = await asyncio.wait_for(running.watch.read(), 10)
    assert isinstance(record, pb.WatchDeliveriesResponse)
    return record


@pytest.mark.parametrize("hang_up", [True, False], ids=["reset", "stalled"])
async def test_an_event_answered_202_whose_body_is_cut_is_delivered_once(
    start: Any, keys: Keys, hang_up: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """202 then a reset or a stall: one POST, Deliver OK, the cut noted in warnings and log."""
    caplog.set_level(logging.WARNING, logger="amperity_signal")
    # A stalled body ends with the attempt's timeout; a retry would come well within the
    # deadline, so a second POST would show.
    running = await start(
        Reply(CUT_202, hang_up=hang_up), profile_api_key=None, request_timeout=0.5
    )
    sent = event(type="track", event="add_to_cart", user_id="u-cut")

    response = await running.stub.Deliver(
        pb.DeliverRequest(integration_id="web", event=sent), timeout=30
    )

    assert [line.split(" ")[0] for line in running.amperity.requests] == ["POST"]
    assert (response.vendor_request.status_code, response.vendor_request.attempts) == (202, 1)
    cut_notes = [w for w in response.warnings if "response body was cut off" in w]
    assert len(cut_notes) == 1
    assert "counts as delivered and was not sent again" in cut_notes[0]
    record = await live_record(running)
    assert (record.message_id, record.outcome) == (sent.message_id, "delivered")
    assert cut_notes[0] in record.warnings
    logged = [r.getMessage() for r in caplog.records if "body was cut off" in r.getMessage()]
    assert len(logged) == 1
    assert "Amperity answered 202 to the events request" in logged[0]
    for secret in (keys.ingest, keys.profile):
        assert secret not in caplog.text
        assert secret not in str(record)


async def test_a_400_whose_body_is_cut_is_still_a_permanent_400(start: Any) -> None:
    """400 then a reset: not retried as a lost connection; Deliver fails as the 400 maps."""
    running = await start(Reply(CUT_400), profile_api_key=None)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Deliver(
            pb.DeliverRequest(integration_id="web", event=event(type="track", event="x")),
            timeout=30,
        )

    assert len(running.amperity.requests) == 1
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = details(caught.value)["ErrorInfo"]
    assert (info.reason, info.metadata["status_code"]) == ("AMPERITY_BAD_REQUEST", "400")
    record = await live_record(running)
    assert (record.outcome, record.vendor_request.status_code) == ("failed", 400)


async def test_a_profile_lookup_answered_200_with_a_cut_body_is_retried(
    start: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A cut 200 is no profile: the lookup goes again and the whole answer is the one used."""
    caplog.set_level(logging.WARNING, logger="amperity_signal")
    running = await start(Reply(CUT_200), Reply(WHOLE_200))
    sent = event(type="identify", traits={"email": ALICE_EMAIL})

    response = await running.stub.Enrich(
        pb.EnrichRequest(integration_id="web", event=sent), timeout=30
    )

    lookups = [line for line in running.amperity.requests if "/prof/lookup/" in line]
    assert len(lookups) == 2 == len(running.amperity.requests)
    assert (response.resolved, response.amperity_id) == (True, "p-whole")
    assert response.attributes["Persona"] == "Z"
    logged = [r.getMessage() for r in caplog.records if "body was cut off" in r.getMessage()]
    assert len(logged) == 1
    assert "Amperity answered 200 to the lookup request" in logged[0]
    assert "so it is retried" in logged[0]
