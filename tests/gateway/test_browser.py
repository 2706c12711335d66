"""The demo storefront in headless Chromium against a real uvicorn gateway and fake service."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    async_playwright,
)

from amperity_signal.gateway import create_gateway_app
from amperity_signal.gateway.settings import GatewaySettings
from tests.support import in_ci

from .chromium import CHROMIUM_ARGS, launch
from .conftest import gateway_settings, served
from .fakes import CANNED_ATTRIBUTES, KNOWN_KEY, KNOWN_VISITOR, RunningService, live_record

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if in_ci():
        pytest.fail(f"{CHROMIUM} is missing; CI must install Debian's chromium package.")
    pytest.skip(f"{CHROMIUM} is not installed")


@contextlib.asynccontextmanager
async def _chromium() -> AsyncIterator[Browser]:
    """Headless Chromium for the block, closed after it (a failure or a skip without it)."""
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def _served(service: RunningService, settings: GatewaySettings) -> AsyncIterator[str]:
    """The gateway served by uvicorn on 127.0.0.1:0, the demo from clients/browser."""
    app = create_gateway_app(
        settings=settings, grpc_target=service.target, static_dir=REPO / "clients" / "browser"
    )
    async with served(app, settings) as url:
        yield url


async def _known_visitor_demo(browser: Browser, gateway_url: str) -> Page:
    """The demo page, ready, for the fake service's identified visitor (a new context)."""
    context = await browser.new_context()
    await context.add_cookies([{"name": "_dfid", "value": KNOWN_VISITOR, "url": gateway_url}])
    page = await context.new_page()
    await page.goto(f"{gateway_url}/demo/?pipelineKey={KNOWN_KEY}")
    await page.wait_for_selector("body[data-state=ready]", timeout=10_000)
    return page


@pytest.fixture
async def gateway_url(service: RunningService) -> AsyncIterator[str]:
    """The gateway with the test settings, served for Chromium."""
    async with _served(service, gateway_settings()) as url:
        yield url


async def test_demo_page_personalises_after_identify(
    gateway_url: str, service: RunningService
) -> None:
    """First visit resolves {} via GET /v1/enrich; after identify the hero turns promo."""
    _require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    network: list[tuple[str, str, int]] = []
    said: list[str] = []

    def record(response: Response) -> None:
        network.append((response.request.method, response.url, response.status))

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            page.on("response", record)
            page.on("console", lambda message: said.append(message.text))
            await page.goto(f"{gateway_url}/demo/?pipelineKey={KNOWN_KEY}&utm_source=news")
            await page.wait_for_selector("body[data-state=ready]", timeout=10_000)
            ready: Any = await page.evaluate("window.datafly.onProfileReady()")
            assert ready == {}
            assert await page.evaluate("window.datafly.profile.amperity") == {}
            assert await page.get_attribute("#hero", "data-variant") == "default"
            enrich = [n for n in network if "/v1/enrich?provider=amperity" in n[1]]
            assert enrich
            assert enrich[0][0] == "GET"
            assert enrich[0][2] == 200
            await page.screenshot(path=str(ARTIFACTS / "demo-first-visit.png"), full_page=True)

            await page.click("#view-product")
            await page.click("#add-to-cart")
            await page.click("#identify")
            await page.wait_for_selector("body[data-state=refreshed]", timeout=10_000)
            profile: Any = await page.evaluate("window.datafly.profile.amperity")
            assert profile == CANNED_ATTRIBUTES
            assert await page.get_attribute("#hero", "data-variant") == "promo"
            await page.screenshot(path=str(ARTIFACTS / "demo-identified.png"), full_page=True)
            cookies = await page.context.cookies()
        finally:
            await browser.close()

    assert [text for text in said if text.startswith("datafly")] == []  # success is quiet
    dfid = next(c for c in cookies if c.get("name") == "_dfid")
    assert dfid.get("sameSite") == "Lax"
    events = [d.request.event for d in service.fake.delivered]
    # One batch's events are delivered concurrently, so only the multiset is fixed.
    assert sorted(e.type for e in events) == ["identify", "page", "track", "track"]
    assert {e.anonymous_id for e in events} == {dfid.get("value")}
    (identify,) = (e for e in events if e.type == "identify")
    (page_view,) = (e for e in events if e.type == "page")
    assert identify.user_id == "user-123"
    assert identify.traits["email"] == "alice@example.com"
    assert page_view.context.page.path == "/demo/"
    assert page_view.context.campaign.source == "news"
    assert page_view.context.user_agent
    batches = [n for n in network if n[1].endswith("/v1/batch")]
    assert batches
    assert all(status == 200 for _, _, status in batches)


async def test_withdrawing_consent_clears_the_profile_at_once_and_stops_lookups(
    gateway_url: str, service: RunningService
) -> None:
    """The page withdraws consent: profile {} at once, the gateway told, no /v1/enrich."""
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            page = await _known_visitor_demo(browser, gateway_url)
            assert await page.evaluate("window.datafly.profile.amperity") == CANNED_ATTRIBUTES
            assert await page.get_attribute("#hero", "data-variant") == "promo"
            lookups: list[str] = []
            page.on("request", lambda r: lookups.append(r.url) if "/v1/enrich" in r.url else None)

            async with page.expect_response(lambda r: r.url.endswith("/v1/consent")) as told:
                cleared = await page.evaluate(
                    "window.datafly.consent({ functional: false }), window.datafly.profile.amperity"
                )
                assert cleared == {}  # before the gateway has answered
            assert (await told.value).status == 200
            assert await page.get_attribute("#hero", "data-variant") == "default"
            assert await page.evaluate("window.datafly.refreshProfile()") == {}
            assert lookups == []
            (request,) = service.fake.consent_requests
            assert request.anonymous_id == KNOWN_VISITOR
            assert not request.consent.functional

            # Another tab, before any event: the gateway already answers as for denied.
            other = await page.context.new_page()
            await other.goto(f"{gateway_url}/demo/?pipelineKey={KNOWN_KEY}")
            await other.wait_for_selector("body[data-state=ready]", timeout=10_000)
            assert await other.evaluate("window.datafly.profile.amperity") == {}

            restored = await page.evaluate(
                """new Promise((resolve) => {
                  const stop = window.datafly.onProfileChange((p) => { stop(); resolve(p); });
                  window.datafly.consent({ functional: true });
                })"""
            )
            assert restored == CANNED_ATTRIBUTES
            assert await page.get_attribute("#hero", "data-variant") == "promo"
        finally:
            await browser.close()


async def test_a_gateway_that_never_answers_enrich_leaves_the_page_its_default(
    gateway_url: str,
) -> None:
    """/v1/enrich hangs: the lookup is given up at enrich.timeoutMs, onProfileReady is {}.

    The demo page (default timeout) also leaves its loading state with the default hero.
    """
    _require_chromium()
    stalled: list[Route] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            page = await browser.new_page()

            def stall(route: Route) -> None:
                stalled.append(route)  # never answered

            await page.route("**/v1/enrich*", stall)
            await page.goto(f"{gateway_url}/demo/?pipelineKey={KNOWN_KEY}")
            ready: Any = await page.evaluate(
                f"""Promise.race([
                  createDatafly().init({{
                    pipelineKey: '{KNOWN_KEY}', enrich: {{ timeoutMs: 300 }},
                  }}).onProfileReady(),
                  new Promise((resolve) => {{ setTimeout(() => resolve('pending'), 20000); }}),
                ])"""
            )
            assert ready == {}
            await page.wait_for_selector("body[data-state=ready]", timeout=20_000)
            assert await page.get_attribute("#hero", "data-variant") == "default"
            assert stalled
        finally:
            await browser.close()


async def test_an_unsafe_order_id_and_a_cut_emoji_lose_no_event_of_their_batch(
    gateway_url: str, service: RunningService
) -> None:
    """Chromium sends a batch with an integer beyond 2^53 and a lone surrogate: all delivered.

    Either value made the whole batch a 400 INVALID_JSON, and datafly.js dropped every event
    of it: here the good event too.
    """
    said: list[str] = []
    async with _chromium() as browser:
        page = await browser.new_page()
        page.on("console", lambda message: said.append(message.text))
        await page.goto(f"{gateway_url}/demo/?pipelineKey={KNOWN_KEY}")
        await page.evaluate(
            f"""(async () => {{
              const datafly = createDatafly().init({{ pipelineKey: '{KNOWN_KEY}' }});
              datafly.track('Good');
              datafly.track('Order Completed', {{ order_id: 9007199254740995 }});
              datafly.track('Gift Viewed', {{ title: 'Gift \\uD83C' }});
              await datafly.flush();
            }})()"""
        )

    names = ("Good", "Order Completed", "Gift Viewed")
    events = {d.request.event.event: d.request.event for d in service.fake.delivered}
    assert sorted(name for name in events if name in names) == sorted(names)
    assert events["Order Completed"].properties["order_id"] == "9007199254740996"
    assert events["Gift Viewed"].properties["title"] == "Gift \ufffd"
    assert len([text for text in said if text.startswith("datafly: ")]) == 2


async def test_the_demo_page_ignores_an_endpoint_on_another_origin_and_says_so(
    gateway_url: str, service: RunningService
) -> None:
    """?endpoint=https://attacker.example: events and lookups stay on the page's origin.

    The page names the ignored parameter, on the page and in the console; a same-origin
    path (here ``enrichEndpoint=/``) is taken.
    """
    _require_chromium()
    foreign: list[str] = []
    requests: list[str] = []
    warnings: list[str] = []

    async def elsewhere(route: Route) -> None:
        foreign.append(route.request.url)  # answered here: nothing leaves the machine
        await route.fulfill(status=204)

    def record(request: Request) -> None:
        requests.append(request.url)

    def console(message: ConsoleMessage) -> None:
        if message.type == "warning":
            warnings.append(message.text)

    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            context = await browser.new_context()
            await context.route(re.compile(r"^https?://attacker\.example"), elsewhere)
            page = await context.new_page()
            page.on("request", record)
            page.on("console", console)
            await page.goto(
                f"{gateway_url}/demo/?pipelineKey={KNOWN_KEY}"
                "&endpoint=https://attacker.example/collect&enrichEndpoint=/"
            )
            await page.wait_for_selector("body[data-state=ready]", timeout=10_000)
            # The batch carrying the click: the page view may have left alone before it.
            async with page.expect_response(
                lambda r: '"event":"Product Viewed"' in (r.request.post_data or "")
            ) as sent:
                await page.click("#view-product")
            assert (await sent.value).status == 200
            notices = await page.eval_on_selector_all(
                "#notices > p", "ps => ps.map(p => p.textContent)"
            )
            visible = await page.is_visible("#notices > p")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "demo-foreign-endpoint.png"), full_page=True)
        finally:
            await browser.close()

    assert foreign == []
    assert all(url.startswith(f"{gateway_url}/") for url in requests), requests
    assert any("/v1/enrich?provider=amperity" in url for url in requests), requests
    assert sorted(d.request.event.type for d in service.fake.delivered) == ["page", "track"]
    expected = (
        "Ignored the endpoint parameter (https://attacker.example/collect): it is not this "
        f"page's origin ({gateway_url}), and the demo sends events and reads profiles only "
        "there. Give a path, such as endpoint=/, or leave it out."
    )
    assert notices == [expected]
    assert visible
    assert warnings == [expected]


async def test_the_console_tells_a_page_with_an_unknown_key_what_to_check_once(
    gateway_url: str,
) -> None:
    """A key no integration has: one warning for the lookups, one for the events, no key.

    Both kinds fail again after identify() and refreshProfile(): nothing more is said.
    datafly.js said nothing at all, so the page just never personalised.
    """
    _require_chromium()
    key = "pk_nobody_has_f1"
    said: list[str] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            page = await browser.new_page()
            page.on("console", lambda message: said.append(message.text))
            # The page view's batch leaves 200 ms after load; its refusal is told then.
            async with page.expect_console_message(
                lambda m: "/v1/batch refused" in m.text, timeout=10_000
            ):
                await page.goto(f"{gateway_url}/demo/?pipelineKey={key}")
                await page.wait_for_selector("body[data-state=ready]", timeout=10_000)
            await page.click("#view-product")
            await page.click("#identify")
            await page.wait_for_selector("body[data-state=refreshed]", timeout=10_000)
        finally:
            await browser.close()

    told = [text for text in said if text.startswith("datafly")]
    assert all(key not in text for text in said), said
    lookup, events = told
    assert lookup.startswith(
        f"datafly: the amperity profile lookup (GET {gateway_url}/v1/enrich) answered 404 "
        "UNKNOWN_PIPELINE_KEY: "
    )
    assert "check pipelineKey in datafly.init" in lookup
    assert events.startswith(
        f"datafly: POST {gateway_url}/v1/batch refused 1 event(s), which are not sent again; "
        "the first: UNKNOWN_PIPELINE_KEY (field pipeline_key): "
    )
    assert all(text.endswith("(Said once per page: later ones are not reported.)") for text in told)


@pytest.mark.parametrize("query", ["", "?pipeline_key=pk_nobody_has_f1"], ids=["none", "unknown"])
async def test_the_demo_page_says_on_the_page_that_the_gateway_knows_no_such_key(
    gateway_url: str, query: str
) -> None:
    """The demo page opened without its pipeline_key (or with a wrong one) says so on the page.

    It showed the default hero, and Identify changed nothing, with the reason only in the
    console: a newcomer who opened /demo/ without the printed query saw a page that did not
    work. The notice names the parameter, not the key.
    """
    _require_chromium()
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            page = await browser.new_page()
            await page.goto(f"{gateway_url}/demo/{query}")
            await page.wait_for_selector("body[data-state=ready]", timeout=10_000)
            await page.wait_for_selector("#notices > p", timeout=10_000)
            await page.click("#identify")  # fails again: said once
            await page.wait_for_selector("body[data-state=refreshed]", timeout=10_000)
            notices = await page.eval_on_selector_all(
                "#notices > p", "ps => ps.map(p => p.textContent)"
            )
            visible = await page.is_visible("#notices > p")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"demo-unknown-key{'-given' if query else ''}.png"
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()

    (notice,) = notices
    assert notice.startswith(
        "The gateway knows no integration with this page's pipeline key (the pipeline_key "
        "parameter of its address"
    ), notice
    assert "amperity-signal demo" in notice and "?pipeline_key=pk_demo_storefront" in notice
    assert "pk_nobody_has_f1" not in notice
    assert visible


async def test_a_lone_provider_string_is_looked_up_and_named_in_the_console(
    gateway_url: str,
) -> None:
    """enrich.providers: 'amperity' in Chromium: a warning naming the fix, and the profile.

    It meant no lookup at all, silently: onProfileReady() resolved {} for a known visitor.
    """
    _require_chromium()
    warnings: list[str] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright, str(CHROMIUM))
        try:
            page = await _known_visitor_demo(browser, gateway_url)
            page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
            ready: Any = await page.evaluate(
                f"""createDatafly().init({{
                  pipelineKey: '{KNOWN_KEY}', enrich: {{ providers: 'amperity' }},
                }}).onProfileReady()"""
            )
        finally:
            await browser.close()

    assert ready == CANNED_ATTRIBUTES
    assert warnings == [
        'datafly.init: enrich.providers must be an array like ["amperity"], got a string: '
        'looking up ["amperity"].'
    ]


async def test_live_page_marks_where_a_slow_page_missed_deliveries(service: RunningService) -> None:
    """A record carrying ``missed_before`` gets a notice between it and the older records."""
    _require_chromium()
    behind = live_record("msg-live-2")
    behind.missed_before = 3
    service.fake.live_records.extend([live_record("msg-live-1"), behind])
    token = "admin-5b2e-live-page"
    async with (
        _served(service, gateway_settings(admin_token=token)) as url,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/live?token={token}")
            await page.wait_for_selector("#deliveries > li.gap", timeout=10_000)
            shown: Any = await page.eval_on_selector_all(
                "#deliveries > li",
                "items => items.map(i => [i.className, i.dataset.messageId || i.textContent])",
            )
        finally:
            await browser.close()
    assert [kind for kind, _ in shown] == ["delivery", "gap", "delivery"]
    assert [shown[0][1], shown[2][1]] == ["msg-live-2", "msg-live-1"]
    assert shown[1][1].startswith("3 deliveries not shown: this page read more slowly")
