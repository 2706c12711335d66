"""Real processes: the page is shown the personalised result of the context last visited.

sandbox → ``amperity-signal serve`` (gRPC + embedded gateway), with the memory store or a
real redis-server. A visitor known as alice views a shoes page (fetched), a bags page
(fetched), then shoes again: a cache hit, no call to Amperity. The page's
``GET /v1/enrich`` must show shoes' personalised attributes. Before session 23 only a fetch
wrote the profile's latest personalised entry (``perslast``), so the page showed bags.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.e2e.enrich_support import PERSONALISATION
from tests.e2e.stack import Service, Stack
from tests.support import ALICE_EMAIL, ALICE_PROFILE, COLLECTION, integration_dict, mint_keys

pytestmark = pytest.mark.e2e

VISITOR = "anon-last-context"
PIPELINE = {"X-Pipeline-Key": "pk_web"}
# The sandbox's context-dependent attributes (docs/sandbox.md, Profile API):
# RecommendedCategory is the page category, NextBestOffer "<category>-10-off".
ALLOWLIST = "Persona,RecommendedCategory,NextBestOffer"


async def _view(service: Service, category: str) -> None:
    """The page's track event on a category page, through the gateway (Deliver)."""
    event = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": VISITOR,
        "traits": {"email": ALICE_EMAIL},
        "properties": {"category": category},
    }
    async with httpx.AsyncClient(base_url=service.http_url, timeout=15) as client:
        response = await client.post("/v1/t", json=event, headers=PIPELINE)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True, response.text


async def _page_attributes(service: Service) -> dict[str, Any]:
    """What the page is shown: ``GET /v1/enrich`` with the visitor's ``_dfid`` cookie."""
    async with httpx.AsyncClient(
        base_url=service.http_url, timeout=15, cookies={"_dfid": VISITOR}
    ) as client:
        response = await client.get("/v1/enrich", params={"provider": "amperity"}, headers=PIPELINE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["provider"] == "amperity"
    attributes: dict[str, Any] = body["attributes"]
    return attributes


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_page_shows_the_context_last_visited_when_it_was_a_cache_hit(
    stack: Stack, backend: str
) -> None:
    """Shoes (fetched), bags (fetched), shoes (a hit): /v1/enrich shows shoes, not bags."""
    sandbox = await stack.sandbox()
    cache: dict[str, Any] = {"backend": "memory"}
    if backend == "redis":  # a missing redis-server fails under CI=true
        cache = {"backend": "redis", "redis_url": await stack.redis()}
    keys = mint_keys()
    table = integration_dict(sandbox.url, keys, browser_attribute_allowlist=ALLOWLIST)
    table.update(PERSONALISATION)
    service = await stack.service(sandbox, table, keys=keys, cache=cache)

    for category in ("shoes", "bags"):
        await _view(service, category)
    assert (await _page_attributes(service))["RecommendedCategory"] == "bags"  # fetched last
    await _view(service, "shoes")

    # Each Deliver personalises before it answers: the sandbox has seen every call by now.
    profile = await sandbox.requests(path_prefix=f"/prof/profiles/{COLLECTION}/{ALICE_PROFILE}")
    contexts = [parse_qs(r["query"]).get("pageCategory") for r in profile]
    assert contexts == [["shoes"], ["bags"]]  # the second shoes page was a cache hit
    shown = await _page_attributes(service)
    assert shown["RecommendedCategory"] == "shoes", shown
    assert shown["NextBestOffer"] == "shoes-10-off", shown
