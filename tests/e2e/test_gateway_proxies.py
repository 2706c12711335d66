"""``[gateway]`` in the real ``serve`` process: the per-visitor limit behind a proxy.

Behind a load balancer every request arrives from the balancer's address. Unless the
balancer is listed in ``trusted_proxies``, ``X-Forwarded-For`` is ignored (a visitor could
otherwise pick any address and escape the limit); once it is listed, each forwarded
visitor gets their own budget.
"""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

ENRICH = "/v1/enrich?provider=amperity&anonymous_id=anon_proxy"
KEY = {"X-Pipeline-Key": "pk_web"}
ONE_PER_SECOND = {"rate_limit_per_second": 1, "rate_limit_burst": 1}


async def _statuses(url: str, forwarded_for: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return [
            (await client.get(ENRICH, headers={**KEY, "X-Forwarded-For": visitor})).status_code
            for visitor in forwarded_for
        ]


async def test_a_trusted_proxys_visitors_each_get_their_own_limit(stack: Stack) -> None:
    sandbox = await stack.sandbox()
    service = await stack.service(
        sandbox, gateway={**ONE_PER_SECOND, "trusted_proxies": ["127.0.0.0/8"]}
    )
    visitors = ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert await _statuses(service.http_url, visitors) == [200, 429, 200, 200]


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(stack: Stack) -> None:
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, gateway=ONE_PER_SECOND)
    visitors = ["203.0.113.1", "203.0.113.2"]
    assert await _statuses(service.http_url, visitors) == [200, 429]
