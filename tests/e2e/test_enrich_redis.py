"""Two service processes sharing a real redis-server: resolutions, the rate limit, outages."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit

import pytest

from amperity_signal.service.app import probe_redis
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.enrich_support import (
    deliver,
    enrich,
    event,
    partner_calls,
    rate_limited_sandbox,
    serve,
)
from tests.e2e.stack import Stack, free_port
from tests.support import ALICE_PROFILE, integration_dict, mint_keys

pytestmark = pytest.mark.e2e

ALICE = {"traits": {"email": "alice@example.com"}}


async def test_a_visitor_resolved_by_one_process_costs_the_other_no_lookup(stack: Stack) -> None:
    """Two processes of one tenant share Redis: the second answers alice from the cache."""
    sandbox = await stack.sandbox()
    redis_url = await stack.redis()
    keys = mint_keys()
    cache = {"backend": "redis", "redis_url": redis_url}
    first = await serve(stack, sandbox, integration_dict(sandbox.url, keys), keys=keys, cache=cache)
    second = await serve(
        stack, sandbox, integration_dict(sandbox.url, keys), keys=keys, cache=cache
    )

    resolved = await enrich(first, event("anon_shared", **ALICE))
    assert resolved.amperity_id == ALICE_PROFILE
    assert await partner_calls(sandbox) == (1, 0)

    shared = await enrich(second, event("anon_shared"))  # cookie only: the identity map too
    assert (shared.amperity_id, shared.matched_key) == (ALICE_PROFILE, "email_sha256")
    assert shared.cache_status == pb.CACHE_STATUS_HIT
    assert await partner_calls(sandbox) == (1, 0)


async def test_two_processes_offered_2000_events_at_once_never_get_a_429(stack: Stack) -> None:
    """The per-tenant limit is shared through Redis: 2,000 events across two processes, no 429."""
    # 200/s rather than 500: two processes on a small CI box cannot offer 500/s, and a limit
    # they can exceed is what makes an unshared (per-process) limiter fail this test.
    limit = 200
    sandbox = await rate_limited_sandbox(stack, limit)
    redis_url = await stack.redis()
    keys = mint_keys()
    cache = {"backend": "redis", "redis_url": redis_url}
    table = integration_dict(sandbox.url, keys, rate_limit_per_second=limit)
    services = [await serve(stack, sandbox, table, keys=keys, cache=cache) for _ in range(2)]

    async def offer(n: int) -> pb.DeliverResponse:
        request = pb.DeliverRequest(integration_id="web", event=event(f"anon_burst_{n % 50}"))
        return await services[n % 2].stub.Deliver(request, timeout=60)

    responses = await asyncio.gather(*(offer(n) for n in range(2_000)))

    assert {r.vendor_request.status_code for r in responses} == {202}
    stats = await sandbox.stats()
    assert (stats["throttled"], stats["by_status"].get("202")) == (0, 2_000), stats


async def test_a_redis_outage_degrades_to_no_cache_and_the_cache_returns_with_redis(
    stack: Stack,
) -> None:
    """Redis killed: Enrich/Deliver still answer OK (logged); a new Redis on the port is used."""
    sandbox = await stack.sandbox()
    redis_url = await stack.redis()
    redis_process = stack.processes[-1]
    service = await serve(stack, sandbox, cache={"backend": "redis", "redis_url": redis_url})
    assert (await enrich(service, event("anon_outage", **ALICE))).amperity_id == ALICE_PROFILE
    assert (await enrich(service, event("anon_outage", **ALICE))).cache_status == (
        pb.CACHE_STATUS_HIT
    )

    await redis_process.stop(signal.SIGKILL)
    during = await enrich(service, event("anon_outage", **ALICE))
    delivered = await deliver(service, event("anon_outage", **ALICE))

    assert during.amperity_id == ALICE_PROFILE
    assert during.cache_status == pb.CACHE_STATUS_MISS  # answered by the sandbox, not the cache
    assert delivered.vendor_request.status_code == 202
    assert delivered.enrichment.amperity_id == ALICE_PROFILE
    assert "cache unavailable" in stack.logs()

    port = urlsplit(redis_url).port
    assert port is not None
    await stack.redis(port=port)
    await asyncio.sleep(1.1)  # the cache backend skips the store for a second after a failure
    again = [await enrich(service, event("anon_outage", **ALICE)) for _ in range(2)]
    assert [r.cache_status for r in again] == [pb.CACHE_STATUS_MISS, pb.CACHE_STATUS_HIT]
    assert "cache available again" in stack.logs()


async def test_a_redis_that_refuses_or_is_down_is_named_at_start(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password and a stopped server each get their own advice, password unshown."""
    url = await stack.redis(password="right-Pa55word")
    port = urlsplit(url).port
    assert await probe_redis(f"redis://:right-Pa55word@127.0.0.1:{port}/0")
    assert not await probe_redis(f"redis://:wrong-Pa55word@127.0.0.1:{port}/0")
    assert "refused the credentials" in caplog.text
    assert "user and password in cache.redis_url" in caplog.text
    caplog.clear()
    assert not await probe_redis(f"redis://127.0.0.1:{free_port()}/0")
    assert "redis-server is running at cache.redis_url's host and port" in caplog.text
    assert "Pa55word" not in caplog.text
