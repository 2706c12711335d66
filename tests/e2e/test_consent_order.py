"""Real processes: a late event from before a withdrawal cannot give the page the profile back.

sandbox → two ``amperity-signal serve`` processes (gRPC + gateway) sharing a real Redis,
as two replicas behind one load balancer: the withdrawal reaches one, the late batch the
other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Service, Stack
from tests.support import ALICE_EMAIL, integration_dict, mint_keys

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
