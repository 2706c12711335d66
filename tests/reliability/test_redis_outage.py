"""A Redis outage in the middle of a run: deliveries go on, enrichment degrades, then recovers.

The service caches resolutions and attributes in a real redis-server. A third of the way
through a ``deliver_many`` run Redis is stopped; two thirds through a new redis-server is
started on the same port. Every event is delivered, the outage shows as log warnings and
the ``amperity_signal_enrichment_degraded`` metric at the gateway's ``/metrics``, and
answers come from the cache again once Redis is back.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Stack
from tests.reliability.profile import PROFILE
from tests.reliability.support import (
    Outcome,
    RunReport,
    make_events,
    patient_client,
    received,
    stream_all,
)
from tests.support import ALICE_PROFILE

if TYPE_CHECKING:
    from datafly.amperity.v1.amperity_service_pb2_grpc import AmperityServiceAsyncStub

pytestmark = pytest.mark.e2e

# Seeded device cookies (alice, bob, dave): their events resolve, so the cache has
# something to answer from.
KNOWN_COOKIES = ("anon_alice_01", "anon_bob_02", "anon_dave_04")
DEGRADED = re.compile(
    r'^amperity_signal_enrichment_degraded_total\{[^}]*cause="cache_unavailable"[^}]*\} (\S+)$',
    re.MULTILINE,
)


def degraded_count(metrics_text: str) -> float:
    """The cache_unavailable degradations counted in a /metrics exposition."""
    return sum(float(value) for value in DEGRADED.findall(metrics_text))


async def test_deliveries_continue_through_a_redis_outage_and_the_cache_returns(
    stack: Stack,
) -> None:
    """Redis stopped mid-run: all delivered, degraded metric + warning, cache hits once back."""
    sandbox = await stack.sandbox()
    redis_url = await stack.redis()
    redis_process = stack.processes[-1]
    port = urlsplit(redis_url).port
    assert port is not None
    service = await stack.service(sandbox, cache={"backend": "redis", "redis_url": redis_url})
    events = make_events(PROFILE.redis_events, "redis")
    for index, event in enumerate(events):
        if index % 2 == 0:
            event.anonymous_id = KNOWN_COOKIES[index % len(KNOWN_COOKIES)]
    phases: dict[str, Counter[pb.CacheStatus.ValueType]] = {
        "before": Counter(),
        "during": Counter(),
        "after": Counter(),
    }
    phase = ["before"]

    async def outage(outcome: Outcome) -> None:
        answered = len(outcome.acknowledged)
        if outcome.last is not None and outcome.last.HasField("result"):
            phases[phase[0]][outcome.last.result.enrichment.cache_status] += 1
        if phase[0] == "before" and answered >= len(events) // 3:
            await redis_process.stop()
            phase[0] = "during"
        elif phase[0] == "during" and answered >= 2 * len(events) // 3:
            await stack.redis(port=port)
            await cache_answers_again(service.stub)
            phase[0] = "after"

    async with patient_client(service.grpc_target) as client:
        outcome = await stream_all(client, events, on_answer=outage)
    async with httpx.AsyncClient(base_url=service.http_url, timeout=10) as gateway:
        metrics = (await gateway.get("/metrics")).text
    again = [
        await service.stub.Enrich(
            pb.EnrichRequest(integration_id="web", event=make_known("anon_alice_01")), timeout=10
        )
        for _ in range(2)
    ]
    named = {
        name: {pb.CacheStatus.Name(k): v for k, v in counts.items()}
        for name, counts in phases.items()
    }
    report = RunReport(
        "redis_outage",
        [e.message_id for e in events],
        outcome,
        await received(sandbox),
        extra={"cache_status_by_phase": named, "degraded_metric": degraded_count(metrics)},
    )
    report.write()
    logs = stack.logs()

    assert outcome.errors == {}
    assert report.lost == []
    assert report.acknowledged_but_missing == []
    assert phase[0] == "after"
    assert phases["before"][pb.CACHE_STATUS_HIT] > 0
    assert phases["during"][pb.CACHE_STATUS_MISS] > 0
    assert phases["after"][pb.CACHE_STATUS_HIT] > 0
    assert degraded_count(metrics) > 0, metrics
    assert "cache unavailable" in logs
    assert "cache available again" in logs
    assert [r.amperity_id for r in again] == [ALICE_PROFILE, ALICE_PROFILE]
    assert again[1].cache_status == pb.CACHE_STATUS_HIT


async def cache_answers_again(stub: AmperityServiceAsyncStub) -> None:
    """Wait (at most 15 s) until an Enrich of one visitor, asked twice, is a cache hit.

    The cache skips the store for a second after each failure, and the first calls after
    the restart may meet pooled connections to the old process: a fixed sleep raced them.
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + 15
    request = pb.EnrichRequest(integration_id="web", event=make_known("anon_alice_01"))
    while loop.time() < until:
        answer = await stub.Enrich(request, timeout=10)
        if answer.cache_status == pb.CACHE_STATUS_HIT:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the cache gave no hit within 15 s of Redis coming back")


def make_known(cookie: str) -> pb.Event:
    """A page event from a seeded device cookie."""
    return pb.Event(message_id=f"redis-check-{cookie}", type="page", anonymous_id=cookie)
