"""record_consent: a consent state kept without an event, in the async and the sync client."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from amperity_signal.limits import MAX_ANONYMOUS_ID
from amperity_signal_client import (
    AmperityClient,
    AsyncAmperityClient,
    InvalidArgument,
    NotFound,
    event_from_json,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.support import ALICE_EMAIL

from .conftest import ClientFactory, RealServiceFactory
from .fakes import RunningService, unavailable


def visitor() -> str:
    """A fresh anonymous id, so no test sees another's consent."""
    return f"anon-consent-{uuid.uuid4()}"


def identify(anonymous_id: str) -> pb.Event:
    """An identify event that resolves ``anonymous_id`` to the sandbox's Alice."""
    return event_from_json(
        {"type": "identify", "anonymousId": anonymous_id, "traits": {"email": ALICE_EMAIL}}
    )


async def test_record_consent_tells_whether_the_page_may_see_the_profile_now(
    real_service: RealServiceFactory,
) -> None:
    """Under browser_consent=functional, granting shows the profile and withdrawing hides it."""
    target = await real_service(browser_consent="functional")
    anonymous_id = visitor()
    async with AsyncAmperityClient(target, pipeline_key="pk_web") as client:
        await client.enrich(identify(anonymous_id))

        granted = await client.record_consent(anonymous_id, {"functional": True})
        shown = await client.browser_profile(anonymous_id)
        withdrawn = await client.record_consent(
            anonymous_id, {"functional": False, "analytics": True}
        )
        hidden = await client.browser_profile(anonymous_id)

    assert granted is True
    assert dict(shown.attributes) == {"Persona": "Value Hunter", "LifetimeTier": "Gold"}
    assert withdrawn is False
    assert dict(hidden.attributes) == {}


async def test_the_sync_client_records_consent_as_the_async_one_does(
    real_service: RealServiceFactory,
) -> None:
    """The blocking record_consent keeps the state too; a CMP category can be the condition."""
    target = await real_service(browser_consent="categories.C0003")
    anonymous_id = visitor()
    client = AmperityClient(target, integration_id="web")
    with closing(client):
        await asyncio.to_thread(client.enrich, identify(anonymous_id))
        granted = await asyncio.to_thread(
            client.record_consent, anonymous_id, {"categories": {"C0003": True}}
        )
        shown = await asyncio.to_thread(client.browser_profile, anonymous_id)
        withdrawn = await asyncio.to_thread(
            client.record_consent, anonymous_id, pb.Consent(categories={"C0003": False})
        )
        hidden = await asyncio.to_thread(client.browser_profile, anonymous_id)

    assert (granted, withdrawn) == (True, False)
    assert dict(shown.attributes)["Persona"] == "Value Hunter"
    assert dict(hidden.attributes) == {}


async def test_what_the_service_refuses_raises_its_readable_error(
    real_service: RealServiceFactory,
) -> None:
    """An over-long anonymous_id is InvalidArgument naming it; an unknown key is NotFound."""
    target = await real_service(browser_consent="functional")
    async with (
        AsyncAmperityClient(target, pipeline_key="pk_web") as client,
        AsyncAmperityClient(target, pipeline_key="pk_nobody") as stranger,
    ):
        with pytest.raises(InvalidArgument) as too_long:
            await client.record_consent("a" * (MAX_ANONYMOUS_ID + 1), {"functional": True})
        with pytest.raises(NotFound):
            await stranger.record_consent(visitor(), {"functional": True})

    assert too_long.value.reason == "INVALID_CONSENT"
    assert [v.field for v in too_long.value.field_violations] == ["anonymous_id"]


async def test_a_state_older_than_the_kept_withdrawal_is_ignored_and_answered_for_it(
    real_service: RealServiceFactory,
) -> None:
    """A grant consented an hour before a kept withdrawal is False; the profile stays hidden."""
    target = await real_service(browser_consent="functional")
    anonymous_id = visitor()
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    async with AsyncAmperityClient(target, pipeline_key="pk_web") as client:
        await client.enrich(identify(anonymous_id))
        withdrawn = await client.record_consent(anonymous_id, {"functional": False})
        late_grant = await client.record_consent(
            anonymous_id, {"functional": True}, consented_at=an_hour_ago
        )
        hidden = await client.browser_profile(anonymous_id)

    assert (withdrawn, late_grant) == (False, False)
    assert dict(hidden.attributes) == {}


async def test_the_sync_client_sends_consented_at_so_a_late_grant_loses_too(
    real_service: RealServiceFactory,
) -> None:
    """The blocking record_consent passes consented_at: an older grant is ignored."""
    target = await real_service(browser_consent="functional")
    anonymous_id = visitor()
    client = AmperityClient(target, integration_id="web")
    with closing(client):
        withdrawn = await asyncio.to_thread(
            client.record_consent,
            anonymous_id,
            {"functional": False},
            consented_at=datetime.now(UTC) - timedelta(minutes=1),
        )
        late_grant = await asyncio.to_thread(
            client.record_consent,
            anonymous_id,
            {"functional": True},
            consented_at=datetime.now(UTC) - timedelta(minutes=2),
        )

    assert (withdrawn, late_grant) == (False, False)


async def test_a_consented_at_an_hour_ahead_is_invalid_argument_naming_it(
    real_service: RealServiceFactory,
) -> None:
    """The service refuses a consented_at past its clock; the error names consented_at."""
    target = await real_service(browser_consent="functional")
    async with AsyncAmperityClient(target, pipeline_key="pk_web") as client:
        with pytest.raises(InvalidArgument) as ahead:
            await client.record_consent(
                visitor(), {"functional": True}, consented_at=datetime.now(UTC) + timedelta(hours=1)
            )

    assert ahead.value.reason == "INVALID_CONSENT"
    assert [v.field for v in ahead.value.field_violations] == ["consented_at"]


async def test_consented_at_travels_as_a_utc_timestamp_and_unset_stays_unset(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """An aware datetime in any zone is sent as its instant; without it the field is absent."""
    paris = timezone(timedelta(hours=1))

    await client.record_consent(
        "a-1", {}, consented_at=datetime(2025, 1, 31, 13, 0, 0, 250000, tzinfo=paris)
    )
    await client.record_consent("a-1", {})

    timed, untimed = running.service.requests
    assert timed.consented_at.ToJsonString() == "2025-01-31T12:00:00.250Z"
    assert not untimed.HasField("consented_at")


@pytest.mark.parametrize(
    ("consented_at", "error", "message"),
    [
        (
            datetime(2025, 1, 31, 12, 0),
            ValueError,
            r"^consented_at is a naive datetime \(no tzinfo\).*datetime\.now\(UTC\)",
        ),
        (
            "2025-01-31T12:00:00Z",
            TypeError,
            r"^consented_at must be a datetime with a time zone, .* not str\.$",
        ),
        (1738324800, TypeError, r"^consented_at must be a datetime .* not int\.$"),
    ],
)
async def test_a_consented_at_the_client_cannot_place_in_time_is_refused_before_any_call(  # noqa: PLR0917 - fixtures and parameters
    running: RunningService,
    client: AsyncAmperityClient,
    sync_client: AmperityClient,
    consented_at: Any,
    error: type[Exception],
    message: str,
) -> None:
    """A naive datetime (local or UTC?) or a non-datetime is an error naming consented_at."""
    with pytest.raises(error, match=message):
        await client.record_consent("a-1", {}, consented_at=consented_at)
    with pytest.raises(error, match=message):
        await asyncio.to_thread(sync_client.record_consent, "a-1", {}, consented_at=consented_at)

    assert running.service.calls == []


async def test_the_request_carries_the_client_identity_and_the_consent_state(
    running: RunningService, make_client: ClientFactory
) -> None:
    """Both ids travel as BrowserProfile's do; the nested state becomes the proto Consent."""
    client = make_client(integration_id="web", pipeline_key="pk_web")

    allowed = await client.record_consent(
        "a-1",
        {
            "analytics": True,
            "marketing": None,
            "categories": {"C0003": False},
            "google": {"adStorage": "denied", "analytics_storage": "granted"},
        },
    )

    assert allowed is True
    (request,) = running.service.requests
    assert request == pb.RecordConsentRequest(
        integration_id="web",
        pipeline_key="pk_web",
        anonymous_id="a-1",
        consent=pb.Consent(
            analytics=True,
            categories={"C0003": False},
            google=pb.GoogleConsent(ad_storage="denied", analytics_storage="granted"),
        ),
    )
    assert not request.consent.HasField("marketing")
    assert running.service.metadata[0]["x-pipeline-key"] == "pk_web"


async def test_record_consent_is_retried_like_the_other_calls(
    running: RunningService, client: AsyncAmperityClient
) -> None:
    """UNAVAILABLE is retried under the retry policy; the state is sent again as it was."""
    running.service.unary_failures = [unavailable(0.5)]

    allowed = await client.record_consent("a-1", {"functional": True})

    assert allowed is True
    assert running.service.calls == ["RecordConsent", "RecordConsent"]
    assert running.service.requests[0] == running.service.requests[1]


@pytest.mark.parametrize(
    ("anonymous_id", "consent", "error", "message"),
    [
        ("", {}, ValueError, r"^anonymous_id is required: .*_dfid"),
        (None, {}, TypeError, r"^anonymous_id must be a string, .* not None: pass it as text"),
        ("a-1", None, ValueError, r"^consent must be a JSON object such as"),
        ("a-1", ["functional"], ValueError, r"^consent must be a JSON object, not list\."),
        ("a-1", {"analytics": "yes"}, ValueError, r"^consent\.analytics must be true or false"),
        (
            "a-1",
            {"categories": {"C0003": 1}},
            ValueError,
            r"^consent\.categories\.C0003 must be true or false",
        ),
        (
            "a-1",
            {"google": {"adStorage": "maybe"}},
            ValueError,
            r'^consent\.google\.ad_storage must be "granted" or "denied"',
        ),
    ],
)
async def test_what_the_client_can_check_is_refused_before_any_call(  # noqa: PLR0917 - fixtures and parameters
    running: RunningService,
    client: AsyncAmperityClient,
    sync_client: AmperityClient,
    anonymous_id: Any,
    consent: Any,
    error: type[Exception],
    message: str,
) -> None:
    """A missing visitor or a mistyped consent field is an error naming it, and no call."""
    with pytest.raises(error, match=message):
        await client.record_consent(anonymous_id, consent)
    with pytest.raises(error, match=message):
        await asyncio.to_thread(sync_client.record_consent, anonymous_id, consent)

    assert running.service.calls == []
