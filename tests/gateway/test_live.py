"""Live Events on the gateway: admin-token gate, session cookie, redacted SSE records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from amperity_signal.amperity import endpoints
from amperity_signal.config import settings_from_dict
from amperity_signal.errors import ConfigError
from amperity_signal.gateway import GatewaySettings, create_gateway_app
from amperity_signal.gateway.live import SESSION_COOKIE
from amperity_signal.limits import INTEGRATION_ID_RULE
from amperity_signal.redaction import REDACTED, SENSITIVE_KEYS, scrub
from tests.support import base64_echoes, integration_dict, mint_keys, reveals_encoded
from tests.unit.cli_support import integration

from .conftest import FIXED_NOW, FakeClock, GatewayFactory, gateway_settings, served
from .fakes import LEAKED_SECRET, RunningService, live_record

ADMIN_TOKEN = "admin-7f3c9a1e-live"


def _sse_records(text: str) -> list[tuple[str, Any]]:
    """(event name, parsed data) of each server-sent event in a finished stream."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.fixture
def admin_gateway(make_gateway: GatewayFactory) -> httpx.AsyncClient:
    """A gateway with an admin token and the fake's secret configured for redaction."""
    return make_gateway(admin_token=ADMIN_TOKEN, redact=(LEAKED_SECRET, ADMIN_TOKEN))


@pytest.mark.parametrize("path", ["/live", "/live/stream", "/live/live.js"])
async def test_live_routes_without_the_token_are_401_json(
    admin_gateway: httpx.AsyncClient, path: str
) -> None:
    """No token, no page: 401 JSON with a Bearer challenge on every Live Events route."""
    response = await admin_gateway.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "ADMIN_TOKEN_REQUIRED"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_wrong_token_is_401_and_sets_no_cookie(admin_gateway: httpx.AsyncClient) -> None:
    """A wrong token, by header or query, is refused without a session cookie."""
    by_query = await admin_gateway.get("/live?token=nope")
    by_header = await admin_gateway.get("/live", headers={"Authorization": "Bearer nope"})
    for response in (by_query, by_header):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "INVALID_ADMIN_TOKEN"
        assert "set-cookie" not in response.headers


async def test_wrong_tokens_past_a_few_are_429_until_the_delay_even_for_the_right_one(
    admin_gateway: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Five wrong tokens from one client are 401; then 429 with Retry-After, the token unread.

    Guesses were never throttled: a client could try admin tokens as fast as it could send.
    The right token is refused too while the client waits, so a 429 tells no guess right;
    a session cookie already set keeps working.
    """
    assert (await admin_gateway.get(f"/live?token={ADMIN_TOKEN}")).status_code == 303
    statuses = [(await admin_gateway.get(f"/live?token=guess{n}")).status_code for n in range(5)]
    assert statuses == [401] * 5
    for sent in ("guess5", ADMIN_TOKEN):
        refused = await admin_gateway.get("/live", headers={"Authorization": f"Bearer {sent}"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert refused.headers["retry-after"] == "12"
    assert (await admin_gateway.get("/live")).status_code == 200  # the client's session cookie
    clock.now += 12
    assert (await admin_gateway.get(f"/live?token={ADMIN_TOKEN}")).status_code == 303


async def test_token_query_sets_an_httponly_session_and_redirects_without_it(
    admin_gateway: httpx.AsyncClient,
) -> None:
    """/live?token= answers 303 to /live (other parameters kept) with an HttpOnly cookie."""
    response = await admin_gateway.get(f"/live?token={ADMIN_TOKEN}&integration=web")
    assert response.status_code == 303
    assert response.headers["location"] == "/live?integration=web"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/live" in cookie
    assert ADMIN_TOKEN not in cookie
    page = await admin_gateway.get("/live")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'data-tab="vendor"' in page.text
    script = await admin_gateway.get("/live/live.js")
    assert script.status_code == 200
    assert "EventSource" in script.text


async def test_session_cookie_stops_working_after_eight_hours(service: RunningService) -> None:
    """The server refuses a session cookie 8 hours after it was set, not only the browser."""
    now = [FIXED_NOW]
    app = create_gateway_app(
        settings=gateway_settings(admin_token=ADMIN_TOKEN),
        grpc_target=service.target,
        now=lambda: now[0],
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client,
    ):
        opened = await client.get("/live", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        # The cookie as a browser that ignored Max-Age (or a copy of it) would send it.
        cookie = {"Cookie": f"{SESSION_COOKIE}={opened.cookies[SESSION_COOKIE]}"}
        client.cookies.clear()
        now[0] = FIXED_NOW + timedelta(hours=7, minutes=59)
        assert (await client.get("/live/live.js", headers=cookie)).status_code == 200
        now[0] = FIXED_NOW + timedelta(hours=8)
        expired = await client.get("/live/live.js", headers=cookie)
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "ADMIN_TOKEN_REQUIRED"


async def test_bearer_header_opens_the_page_and_sets_the_session(
    admin_gateway: httpx.AsyncClient,
) -> None:
    """Authorization: Bearer serves the page directly and sets the cookie for its stream."""
    response = await admin_gateway.get("/live", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    assert SESSION_COOKIE in response.cookies


@pytest.mark.parametrize(
    ("order", "status"), [(("valid", "stale"), 200), (("stale", "valid"), 401)]
)
async def test_of_two_session_cookies_the_first_is_read(
    admin_gateway: httpx.AsyncClient, order: tuple[str, str], status: int
) -> None:
    """First-wins, as the API routes read ``_dfid``: the browser lists /live's cookie first."""
    opened = await admin_gateway.get("/live", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    values = {"valid": opened.cookies[SESSION_COOKIE], "stale": "1.stale"}
    admin_gateway.cookies.clear()
    header = "; ".join(f"{SESSION_COOKIE}={values[which]}" for which in order)
    response = await admin_gateway.get("/live/live.js", headers={"Cookie": header})
    assert response.status_code == status


async def test_live_events_are_off_without_an_admin_token(gateway: httpx.AsyncClient) -> None:
    """With no admin token configured, /live is 404 LIVE_EVENTS_DISABLED, even for guesses."""
    response = await gateway.get("/live?token=anything")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "LIVE_EVENTS_DISABLED"


async def test_stream_sends_records_with_secrets_redacted(
    admin_gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Each WatchDeliveries record becomes a `delivery` event, Authorization and secrets gone."""
    service.fake.live_records.append(live_record())
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get("/live/stream?replay=7&integration=web", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert LEAKED_SECRET not in response.text
    ((name, record),) = _sse_records(response.text)
    assert name == "delivery"
    assert record["message_id"] == "msg-live-1"
    assert record["event"]["event"] == "Product Added"
    assert record["payload"]["type"] == "add_to_cart"
    assert record["payload"]["note"] == f"token {REDACTED} here"
    vendor = record["vendor_request"]
    assert (vendor["method"], vendor["status_code"], vendor["attempts"]) == ("POST", 202, 1)
    assert vendor["headers"] == {"Authorization": f"Bearer {REDACTED}", "Amperity-Tenant": "acme"}
    (request,) = service.fake.watch_requests
    assert (request.integration_id, request.replay) == ("web", 7)


async def test_stream_redacts_a_secret_a_record_carries_base64_encoded(
    admin_gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """A secret echoed base64-encoded into a record leaves no part of itself on the page.

    An upstream's error or a proxy may quote a Basic header (user:secret, encoded).
    """
    record = live_record()
    echoes = base64_echoes(ADMIN_TOKEN) + base64_echoes(LEAKED_SECRET)
    record.payload.update({"echoes": [f"Basic {echo}" for echo in echoes]})
    service.fake.live_records.append(record)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get("/live/stream?replay=7&integration=web", headers=headers)
    ((_, shown),) = _sse_records(response.text)
    assert len(shown["payload"]["echoes"]) == len(echoes)
    for secret in (ADMIN_TOKEN, LEAKED_SECRET):
        assert not reveals_encoded(response.text, secret)


async def test_stream_redacts_the_configured_pipeline_keys(
    make_gateway: GatewayFactory, service: RunningService
) -> None:
    """A pipeline key in a record (a page URL carrying it) is redacted, as Amperity keys are.

    The gateway's redact list held the Amperity keys and the admin token, not the
    pipeline keys the gateway itself accepts.
    """
    key = "pk_live_canary_7Qx2mV9b"
    table = integration_dict("http://sandbox.test", mint_keys(), pipeline_key=key)
    settings = GatewaySettings.from_settings(settings_from_dict({"integrations": [table]}, {}))
    gateway = make_gateway(admin_token=ADMIN_TOKEN, redact=settings.redact)
    record = live_record()
    record.payload.update({"page": f"https://shop.example/?pipeline_key={key}"})
    service.fake.live_records.append(record)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await gateway.get("/live/stream?replay=7&integration=web", headers=headers)
    ((_, shown),) = _sse_records(response.text)
    assert shown["payload"]["page"] == f"https://shop.example/?pipeline_key={REDACTED}"
    assert key not in response.text


async def test_head_of_the_stream_answers_its_headers_without_a_watch(
    admin_gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """HEAD /live/stream: GET's status and headers, and the answer ends; no watch is opened.

    It was served as GET is, watch and all: the answer never ended while the watch lived,
    holding the connection (and a WatchDeliveries stream on the service) until the client
    hung up. Refusals stay GET's.
    """
    service.fake.live_records.append(live_record())
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    head = await admin_gateway.head("/live/stream?replay=7", headers=headers)
    assert service.fake.watch_requests == []
    got = await admin_gateway.get("/live/stream?replay=7", headers=headers)
    assert len(service.fake.watch_requests) == 1
    assert (head.status_code, head.headers) == (got.status_code, got.headers)
    assert head.content == b""
    refused = await admin_gateway.head("/live/stream?replay=x", headers=headers)
    assert refused.status_code == 400
    assert (await admin_gateway.head("/live/stream")).status_code == 401


async def test_stream_passes_on_how_many_records_a_slow_watch_missed(
    admin_gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """``missed_before`` reaches the page as a JSON number, and only where records are missing."""
    behind = live_record("msg-live-2")
    behind.missed_before = 3
    service.fake.live_records.extend([live_record(), behind])
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get("/live/stream", headers=headers)
    records = [record for name, record in _sse_records(response.text) if name == "delivery"]
    assert [r.get("missed_before") for r in records] == [None, 3]


async def test_stream_reports_an_unknown_integration_as_a_failure_event(
    admin_gateway: httpx.AsyncClient,
) -> None:
    """A refused WatchDeliveries ends the stream with a `failure` event, not a 500."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get("/live/stream?integration=nope", headers=headers)
    assert response.status_code == 200
    ((name, error),) = _sse_records(response.text)
    assert name == "failure"
    assert (error["code"], error["field"]) == ("UNKNOWN_INTEGRATION", "integration")


async def test_stream_headers_wait_until_the_service_has_subscribed_the_watch(
    service: RunningService,
) -> None:
    """A page that delivers once its stream's headers arrive sees that delivery's record.

    The fake service takes a moment to subscribe, as a busy one may; the gateway sent the
    headers before the watch existed, and the first record was published unseen.
    """
    service.fake.watching = True
    service.fake.subscribe_delay = 0.3
    settings = gateway_settings(admin_token=ADMIN_TOKEN)
    app = create_gateway_app(settings=settings, grpc_target=service.target)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        served(app, settings) as url,
        httpx.AsyncClient(base_url=url) as client,
        client.stream("GET", "/live/stream", headers=headers) as response,
    ):
        assert response.status_code == 200  # the headers only: nothing of the body read yet
        service.fake.publish(live_record("msg-first"))
        service.fake.end_watches()  # the stream ends once the watch has sent what it got
        body = (await response.aread()).decode()
    records = [record["message_id"] for name, record in _sse_records(body) if name == "delivery"]
    assert records == ["msg-first"]


async def test_stream_that_the_service_never_subscribes_ends_with_a_failure_event(
    service: RunningService,
) -> None:
    """A watch the service does not take within rpc_timeout ends in `failure` (504), no hang."""
    service.fake.subscribe_delay = 30.0
    settings = gateway_settings(admin_token=ADMIN_TOKEN, rpc_timeout=0.2)
    app = create_gateway_app(settings=settings, grpc_target=service.target)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with served(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/live/stream", headers=headers)
    assert response.status_code == 200
    ((name, error),) = _sse_records(response.text)
    assert (name, error["code"]) == ("failure", "DEADLINE_EXCEEDED")


async def test_stream_still_waiting_for_its_watch_ends_when_the_gateway_stops(
    service: RunningService,
) -> None:
    """A stop while the service has not yet subscribed the watch answers `failure` at once."""
    service.fake.subscribe_delay = 30.0
    settings = gateway_settings(admin_token=ADMIN_TOKEN, rpc_timeout=30.0)
    app = create_gateway_app(settings=settings, grpc_target=service.target)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with served(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
        answer = asyncio.create_task(client.get("/live/stream", headers=headers))
        await service.fake.watch_called.wait()  # the gateway's call reached the service
        app.state.end_streams()
        response = await answer
    ((name, error),) = _sse_records(response.text)
    assert (name, error["code"]) == ("failure", "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize("replay", ["-1", "x", "1001", "%C2%B2", "%D9%A3"])
async def test_stream_refuses_a_bad_replay(admin_gateway: httpx.AsyncClient, replay: str) -> None:
    """The replay parameter must be an ASCII whole number from 0 to 1000 (400 JSON, never 500)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get(f"/live/stream?replay={replay}", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "replay"


def test_scrub_redacts_sensitive_keys_and_secret_text_anywhere() -> None:
    """Sensitive header names lose their values; a secret inside any string or key goes."""
    record = {
        "headers": {"authorization": "Bearer x", "Cookie": "a=b", "Accept": "json"},
        "list": [f"pre{LEAKED_SECRET}post", 3],
        LEAKED_SECRET: True,
    }
    assert scrub(record, (LEAKED_SECRET,)) == {
        "headers": {"authorization": "Bearer [REDACTED]", "Cookie": REDACTED, "Accept": "json"},
        "list": [f"pre{REDACTED}post", 3],
        REDACTED: True,
    }


CREDENTIAL_KEYS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api_key",
)
"""The keys whose values are credentials by name, written out (not read from SENSITIVE_KEYS)."""


def test_every_sensitive_key_is_one_the_scrub_test_below_checks() -> None:
    """A key added to SENSITIVE_KEYS is added to CREDENTIAL_KEYS, so its redaction is tested."""
    assert set(CREDENTIAL_KEYS) >= SENSITIVE_KEYS


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
@pytest.mark.parametrize(
    "spell", [str.lower, str.upper, str.title], ids=["lower", "upper", "title"]
)
def test_scrub_redacts_each_credential_key_in_any_case_whatever_it_holds(
    key: str, spell: Callable[[str], str]
) -> None:
    """A credential key's value goes even when it is no configured secret, nested anywhere."""
    value = "sk_live_4f9a0c"  # no scheme to keep, and not among the secrets given
    record = {"request": {"headers": [{spell(key): value, "Accept": "json"}]}}
    scrubbed = scrub(record, (LEAKED_SECRET,))
    assert scrubbed == {"request": {"headers": [{spell(key): REDACTED, "Accept": "json"}]}}
    assert value not in json.dumps(scrubbed)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("Bearer eyJhbGciOi.eyJzdWIi.c2ln", "Bearer [REDACTED]"),
        ("bearer tok", "Bearer [REDACTED]"),
        ("Basic b3BzOnNlY3JldA==", "Basic [REDACTED]"),
        (endpoints.REDACTED_AUTHORIZATION, endpoints.REDACTED_AUTHORIZATION),
        ("pk_live_abc123 trailing", "[REDACTED]"),
        ("eyJhbGciOi.eyJzdWIi.c2ln", "[REDACTED]"),
        (["Bearer x"], "[REDACTED]"),
    ],
)
def test_an_authorization_value_keeps_its_scheme_alone_as_deliver_shows_it(
    value: object, shown: str
) -> None:
    """One form for the header: the scheme, if a known one, then [REDACTED]; nothing else."""
    for key in ("Authorization", "proxy-authorization"):
        assert scrub({key: value}, ()) == {key: shown}


@pytest.mark.parametrize("integration_id", ["web shop", "x" * 65, "-web", "café", "w\x00b"])
async def test_a_stream_filter_no_integration_can_have_is_400_naming_the_rule(
    admin_gateway: httpx.AsyncClient, integration_id: str
) -> None:
    """An integration id the configuration refuses is a bad parameter, told the id rule."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get(
        "/live/stream", params={"integration": integration_id}, headers=headers
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_PARAMETER", "integration")
    assert INTEGRATION_ID_RULE in error["message"]


@pytest.mark.parametrize(
    "integration_id",
    ["web", "acme-web", "b2b_saas", "shop.eu_2", "A" * 64, "A" * 65, "A" * 201, "web shop", "é"],
)
async def test_the_stream_takes_exactly_the_integration_ids_the_configuration_takes(
    admin_gateway: httpx.AsyncClient, integration_id: str
) -> None:
    """One rule for both (limits.INTEGRATION_ID): an id loads iff the stream filters on it."""
    try:
        settings_from_dict({"integrations": [integration(id=integration_id)]}, {})
        loads = True
    except ConfigError:
        loads = False
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await admin_gateway.get(
        "/live/stream", params={"integration": integration_id}, headers=headers
    )
    assert (response.status_code != 400) is loads
