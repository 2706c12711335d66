"""Every answer of the API notes' status table, and the spec's troubleshooting rows.

Each Amperity status (real, from the sandbox's streams and keys, or injected as a fault)
comes back as the documented gRPC status with the table's advice; permanent answers are
never retried, temporary ones are, inside the caller's deadline.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from amperity_signal.sandbox.edge import CLIENT_GONE
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Service, Stack
from tests.support import (
    DROP_STREAM,
    REJECT_STREAM,
    Keys,
    integration_dict,
    message_id,
    mint_keys,
)

# One sandbox and one service (an integration per failure mode) for the module; the
# sandbox is reset before each test, so its request log and faults are the test's own.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

EVENTS_PATH = "/prof/events/"
UNKNOWN_STREAM = "esm-N0SuchStrm"
UNKNOWN_HOST = "http://no-such-tenant.invalid:1"
Detail = TypeVar(
    "Detail", error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo
)


@dataclass(frozen=True)
class World:
    """The module's sandbox and service."""

    sandbox: Sandbox
    service: Service


def table(sandbox: Sandbox, keys: Keys, integration_id: str, **overrides: Any) -> dict[str, Any]:
    """One integration without enrichment, so only event POSTs reach the sandbox."""
    return integration_dict(
        sandbox.url, keys, integration_id=integration_id, enrichment=False, **overrides
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """A sandbox and a service with the integrations the tests below break on purpose."""
    stack = Stack(workdir=tmp_path_factory.mktemp("statuses"))
    try:
        sandbox = await stack.sandbox()
        keys = mint_keys()
        tables = [
            table(sandbox, keys, "web"),
            table(sandbox, keys, "few_retries", max_retries=2),
            table(sandbox, keys, "drop", event_stream_id=DROP_STREAM),
            table(sandbox, keys, "reject", event_stream_id=REJECT_STREAM),
            table(sandbox, keys, "missing", event_stream_id=UNKNOWN_STREAM),
            table(sandbox, keys, "expired", api_key=mint_keys(ttl=-60).ingest),
            table(sandbox, keys, "wrong_scope", api_key=keys.profile),
            table(sandbox, keys, "no_host", api_base_url=UNKNOWN_HOST),
        ]
        yield World(sandbox, await stack.service(sandbox, *tables, keys=keys))
    finally:
        await stack.close()


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def fresh_sandbox(world: World) -> None:
    """Each test starts with no faults and an empty request log."""
    (await world.sandbox.inspector.post("/_sandbox/reset")).raise_for_status()


def event(name: str = "Product Added", **properties: Any) -> pb.Event:
    """A track event, by default retail's add_to_cart."""
    props = struct_pb2.Struct()
    props.update(properties)
    return pb.Event(
        message_id=message_id(),
        type="track",
        event=name,
        anonymous_id="anon_status",
        properties=props,
    )


async def deliver(
    world: World, integration_id: str, sent: pb.Event | None = None, wait: float = 30
) -> pb.DeliverResponse:
    """Deliver one event through ``integration_id``."""
    response: pb.DeliverResponse = await world.service.stub.Deliver(
        pb.DeliverRequest(integration_id=integration_id, event=sent or event()),
        timeout=wait,
    )
    return response


async def refused(
    world: World, integration_id: str, sent: pb.Event | None = None, wait: float = 30
) -> tuple[grpc.aio.AioRpcError, status_pb2.Status]:
    """Deliver an event that must fail; the RPC error and its google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await deliver(world, integration_id, sent, wait)
    error = caught.value
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status.ParseFromString(value)
    return error, status


def detail(status: status_pb2.Status, kind: type[Detail]) -> Detail | None:
    """The first detail of ``kind`` packed in ``status``, if any."""
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            found = kind()
            packed.Unpack(found)
            return found
    return None


def reason(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of ``status``."""
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info is not None, "every error carries exactly one ErrorInfo"
    return str(info.reason)


async def event_posts(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The event POSTs the sandbox received since the reset."""
    return await sandbox.requests(path_prefix=EVENTS_PATH)


async def test_204_is_ok_with_the_stream_is_dropping_events_warning(world: World) -> None:
    """A stream in Drop mode answers 204: OK, flagged "stream is dropping events"."""
    response = await deliver(world, "drop")
    assert response.vendor_request.status_code == 204
    assert any("stream is dropping events" in w for w in response.warnings)
    assert [r["status"] for r in await event_posts(world.sandbox)] == [204]


REGENERATE = "Regenerate it under Settings > Security > API Keys with Streaming Ingest Write Access"


@dataclass(frozen=True)
class Permanent:
    """A permanent answer of the notes' table and what the caller must get for it."""

    integration_id: str
    fault: dict[str, Any] | None
    http: int
    code: grpc.StatusCode
    reason: str
    advice: str


PERMANENT = [
    pytest.param(
        Permanent(
            "web",
            {"status": 400, "kind": "events"},
            400,
            grpc.StatusCode.FAILED_PRECONDITION,
            "AMPERITY_BAD_REQUEST",
            "must be exactly one JSON object",
        ),
        id="400",
    ),
    pytest.param(
        Permanent(
            "expired", None, 401, grpc.StatusCode.UNAUTHENTICATED, "INGEST_KEY_REJECTED", REGENERATE
        ),
        id="401-expired-key",
    ),
    pytest.param(
        Permanent(
            "wrong_scope",
            None,
            403,
            grpc.StatusCode.PERMISSION_DENIED,
            "INGEST_KEY_REJECTED",
            REGENERATE,
        ),
        id="403-profile-key-as-api-key",
    ),
    pytest.param(
        Permanent(
            "missing",
            None,
            404,
            grpc.StatusCode.FAILED_PRECONDITION,
            "STREAM_NOT_FOUND",
            "check event_stream_id",
        ),
        id="404-unknown-stream",
    ),
    pytest.param(
        Permanent(
            "reject",
            None,
            409,
            grpc.StatusCode.FAILED_PRECONDITION,
            "STREAM_REJECTING",
            "Reject mode and refuses events",
        ),
        id="409-reject-stream",
    ),
    pytest.param(
        Permanent(
            "web",
            {"status": 413, "kind": "events"},
            413,
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAYLOAD_TOO_LARGE",
            "at most 65,536 bytes",
        ),
        id="413-answered",
    ),
]


@pytest.mark.parametrize("answer", PERMANENT)
async def test_a_permanent_answer_gives_its_status_and_advice_after_exactly_one_request(
    world: World, answer: Permanent
) -> None:
    """400/401/403/404/409/413 map to the documented status and fix, and are never retried."""
    if answer.fault is not None:
        await world.sandbox.fault(**answer.fault)
    error, status = await refused(world, answer.integration_id)
    assert error.code() == answer.code
    assert reason(status) == answer.reason
    assert answer.advice in (error.details() or "")
    assert detail(status, error_details_pb2.RetryInfo) is None
    assert [r["status"] for r in await event_posts(world.sandbox)] == [answer.http]


async def test_an_oversized_body_is_refused_before_sending_naming_the_biggest_field(
    world: World,
) -> None:
    """Over 64 KB mapped: INVALID_ARGUMENT naming the biggest field; Amperity saw nothing."""
    # A custom event passes its properties through, so the list reaches the body.
    sent = event("Support Ticket Opened", notes=["x" * 8_000] * 10, subject="boots")
    error, status = await refused(world, "web", sent)
    bad_request = detail(status, error_details_pb2.BadRequest)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request is not None
    assert bad_request.field_violations[0].field == "notes"
    assert "65,536" in bad_request.field_violations[0].description
    assert "notes" in (error.details() or "")
    assert await event_posts(world.sandbox) == []


async def test_an_unknown_host_is_failed_precondition_naming_the_field_that_set_it(
    world: World,
) -> None:
    """A host DNS does not know is the spec's "no such host" row, answered at once.

    The host here comes from api_base_url, so that is the field named (the unit tests
    cover the tenant_subdomain wording, which needs DNS for amperity.com).
    """
    error, status = await refused(world, "no_host")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(status) == "TENANT_HOST_NOT_FOUND"
    assert "no such host no-such-tenant.invalid" in (error.details() or "")
    assert "Correct the host in api_base_url" in (error.details() or "")
    assert await event_posts(world.sandbox) == []


@pytest.mark.parametrize("http", [500, 502, 503, 504])
async def test_a_5xx_then_202_succeeds_on_the_second_attempt(world: World, http: int) -> None:
    """A temporary 5xx is retried: the event is delivered with attempts = 2."""
    await world.sandbox.fault(status=http, kind="events", count=1)
    response = await deliver(world, "web")
    assert response.vendor_request.status_code == 202
    assert response.vendor_request.attempts == 2
    assert [r["status"] for r in await event_posts(world.sandbox)] == [http, 202]


async def test_429s_are_retried_until_accepted(world: World) -> None:
    """Throttling (429) is retried with backoff; the event then arrives once."""
    await world.sandbox.fault(burst_429=2, kind="events")
    sent = event()
    response = await deliver(world, "web", sent)
    assert response.vendor_request.attempts == 3
    assert [r["status"] for r in await event_posts(world.sandbox)] == [429, 429, 202]
    accepted = [e for e in await world.sandbox.events() if e["status"] == 202]
    assert [e["body"]["message_id"] for e in accepted] == [sent.message_id]


@pytest.mark.parametrize(
    ("fault", "code", "why"),
    [
        ({"burst_429": 100}, grpc.StatusCode.RESOURCE_EXHAUSTED, "AMPERITY_THROTTLED"),
        ({"status": 503}, grpc.StatusCode.UNAVAILABLE, "AMPERITY_UNAVAILABLE"),
    ],
    ids=["429", "503"],
)
async def test_retries_that_run_out_return_a_retryable_status_with_retry_info(
    world: World, fault: dict[str, Any], code: grpc.StatusCode, why: str
) -> None:
    """429/5xx beyond max_retries: RESOURCE_EXHAUSTED/UNAVAILABLE with RetryInfo."""
    await world.sandbox.fault(kind="events", **fault)
    error, status = await refused(world, "few_retries")
    retry = detail(status, error_details_pb2.RetryInfo)
    assert error.code() == code
    assert reason(status) == why
    assert retry is not None
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    assert len(await event_posts(world.sandbox)) == 3  # max_retries = 2


async def test_a_deadline_shorter_than_the_backoff_returns_unavailable_not_a_hang(
    world: World,
) -> None:
    """Retry-After beyond the caller's deadline: UNAVAILABLE with RetryInfo, promptly."""
    await world.sandbox.fault(status=503, kind="events", retry_after=30)
    error, status = await refused(world, "web", wait=2.0)
    retry = detail(status, error_details_pb2.RetryInfo)
    # UNAVAILABLE, not the client's DEADLINE_EXCEEDED: the service answered within the 2 s.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(status) == "AMPERITY_UNAVAILABLE"
    assert retry is not None
    assert retry.retry_delay.ToTimedelta().total_seconds() >= 29
    assert len(await event_posts(world.sandbox)) == 1


async def test_a_slow_amperity_past_the_deadline_returns_unavailable_not_a_hang(
    world: World,
) -> None:
    """An answer later than the caller's deadline ends as UNAVAILABLE with RetryInfo."""
    await world.sandbox.fault(latency_ms=20_000, kind="events")
    error, status = await refused(world, "web", wait=2.0)
    # UNAVAILABLE, not the client's DEADLINE_EXCEEDED: the service answered within the 2 s.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert detail(status, error_details_pb2.RetryInfo) is not None

    # The abandoned POST is recorded (499) when the sandbox sees the connection close, which
    # can come after this answer: wait for it, or it may land in the next test's request log.
    posts = await world.sandbox.journaled(path_prefix=EVENTS_PATH)
    assert [r["status"] for r in posts] == [CLIENT_GONE]


async def test_retry_after_is_honoured_before_the_next_attempt(world: World) -> None:
    """A 503 with Retry-After: 1 is retried no sooner than a second later, then delivered."""
    await world.sandbox.fault(status=503, kind="events", count=1, retry_after=1)
    started = time.monotonic()
    response = await deliver(world, "web")
    elapsed = time.monotonic() - started
    posts = await event_posts(world.sandbox)
    assert response.vendor_request.attempts == 2
    assert [r["status"] for r in posts] == [503, 202]
    assert posts[1]["timestamp"] - posts[0]["timestamp"] >= 0.9
    assert elapsed >= 1.0
