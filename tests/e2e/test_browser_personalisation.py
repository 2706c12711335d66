"""Issue 6 acceptance: the demo page in headless Chromium against the real processes.

sandbox → ``amperity-signal serve`` (gRPC service + embedded gateway) → Chromium, with the
sandbox's alice as the visitor who identifies. Screenshots land in ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Response, Route, async_playwright

from tests.e2e.stack import Sandbox, Service, Stack, free_port, require_binary
from tests.gateway.chromium import launch
from tests.support import ALICE_PROFILE, COLLECTION

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PIPELINE_KEY = "pk_web"
ALLOWLIST = ("Persona", "LifetimeTier", "NextBestOffer")
# alice's attributes that the allowlist keeps from the page, names and values.
FORBIDDEN = ("ChurnRisk", "FavoriteBrand", "Acme Outdoor", "LifetimeOrderValue", "amperity_id")
SERIALISE_DATAFLY = (
    "JSON.stringify(window.datafly, (k, v) => typeof v === 'function' ? String(v) : v)"
)


async def _alice_allowlisted(sandbox: Sandbox, service: Service) -> dict[str, Any]:
    """The profile of alice as the sandbox holds it now, cut to the allowlist."""
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
        response = await client.get(
            f"/prof/profiles/{COLLECTION}/{ALICE_PROFILE}",
            headers={
                "Amperity-Tenant": "acme",
                "Authorization": f"Bearer {service.keys.profile}",
            },
        )
    response.raise_for_status()
    attributes: dict[str, Any] = response.json()["attributes"]
    return {name: attributes[name] for name in ALLOWLIST if name in attributes}


async def _capture_batches(route: Route, bodies: list[str]) -> None:
    """Pass a /v1/batch call through unchanged, keeping its response body.

    The client sends batches with ``keepalive``; Chromium hands such responses to the
    browser process, where playwright's ``response.body()`` never resolves.
    """
    response = await route.fetch()
    bodies.append(await response.text())
    await route.fulfill(response=response)


async def _page_surface(page: Page, responses: list[Response], batch_bodies: list[str]) -> str:
    """Everything the page could see: URLs, headers and bodies of responses, globals."""
    parts: list[str] = [*batch_bodies]
    for response in responses:
        parts.append(response.url)
        parts.append(json.dumps(await response.all_headers()))
        if response.url.endswith("/v1/batch"):
            continue  # captured by _capture_batches
        with contextlib.suppress(PlaywrightError):  # redirects keep no body
            parts.append((await response.body()).decode("utf-8", "replace"))
    parts.append(await page.evaluate(SERIALISE_DATAFLY))
    parts.append(await page.evaluate("document.cookie"))
    parts.append(await page.evaluate("JSON.stringify(Object.entries(localStorage))"))
    parts.append(await page.content())
    return "\n".join(parts)


async def test_demo_page_personalises_from_the_real_stack_and_never_sees_a_token(
    stack: Stack,
) -> None:
    """First visit: {} from GET /v1/enrich; after identify(alice): her allowlisted attributes."""
    chromium = require_binary("chromium")
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    ARTIFACTS.mkdir(exist_ok=True)
    responses: list[Response] = []
    console: list[str] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright, chromium)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            # playwright wraps handlers in attributes, which a builtin method cannot carry.
            page.on("response", lambda response: responses.append(response))  # noqa: PLW0108
            page.on("console", lambda message: console.append(message.text))
            page.on("pageerror", lambda error: console.append(str(error)))
            batch_bodies: list[str] = []
            await page.route("**/v1/batch", lambda route: _capture_batches(route, batch_bodies))
            # The demo command prints the snake_case parameter; the page must accept it.
            await page.goto(f"{service.http_url}/demo/?pipeline_key={PIPELINE_KEY}")
            await page.wait_for_selector("body[data-state=ready]", timeout=15_000)
            assert await page.evaluate("window.datafly.onProfileReady()") == {}
            assert await page.evaluate("window.datafly.profile.amperity") == {}
            assert await page.get_attribute("#hero", "data-variant") == "default"
            first = [r for r in responses if "/v1/enrich?provider=amperity" in r.url]
            assert [(r.request.method, r.status) for r in first] == [("GET", 200)]
            assert await first[0].json() == {"provider": "amperity", "attributes": {}}
            await page.screenshot(path=str(ARTIFACTS / "e2e-first-visit.png"), full_page=True)

            await page.click("#view-product")
            await page.click("#add-to-cart")
            await page.click("#identify")
            await page.wait_for_selector("body[data-state=refreshed]", timeout=15_000)
            profile: dict[str, Any] = await page.evaluate("window.datafly.profile.amperity")
            assert await page.get_attribute("#hero", "data-variant") == "promo"
            await page.screenshot(path=str(ARTIFACTS / "e2e-identified.png"), full_page=True)
            surface = await _page_surface(page, responses, batch_bodies)
            cookies = json.dumps(await context.cookies())
        finally:
            await browser.close()

    assert profile["Persona"] == "Value Hunter"
    assert profile["LifetimeTier"] == "Gold"
    assert profile == await _alice_allowlisted(sandbox, service)
    enrich = [r for r in responses if "/v1/enrich?provider=amperity" in r.url]
    assert [r.status for r in enrich] == [200, 200]
    batches = [r for r in responses if r.url.endswith("/v1/batch")]
    assert batches
    assert all(r.status == 200 for r in batches)
    assert all(json.loads(body)["success"] is True for body in batch_bodies)
    seen = "\n".join([surface, cookies, *console])
    for token in (service.keys.ingest, service.keys.profile):
        assert token not in seen
    for forbidden in FORBIDDEN:
        assert forbidden not in seen, forbidden
    events = await sandbox.events()
    assert {e["body"]["type"] for e in events} >= {"pageview", "view_item", "add_to_cart"}


async def _other_origin_page() -> tuple[asyncio.Server, str]:
    """A one-page HTTP server on another port: a second origin."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"<!doctype html><title>another origin</title><p>elsewhere</p>"
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


FETCH = """async ([url, headers]) => {
  try {
    const response = await fetch(url, {credentials: 'include', headers});
    return {read: true, status: response.status, body: await response.text()};
  } catch (error) {
    return {read: false, error: String(error)};
  }
}"""


async def test_a_page_outside_allowed_origins_cannot_read_the_gateway(stack: Stack) -> None:
    """CORS: another origin's fetch fails in the page; an allowed origin's succeeds."""
    chromium = require_binary("chromium")
    sandbox = await stack.sandbox()
    port = free_port()
    allowed = f"http://localhost:{port}"
    service = await stack.service(
        sandbox, server={"http_address": f"127.0.0.1:{port}"}, allowed_origins=[allowed]
    )
    enrich = f"{service.http_url}/v1/enrich?provider=amperity&anonymous_id=anon_alice_01"
    other, other_origin = await _other_origin_page()
    console: list[str] = []
    try:
        async with async_playwright() as playwright:
            browser = await launch(playwright, chromium)
            try:
                page = await browser.new_page()
                page.on("console", lambda message: console.append(message.text))
                await page.goto(f"{other_origin}/")
                simple = await page.evaluate(FETCH, [f"{enrich}&pipeline_key={PIPELINE_KEY}", {}])
                preflighted = await page.evaluate(FETCH, [enrich, {"X-Pipeline-Key": PIPELINE_KEY}])
                await page.goto(f"{allowed}/demo/?pipeline_key={PIPELINE_KEY}")
                permitted = await page.evaluate(FETCH, [enrich, {"X-Pipeline-Key": PIPELINE_KEY}])
            finally:
                await browser.close()
    finally:
        other.close()
        await other.wait_closed()

    for refused in (simple, preflighted):
        assert refused == {"read": False, "error": "TypeError: Failed to fetch"}
    blocked = [m for m in console if "blocked by CORS policy" in m]
    assert len(blocked) == 2, console
    assert all(other_origin in m for m in blocked)
    assert permitted["read"] is True
    assert permitted["status"] == 200
    assert json.loads(permitted["body"])["provider"] == "amperity"
