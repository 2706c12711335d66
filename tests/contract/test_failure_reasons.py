"""What an operator sees of a failed or refused event: its reason in the metrics, one log line.

``amperity_signal_deliveries_total`` counts a failed delivery under the reason code its
caller got, and an event refused before delivery under ``refused``; the failure is logged
once, by the layer that knows why (``delivery failed``), not again as ``rpc failed``.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest

from amperity_signal.logs import JsonFormatter
from amperity_signal.service.app import Deps, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.contract.harness import SANDBOX_URL, Harness
from tests.contract.test_contract import details, event
from tests.support import REJECT_STREAM, Keys, integration_dict, mint_keys, settings_for

MISSING_STREAM = "esm-0NoSuchStrm"
RPC_LOG = "amperity_signal.rpc"


def deliveries(harness: Harness, **labels: str) -> float:
    """The sum of the ``amperity_signal_deliveries_total`` series that carry ``labels``."""
    return sum(
        sample.value
        for family in harness.service.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "amperity_signal_deliveries_total"
        and labels.items() <= sample.labels.items()
    )


async def deliver_failing(harness: Harness, integration_id: str, kind: str = "page") -> str:
    """Deliver one event of type ``kind`` that must fail; the reason code the caller got."""
    request = pb.DeliverRequest(integration_id=integration_id, event=event(type=kind))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.Deliver(request)
    return str(details(caught.value)["ErrorInfo"].reason)


@pytest.fixture
async def two_streams(make_harness: Callable[..., Any], keys: Keys) -> Harness:
    """``rejecting`` posts to a stream in Reject mode, ``missing`` to one that does not exist."""
    made: Harness = await make_harness(
        integration_dict(
            SANDBOX_URL, keys, integration_id="rejecting", event_stream_id=REJECT_STREAM
        ),
        integration_dict(
            SANDBOX_URL, keys, integration_id="missing", event_stream_id=MISSING_STREAM
        ),
    )
    return made


async def test_failed_deliveries_are_counted_by_the_reason_their_caller_got(
    two_streams: Harness,
) -> None:
    """STREAM_REJECTING and STREAM_NOT_FOUND, both FAILED_PRECONDITION, are two series."""
    assert await deliver_failing(two_streams, "rejecting") == "STREAM_REJECTING"
    assert await deliver_failing(two_streams, "missing") == "STREAM_NOT_FOUND"
    assert await deliver_failing(two_streams, "missing") == "STREAM_NOT_FOUND"

    assert deliveries(two_streams, integration="rejecting", reason="STREAM_REJECTING") == 1
    assert deliveries(two_streams, integration="missing", reason="STREAM_NOT_FOUND") == 2
    assert deliveries(two_streams, outcome="failed") == 3


async def test_refused_events_are_counted_under_refused_by_reason(harness: Harness) -> None:
    """An invalid event and an unknown integration are counted, neither under a made-up name."""
    assert await deliver_failing(harness, "web", "nonsense") == "INVALID_EVENT"
    assert await deliver_failing(harness, "no-such-integration") == "UNKNOWN_INTEGRATION"

    unnamed = event(type="page")
    unnamed.ClearField("message_id")

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        yield pb.DeliverStreamRequest(integration_id="web", event=unnamed)

    (answer,) = [r async for r in harness.stub.DeliverStream(requests())]
    assert answer.error.reason == "INVALID_EVENT"

    refused = {"outcome": "refused", "amperity_type": "unknown"}
    assert deliveries(harness, **refused, integration="web", reason="INVALID_EVENT") == 2
    assert deliveries(harness, **refused, integration="", reason="UNKNOWN_INTEGRATION") == 1
    assert deliveries(harness, integration="no-such-integration") == 0
    assert deliveries(harness, outcome="delivered") == 0


async def test_a_failed_delivery_is_logged_once_by_delivery_with_its_reason(
    two_streams: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """One line, the delivery's warning with the advice: no ``rpc failed`` at any level."""
    caplog.set_level(logging.DEBUG, logger="amperity_signal")

    await deliver_failing(two_streams, "missing")

    lines = [r for r in caplog.records if r.name in ("amperity_signal.delivery", RPC_LOG)]
    assert [(r.levelno, r.getMessage()[:16], r.__dict__["reason"]) for r in lines] == [
        (logging.WARNING, "delivery failed:", "STREAM_NOT_FOUND")
    ]


class JsonLines(logging.Handler):
    """Formats each record as the service writes it, as it is logged (its context's ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's JSON line."""
        self.lines.append(json.loads(self.format(record)))


async def test_a_page_call_names_its_integration_on_the_partner_resolve_failed_line(
    make_harness: Callable[..., Any],
) -> None:
    """BrowserProfile found by pipeline key names the integration, as Deliver and Enrich do."""
    streaming_only = mint_keys().ingest  # a key without Profile Read Access: 403
    harness: Harness = await make_harness(profile_api_key=streaming_only)
    lines = JsonLines()
    logger = logging.getLogger("amperity_signal.enrich")
    logger.addHandler(lines)
    try:
        await harness.stub.BrowserProfile(
            pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id="anon_page_log")
        )
    finally:
        logger.removeHandler(lines)

    [failed] = [line for line in lines.lines if line["msg"].startswith("partner resolve failed")]
    assert failed["integration_id"] == "web"
    assert "reason=PROFILE_KEY_FORBIDDEN" in failed["msg"]


async def test_a_wrong_tenant_host_is_one_warning_per_failed_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Deliver's lookup and its event POST both meet "no such host": one line, not two.

    Until session 27 each delivered event of a mistyped tenant_subdomain logged the advice
    twice, as ``partner resolve failed`` and as ``delivery failed``. An Enrich, which posts
    nothing, still logs it on its own line.
    """
    hosts: list[str] = []

    def no_such_host(request: httpx.Request) -> httpx.Response:
        hosts.append(f"{request.url.host} {request.url.path}")
        error = httpx.ConnectError("[Errno -2] Name or service not known", request=request)
        error.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        raise error

    table = integration_dict("", mint_keys(), tenant_subdomain="acmee")
    del table["api_base_url"]
    service = build_server(settings_for(table), Deps(transport=httpx.MockTransport(no_such_host)))
    await service.start()
    stub = pb_grpc.AmperityServiceStub(service.in_process_channel())
    caplog.set_level(logging.DEBUG, logger="amperity_signal")
    try:
        for n in range(3):
            visitor = event(type="page", anonymous_id=f"a_{n}", traits={"email": f"v{n}@x.test"})
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Deliver(pb.DeliverRequest(integration_id="web", event=visitor))
            assert details(caught.value)["ErrorInfo"].reason == "TENANT_HOST_NOT_FOUND"
        delivered = [r for r in caplog.records if "no such host" in r.getMessage()]
        caplog.clear()
        visitor = event(type="page", anonymous_id="a_enrich", traits={"email": "e@x.test"})
        await stub.Enrich(pb.EnrichRequest(integration_id="web", event=visitor))
        enriched = [r for r in caplog.records if "no such host" in r.getMessage()]
    finally:
        await service.stop(0)

    assert any("keychain" in host for host in hosts), hosts  # the lookups did meet it
    assert [r.getMessage()[:16] for r in delivered] == ["delivery failed:"] * 3
    assert [r.getMessage()[:23] for r in enriched] == ["partner resolve failed:"]
