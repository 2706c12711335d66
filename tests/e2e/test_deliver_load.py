"""Load and isolation: the per-tenant rate limit holds, and one slow tenant slows no other.

2,000 events offered at once must all arrive without the sandbox's rate limiter (500
requests per second per tenant, like Amperity's) ever answering 429; and while one
tenant's Amperity holds its answers, another tenant's deliveries all finish meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amperity_signal.sandbox.testing import GLOBEX, GLOBEX_STREAM
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox, Stack
from tests.support import Keys, integration_dict, message_id, mint_keys

pytestmark = pytest.mark.e2e

OFFERED = 2_000


def table(sandbox: Sandbox, keys: Keys, integration_id: str, **overrides: Any) -> dict[str, Any]:
    """One integration without enrichment (only event POSTs)."""
    return integration_dict(
        sandbox.url, keys, integration_id=integration_id, enrichment=False, **overrides
    )


def event(anonymous_id: str = "anon_load") -> pb.Event:
    """A retail add_to_cart event with a fresh message id."""
    return pb.Event(
        message_id=message_id(), type="track", event="Product Added", anonymous_id=anonymous_id
    )


async def test_2000_events_at_once_all_arrive_and_amperity_never_answers_429(
    stack: Stack,
) -> None:
    """DeliverStream with 2,000 events (enrichment on) stays under 500 requests/s: no 429."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)  # enrichment on: lookups share the tenant limit
    sent = [event(f"anon_load_{index % 200}") for index in range(OFFERED)]

    async def requests() -> AsyncIterator[pb.DeliverStreamRequest]:
        for item in sent:
            yield pb.DeliverStreamRequest(integration_id="web", event=item)

    started = time.monotonic()
    answers = [answer async for answer in service.stub.DeliverStream(requests())]
    elapsed = time.monotonic() - started
    stats = await sandbox.stats()
    errors = [a.error.message for a in answers if a.HasField("error")]
    assert errors == []
    assert sorted(a.message_id for a in answers) == sorted(e.message_id for e in sent)
    assert all(a.result.vendor_request.status_code == 202 for a in answers)
    assert stats["throttled"] == 0
    assert "429" not in stats["by_status"]
    assert stats["by_kind"]["events"] == OFFERED
    received = {e["body"]["message_id"] for e in await sandbox.events(limit=OFFERED + 10)}
    assert received == {e.message_id for e in sent}
    # 500 requests/s is the ceiling: 2,000 events (plus lookups) cannot take under ~4 s.
    assert elapsed >= (stats["total"] / 500) - 1.0


async def test_a_tenant_whose_amperity_holds_its_answers_does_not_slow_another_tenants(
    stack: Stack,
) -> None:
    """With globex's Amperity holding every answer, acme's 40 deliveries end before any of its.

    An ordering, not a latency figure: acme queued behind globex would wait for globex's
    answers, which the sandbox holds (a ``hold`` fault) until acme's calls have ended.
    It used to answer them after a fixed 5 s, which the test then waited out.
    """
    acme_sandbox = await stack.sandbox()
    globex_sandbox = await stack.sandbox()
    acme_keys, globex_keys = mint_keys(), mint_keys(GLOBEX)
    service = await stack.service(
        acme_sandbox,
        table(acme_sandbox, acme_keys, "acme"),
        table(
            globex_sandbox,
            globex_keys,
            "globex",
            tenant_subdomain=GLOBEX,
            tenant_id=GLOBEX,
            event_stream_id=GLOBEX_STREAM,
        ),
        keys=acme_keys,
    )

    async def timed(integration_id: str) -> float:
        started = time.monotonic()
        await service.stub.Deliver(
            pb.DeliverRequest(integration_id=integration_id, event=event()), timeout=30
        )
        return time.monotonic() - started

    async def acme_deliveries() -> None:
        await asyncio.gather(*(timed("acme") for _ in range(40)))

    await timed("globex")  # both integrations warmed up and known to work
    await acme_deliveries()
    await globex_sandbox.fault(hold=True, tenant=GLOBEX, kind="events")
    slow = [asyncio.create_task(timed("globex")) for _ in range(40)]
    await acme_deliveries()
    assert not any(task.done() for task in slow), "globex answered before acme's calls ended"
    # Release until every call is answered: those past the connection pool's 32 are held
    # in their turn.
    released = 0
    while not all(task.done() for task in slow):
        released += await globex_sandbox.release()
        await asyncio.sleep(0.02)
    await asyncio.gather(*slow)
    assert released == 40  # the fault held every globex POST for real: the ordering means it
    acme_stats = (await acme_sandbox.stats())["tenants"]["acme"]
    assert acme_stats["by_kind"]["events"] == 80
