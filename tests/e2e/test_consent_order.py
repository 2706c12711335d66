"""Real processes: consent kept in a real Redis, by replicas, through an outage.

sandbox → two ``amperity-signal serve`` processes (gRPC + gateway) sharing a real Redis,
as two replicas behind one load balancer: the withdrawal reaches one, the late batch the
other. And one replica whose Redis is stopped mid-test: a consent it cannot keep is
refused (503, UNAVAILABLE), never answered as kept. And one whose Redis is paused
(``CLIENT PAUSE``: data intact, no answers) while an event carries a withdrawal: the
state is held, the profile hidden, and the withdrawal written once Redis answers.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import redis.asyncio as redis

from amperity_signal.browser import CONSENT_PENDING_WARNING
from amperity_signal.service.convert import struct_to_dict
from amperity_signal_client import AsyncAmperityClient, RetryPolicy, Unavailable
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Service, Stack
from tests.support import ALICE_EMAIL, integration_dict, message_id, mint_keys, until

pytestmark = pytest.mark.e2e

VISITOR = "anon-late-batch"
HEADERS = {"X-Pipeline-Key": "pk_web"}


async def _post(service: Service, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.http_url, timeout=15) as client:
        response = await client.post(path, json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _attributes(service: Service) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.http_url, timeout=15) as client:
        response = await client.get(
            "/v1/enrich",
            params={"provider": "amperity", "anonymous_id": VISITOR},
            headers=HEADERS,
        )
    assert response.status_code == 200, response.text
    attributes: dict[str, Any] = response.json()["attributes"]
    return attributes


async def test_an_event_timestamped_before_a_withdrawal_does_not_restore_the_profile(
    stack: Stack,
) -> None:
    """Withdrawn via POST /v1/consent; a granting event from before it: /v1/enrich stays {}."""
    sandbox = await stack.sandbox()
    redis_url = await stack.redis()
    keys = mint_keys()
    table = integration_dict(sandbox.url, keys, browser_consent="functional")
    cache = {"backend": "redis", "redis_url": redis_url}
    first = await stack.service(sandbox, table, keys=keys, cache=cache)
    second = await stack.service(sandbox, table, keys=keys, cache=cache)
    granted = {"functional": True, "marketing": True}
    identify = {
        "type": "identify",
        "anonymousId": VISITOR,
        "traits": {"email": ALICE_EMAIL},
        "context": {"consent": granted},
    }
    assert (await _post(first, "/v1/i", identify))["success"] is True
    assert (await _attributes(first))["Persona"]

    withdrawn = await _post(
        first, "/v1/consent", {"anonymousId": VISITOR, "consent": {"functional": False}}
    )
    assert withdrawn == {"success": True, "profileAllowed": False}
    before_withdrawal = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    late = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": VISITOR,
        "timestamp": before_withdrawal,
        "context": {"consent": granted},
    }
    batch = await _post(second, "/v1/batch", {"batch": [late]})
    assert batch["results"][0]["ok"] is True, batch  # delivered, yet not the newest consent

    assert await _attributes(first) == {}
    assert await _attributes(second) == {}


async def test_a_consent_sent_while_redis_is_down_is_refused_and_lands_once_it_is_back(
    stack: Stack,
) -> None:
    """Redis stopped: /v1/consent 503 + Retry-After, the client's Unavailable; back: kept.

    Before, both answered that the grant was kept (profileAllowed true) although nothing
    was written, while /v1/enrich answered {}.
    """
    sandbox = await stack.sandbox()
    redis_url = await stack.redis()
    redis_process = stack.processes[-1]
    port = urlsplit(redis_url).port
    assert port is not None
    keys = mint_keys()
    table = integration_dict(sandbox.url, keys, browser_consent="functional")
    service = await stack.service(
        sandbox, table, keys=keys, cache={"backend": "redis", "redis_url": redis_url}
    )
    identify = {
        "type": "identify",
        "anonymousId": VISITOR,
        "traits": {"email": ALICE_EMAIL},
        "context": {"consent": {"functional": True}},
    }
    assert (await _post(service, "/v1/i", identify))["success"] is True
    assert (await _attributes(service))["Persona"]

    await redis_process.stop()
    async with httpx.AsyncClient(base_url=service.http_url, timeout=15) as client:
        refused = await client.post(
            "/v1/consent",
            json={"anonymousId": VISITOR, "consent": {"functional": True}},
            headers=HEADERS,
        )
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["message"].startswith("The consent state was not recorded")
    assert str(port) not in refused.text
    assert await _attributes(service) == {}  # consent unreadable: no profile to the page
    once = RetryPolicy(max_attempts=1)
    async with AsyncAmperityClient(service.grpc_target, pipeline_key="pk_web", retry=once) as sdk:
        with pytest.raises(Unavailable) as caught:
            await sdk.record_consent(VISITOR, {"functional": True})
    assert caught.value.reason == "CACHE_UNAVAILABLE"
    assert caught.value.retry_after == 1.0
    assert caught.value.message.startswith("consent not recorded: ")
    assert str(port) not in caught.value.message

    await stack.redis(port=port)
    # The client's default policy retries UNAVAILABLE, at least RetryInfo's second apart,
    # until the service's cache tries Redis again and the state lands.
    async with AsyncAmperityClient(service.grpc_target, pipeline_key="pk_web") as sdk:
        assert await sdk.record_consent(VISITOR, {"functional": True}) is True
    assert "cache unavailable" in stack.logs()


PAUSE_MS = 4_000
"""How long ``CLIENT PAUSE`` leaves Redis unresponsive: the withdrawal's Deliver and a
BrowserProfile (each meeting the service's 0.25 s Redis timeout) happen well within it."""


async def _paused_service(stack: Stack) -> tuple[Service, redis.Redis]:
    """A service on a real Redis whose visitor has granted consent; a client of that Redis."""
    sandbox = await stack.sandbox()
    redis_url = await stack.redis()
    keys = mint_keys()
    table = integration_dict(sandbox.url, keys, browser_consent="functional")
    service = await stack.service(
        sandbox, table, keys=keys, cache={"backend": "redis", "redis_url": redis_url}
    )
    answer = await service.stub.Deliver(_identify(functional=True), timeout=15)
    assert CONSENT_PENDING_WARNING not in answer.warnings

    async def shown() -> bool:
        return bool(await _profile(service))

    await until(shown, lambda: "the granting visitor's profile was never shown")
    return service, redis.Redis.from_url(redis_url)


def _identify(*, functional: bool) -> pb.DeliverRequest:
    event = pb.Event(message_id=message_id(), type="identify", anonymous_id=VISITOR)
    event.traits.update({"email": ALICE_EMAIL})
    event.context.consent.functional = functional
    return pb.DeliverRequest(integration_id="web", event=event)


async def _profile(service: Service) -> dict[str, Any]:
    request = pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id=VISITOR)
    return struct_to_dict((await service.stub.BrowserProfile(request, timeout=15)).attributes)


async def test_a_withdrawal_delivered_while_redis_is_paused_is_kept_and_written_after(
    stack: Stack,
) -> None:
    """Redis paused (CLIENT PAUSE): the withdrawal is held, the profile stays hidden, then kept.

    Before, the withdrawal was dropped with an OK and no warning; once Redis answered again
    the older grant was still stored and BrowserProfile served the profile again until the
    visitor sent another event.
    """
    service, inspector = await _paused_service(stack)
    key = "consent:" + hashlib.sha256(f"web\0{VISITOR}".encode()).hexdigest()
    try:
        assert await inspector.client_pause(PAUSE_MS, all=True)
        answer = await service.stub.Deliver(_identify(functional=False), timeout=15)
        assert CONSENT_PENDING_WARNING in answer.warnings  # delivered, and says so
        assert await _profile(service) == {}
        assert await inspector.ping()  # answered once the pause is over
        assert await _profile(service) == {}  # the held withdrawal first, written or not

        async def withdrawal_stored() -> bool:
            stored = await inspector.get(key)
            return stored is not None and orjson.loads(stored)["functional"] is False

        await until(withdrawal_stored, lambda: "the held withdrawal was never written")
        assert await _profile(service) == {}
    finally:
        await inspector.aclose()
    logs = stack.logs()
    assert logs.count("consent states the cache did not take are held") == 1
    assert "consent states held through the cache outage are written" in logs


async def test_a_stop_while_a_withdrawal_is_held_tries_it_once_and_logs_how_many_are_left(
    stack: Stack,
) -> None:
    """SIGTERM with Redis still paused: one try, then the count of states left is logged."""
    service, inspector = await _paused_service(stack)
    try:
        assert await inspector.client_pause(PAUSE_MS, all=True)
        answer = await service.stub.Deliver(_identify(functional=False), timeout=15)
        assert CONSENT_PENDING_WARNING in answer.warnings
        assert await service.process.stop() == 0
    finally:
        await inspector.aclose()
    assert "1 consent states the cache did not take could not be written" in stack.logs()
