"""``sentAt``: a page's instants put on the gateway's clock (Segment's clock-skew correction).

An event's time is ``received - (sentAt - timestamp)``: its age on the page's own clock,
anchored on the gateway's, so a page clock minutes ahead or behind cannot make a grant
sent before a withdrawal (and delivered after it) count as newer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from amperity_signal.gateway.convert import PageClock, page_clock, sent_at_from_json
from amperity_signal.gateway.errors import GatewayError
from tests.support import ALICE_EMAIL, OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .conftest import FIXED_NOW
from .fakes import KNOWN_KEY, RunningService
from .realservice import Stack, real_stack

KEY = {"X-Pipeline-Key": KNOWN_KEY}
NANOS = 1_000_000_000
# The gateway fixture receives at FIXED_NOW; the page's clock runs 10 minutes ahead.
AHEAD = timedelta(minutes=10)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * NANOS + moment.microsecond * 1000


def _at(stamp: Any) -> datetime:
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / NANOS, UTC)


def test_an_events_age_on_the_page_clock_is_taken_from_the_receive_time() -> None:
    """Sent 10 minutes ahead, stamped 5.25 s before it was sent: received less 5.25 s."""
    received = _ns(FIXED_NOW)
    clock = PageClock(sent=received + 600 * NANOS, received=received)
    stamped = received + 600 * NANOS - 5_250_000_000
    assert clock.corrected(*divmod(stamped, NANOS)) == divmod(received - 5_250_000_000, NANOS)


def test_a_page_clock_behind_is_corrected_alike_to_the_nanosecond() -> None:
    """An hour behind, stamped 1 ns before sending: received less 1 ns."""
    received = _ns(FIXED_NOW)
    clock = PageClock(sent=received - 3600 * NANOS, received=received)
    assert clock.corrected(*divmod(clock.sent - 1, NANOS)) == divmod(received - 1, NANOS)


def test_an_instant_after_sent_at_counts_as_received_never_later() -> None:
    """A negative age (no one clock gives it) is 0: the receive time, not the future."""
    received = _ns(FIXED_NOW)
    clock = PageClock(sent=received, received=received)
    assert clock.corrected(*divmod(received + 3600 * NANOS, NANOS)) == divmod(received, NANOS)


def test_a_huge_age_is_kept_for_the_service_to_judge() -> None:
    """Ten years old on the page's clock: ten years before the receive time, not capped."""
    received = _ns(FIXED_NOW)
    clock = PageClock(sent=received, received=received)
    decade = 3653 * 86_400 * NANOS
    assert clock.corrected(*divmod(received - decade, NANOS)) == divmod(received - decade, NANOS)


def test_sent_at_is_read_as_a_timestamp_by_either_name() -> None:
    """Read as ``sentAt`` or ``sent_at``, RFC 3339 to the nanosecond; absent or null: None."""
    assert sent_at_from_json({"sentAt": "2025-01-31T12:00:00.000000001Z"}, "X") == (
        _ns(FIXED_NOW) + 1
    )
    assert sent_at_from_json({"sent_at": "2025-01-31T13:00:00+01:00"}, "X") == _ns(FIXED_NOW)
    assert sent_at_from_json({"sentAt": None}, "X") is None
    assert sent_at_from_json({}, "X") is None
    assert sent_at_from_json([], "X") is None
    assert page_clock(None, FIXED_NOW) is None
    assert page_clock(5, FIXED_NOW) == PageClock(5, _ns(FIXED_NOW))


@pytest.mark.parametrize(
    ("body", "field"), [({"sentAt": 1}, "sentAt"), ({"sent_at": "x"}, "sent_at")]
)
def test_a_malformed_sent_at_is_refused_naming_it(body: dict[str, Any], field: str) -> None:
    """In the words of a bad timestamp, with the code the route gives."""
    with pytest.raises(GatewayError) as caught:
        sent_at_from_json(body, "INVALID_BATCH")
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        400,
        "INVALID_BATCH",
        field,
    )
    assert caught.value.message.startswith(f"{field}: ")


async def test_a_single_event_with_sent_at_counts_as_received_less_its_age(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """/v1/t: stamped 30 s before it was sent by a clock 10 min ahead → received less 30 s."""
    page_now = FIXED_NOW + AHEAD
    body = {
        "anonymousId": "a",
        "timestamp": _iso(page_now - timedelta(seconds=30)),
        "sentAt": _iso(page_now),
    }
    response = await gateway.post("/v1/t", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    event = service.fake.delivered[-1].request.event
    assert _at(event.timestamp) == FIXED_NOW - timedelta(seconds=30)


async def test_a_batch_with_sent_at_puts_each_event_on_the_gateways_clock(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Each event by its own age; one without a timestamp, or stamped after sentAt, is now."""
    page_now = FIXED_NOW - timedelta(hours=2)  # a clock behind is corrected alike
    ages = {"m-old": 90.5, "m-new": 0.0, "m-after": -40.0}
    batch: list[dict[str, Any]] = [
        {"messageId": m, "anonymousId": "a", "timestamp": _iso(page_now - timedelta(seconds=s))}
        for m, s in ages.items()
    ]
    batch.append({"messageId": "m-none", "anonymousId": "a"})
    response = await gateway.post(
        "/v1/batch", json={"batch": batch, "sent_at": _iso(page_now)}, headers=KEY
    )
    assert response.json()["success"] is True, response.text
    times = {
        d.request.event.message_id: _at(d.request.event.timestamp) for d in service.fake.delivered
    }
    assert times == {
        "m-old": FIXED_NOW - timedelta(seconds=90.5),
        "m-new": FIXED_NOW,
        "m-after": FIXED_NOW,
        "m-none": FIXED_NOW,
    }


@pytest.mark.parametrize(
    ("route", "body", "refused"),
    [
        ("/v1/t", {"anonymousId": "a", "sentAt": "2025-01-31"}, ("INVALID_EVENT", "sentAt")),
        ("/v1/p", {"anonymousId": "a", "sent_at": 17e11}, ("INVALID_EVENT", "sent_at")),
        (
            "/v1/batch",
            {"batch": [{"anonymousId": "a"}], "sentAt": "soon"},
            ("INVALID_BATCH", "sentAt"),
        ),
        (
            "/v1/consent",
            {"anonymousId": "a", "consent": {}, "sentAt": "2025-02-30T00:00:00Z"},
            ("INVALID_CONSENT", "sentAt"),
        ),
    ],
)
async def test_a_malformed_sent_at_is_a_400_naming_it_and_nothing_is_sent_on(
    gateway: httpx.AsyncClient,
    service: RunningService,
    route: str,
    body: dict[str, Any],
    refused: tuple[str, str],
) -> None:
    """The whole request is refused: no event delivered, no consent recorded."""
    response = await gateway.post(route, json=body, headers=KEY)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == refused
    assert "RFC 3339" in error["message"]
    assert service.fake.delivered == []
    assert service.fake.consent_requests == []


async def test_consented_at_with_sent_at_is_put_on_the_gateways_clock(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """/v1/consent: a choice 2 s before sending by a clock 10 min ahead → received less 2 s."""
    page_now = FIXED_NOW + AHEAD
    body = {
        "anonymousId": "v",
        "consent": {"functional": False},
        "consentedAt": _iso(page_now - timedelta(seconds=2)),
        "sentAt": _iso(page_now),
    }
    response = await gateway.post("/v1/consent", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    (request,) = service.fake.consent_requests
    assert _at(request.consented_at) == FIXED_NOW - timedelta(seconds=2)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """The real service (browser_consent=functional) behind the gateway, on the real clock."""
    async with real_stack(OutageStore(), FakeClock()) as running:
        yield running


async def _enrich(client: httpx.AsyncClient, visitor: str) -> dict[str, Any]:
    response = await client.get(
        "/v1/enrich",
        params={"provider": "amperity", "anonymous_id": visitor},
        headers={"X-Pipeline-Key": "pk_web"},
    )
    assert response.status_code == 200, response.text
    attributes: dict[str, Any] = response.json()["attributes"]
    return attributes


async def test_a_grant_retried_after_a_withdrawal_does_not_undo_it_on_a_clock_ahead(
    stack: Stack,
) -> None:
    """A grant retried after a withdrawal, from a page clock 10 min ahead: the withdrawal holds.

    The granting event, stamped before the withdrawal, is retried after it with a new
    sentAt: it counts as before the withdrawal. Taken as stamped (capped at arrival) it
    counted as newer and the profile came back.
    """
    client, visitor = stack.client, "anon-clock-ahead"
    pk = {"X-Pipeline-Key": "pk_web"}
    granted = {"functional": True}
    identify = {
        "type": "identify",
        "anonymousId": visitor,
        "traits": {"email": ALICE_EMAIL},
        "context": {"consent": granted},
    }
    assert (await client.post("/v1/i", json=identify, headers=pk)).status_code == 200
    assert await _enrich(client, visitor)
    offset = AHEAD
    stamped = datetime.now(UTC) + offset  # the grant's event, on the page's clock

    withdrawn = await client.post(
        "/v1/consent",
        json={"anonymousId": visitor, "consent": {"functional": False}},
        headers=pk,
    )
    assert withdrawn.json() == {"success": True, "profileAllowed": False}
    assert await _enrich(client, visitor) == {}

    retried = {
        "batch": [
            {
                "type": "track",
                "anonymousId": visitor,
                "event": "Viewed",
                "timestamp": _iso(stamped),
                "context": {"consent": granted},
            }
        ],
        "sentAt": _iso(datetime.now(UTC) + offset + timedelta(seconds=25)),  # after a backoff
    }
    response = await client.post("/v1/batch", json=retried, headers=pk)
    assert response.json()["success"] is True, response.text
    assert await _enrich(client, visitor) == {}


async def test_consented_at_from_a_clock_ahead_is_kept_when_sent_at_says_so(stack: Stack) -> None:
    """10 min ahead is past the service's 5-minute bound; with sentAt it is now, so kept."""
    page_now = datetime.now(UTC) + AHEAD
    response = await stack.client.post(
        "/v1/consent",
        json={
            "anonymousId": "anon-consent-ahead",
            "consent": {"functional": True},
            "consentedAt": _iso(page_now - timedelta(seconds=1)),
            "sentAt": _iso(page_now),
        },
        headers={"X-Pipeline-Key": "pk_web"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "profileAllowed": True}
