"""datafly.js in headless Chromium whose clock runs 10 minutes ahead, in front of the real service.

A grant's batch is answered 503 with ``Retry-After: 30``; the withdrawal made meanwhile
waits for it at most 20 s, then goes first. The grant's batch,
sent again after it, must not undo it: with ``sentAt`` the gateway counts the event as
received less its age on the page's clock. Taken as stamped (capped at arrival) the grant
counted as newer than the withdrawal and ``/v1/enrich`` answered the profile again.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import Request, Route, async_playwright

from amperity_signal.gateway import GatewaySettings, create_gateway_app
from tests.support import ALICE_EMAIL, OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .chromium import launch
from .conftest import served
from .realservice import real_service
from .test_browser import CHROMIUM, REPO, _require_chromium

pytestmark = pytest.mark.browser

VISITOR = "anon-page-clock-ahead"
FORWARDED = 21 + 10
"""Seconds the page's clock is fast-forwarded in all (``_withdraw_while_a_grant_waits``)."""
PK = {"X-Pipeline-Key": "pk_web"}


async def _attributes(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(
        "/v1/enrich", params={"provider": "amperity", "anonymous_id": VISITOR}, headers=PK
    )
    assert response.status_code == 200, response.text
    attributes: dict[str, Any] = response.json()["attributes"]
    return attributes


def _carries(request: Request, event: str) -> bool:
    body = request.post_data or ""
    return request.url.endswith("/v1/batch") and f'"event":"{event}"' in body


async def test_a_withdrawal_holds_against_a_grant_retried_after_it_on_a_clock_ahead() -> None:
    """Page clock +10 min; the grant's batch goes after the withdrawal: the profile stays hidden."""
    _require_chromium()
    async with (
        real_service(OutageStore(), FakeClock()) as (service, _, service_settings),
    ):
        settings = GatewaySettings.from_settings(service_settings)
        # The page's fake clock jumps ahead (fast_forward) where real time would pass: the
        # gateway's receive time jumps with it, or the withdrawal's consentedAt, stamped
        # before its 20 s wait, would count as 20 s before the grant received just before.
        # It starts behind by all the jumps, as the ledger believes no instant past its
        # own (real) clock.
        behind = [timedelta(seconds=FORWARDED)]
        app = create_gateway_app(
            settings=settings,
            channel_factory=service.in_process_channel,
            static_dir=REPO / "clients" / "browser",
            now=lambda: datetime.now(UTC) - behind[0],
        )
        async with served(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
            identify = {
                "type": "identify",
                "anonymousId": VISITOR,
                "traits": {"email": ALICE_EMAIL},
                "context": {"consent": {"functional": True}},
            }
            assert (await client.post("/v1/i", json=identify, headers=PK)).status_code == 200
            assert await _attributes(client)  # the visitor has a profile, and consented
            async with async_playwright() as playwright:
                browser = await launch(playwright, str(CHROMIUM))
                try:
                    attempts = await _withdraw_while_a_grant_waits(browser, url, behind)
                finally:
                    await browser.close()
            assert await _attributes(client) == {}
    # Stamped again when sent again: the 30 s waited are part of the event's age.
    first, again = (datetime.fromisoformat(json.loads(a)["sentAt"]) for a in attempts)
    assert again - first >= timedelta(seconds=30)


# Each /v1/batch status as the page's own code reads it (before datafly.js continues).
_BATCH_ANSWERS_SEEN = """
window.__batchAnswers = [];
const pageFetch = window.fetch;
window.fetch = (url, init) => pageFetch(url, init).then((response) => {
  if (String(url).includes('/v1/batch')) window.__batchAnswers.push(response.status);
  return response;
});
"""


async def _withdraw_while_a_grant_waits(
    browser: Any, url: str, behind: list[timedelta]
) -> list[str]:
    """The grant's batch refused once, the withdrawal sent, the batch sent again: its bodies.

    ``behind``: how far the gateway's clock is behind the real one, less each jump.
    """

    async def fast_forward(seconds: int) -> None:
        behind[0] -= timedelta(seconds=seconds)  # first: a request may land before it returns
        await page.clock.fast_forward(seconds * 1000)

    context = await browser.new_context()
    await context.add_cookies([{"name": "_dfid", "value": VISITOR, "url": url}])
    page = await context.new_page()
    await page.add_init_script(_BATCH_ANSWERS_SEEN)
    await page.clock.install(time=datetime.now(UTC) + timedelta(minutes=10))
    attempts: list[str] = []

    async def first_attempt_fails(route: Route) -> None:
        if not _carries(route.request, "Granted"):
            await route.continue_()
            return
        attempts.append(route.request.post_data or "")
        if len(attempts) > 1:
            await route.continue_()
            return
        await route.fulfill(status=503, headers={"Retry-After": "30"}, body="{}")

    await page.route("**/v1/batch*", first_attempt_fails)
    await page.goto(f"{url}/demo/?pipelineKey=pk_web")
    await page.wait_for_selector("body[data-state=ready]", timeout=10_000)

    # The grant is done once the page asks for the profile it allows: only then does the
    # withdrawal's 20 s wait start as it is evaluated (it queues behind the grant's send).
    async with (
        page.expect_response(lambda r: r.url.endswith("/v1/consent")) as granted,
        page.expect_request(lambda r: "/v1/enrich" in r.url),
    ):
        await page.evaluate("window.datafly.consent({ functional: true })")
    assert (await granted.value).status == 200
    await page.evaluate("window.datafly.track('Granted'), void window.datafly.flush()")
    # The page has read the 503 (and set its 30 s timer), not only the route answered it:
    # on a busy machine the clock jumps below could otherwise come first.
    await page.wait_for_function("window.__batchAnswers.includes(503)", timeout=10_000)
    # The withdrawal comes a second after the grant's event, on both clocks: by more than a
    # request's time on the wire, which the gateway counts in every instant it corrects
    # (consentedAt and the event's). A real second, not a jump: a gap in the scenario.
    await asyncio.sleep(1)

    # The withdrawal waits for the grant's batch (retried after 30 s) at most 20 s.
    async with page.expect_response(lambda r: r.url.endswith("/v1/consent")) as withdrawn:
        await page.evaluate("window.datafly.consent({ functional: false })")
        await fast_forward(21)
    answer = await withdrawn.value
    assert (answer.status, await answer.json()) == (200, {"success": True, "profileAllowed": False})

    async with page.expect_response(lambda r: _carries(r.request, "Granted")) as retried:
        await fast_forward(10)
    assert (await retried.value).status == 200
    return attempts
