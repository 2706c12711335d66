"""String limits at their boundary, on every string field ``validate_event`` checks.

An event no larger than ``MAX_STRING`` bytes skips the string checks (no string in it can be
that long), so each case sits right at the edge: a string of ``MAX_STRING + 1`` characters
is the smallest event that must still be caught, and one of ``MAX_STRING`` must pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amperity_signal.errors import InvalidEvent
from amperity_signal.limits import MAX_ANONYMOUS_ID, MAX_CANONICAL_ID
from amperity_signal.service.validation import (
    CATEGORY_CODE_TOO_LONG,
    MAX_STRING,
    checked_event_dict,
    validate_event,
)
from datafly.amperity.v1 import amperity_service_pb2 as pb


def _set(path: str) -> Callable[[pb.Event, str], None]:
    def apply(event: pb.Event, text: str) -> None:
        *parents, name = path.split(".")
        target = event
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, text)

    return apply


def _vendor_key(event: pb.Event, text: str) -> None:
    event.context.vendor_ids[text] = "v"


def _vendor_value(event: pb.Event, text: str) -> None:
    event.context.vendor_ids["ga"] = text


def _category_code(event: pb.Event, text: str) -> None:
    event.context.consent.categories[text] = True


CASES: dict[str, tuple[Callable[[pb.Event, str], None], str]] = {
    "message_id": (_set("message_id"), "event.message_id"),
    "event": (_set("event"), "event.event"),
    "user_id": (_set("user_id"), "event.user_id"),
    "context.ip": (_set("context.ip"), "event.context.ip"),
    "context.user_agent": (_set("context.user_agent"), "event.context.user_agent"),
    "context.page.url": (_set("context.page.url"), "event.context.page.url"),
    "context.campaign.name": (_set("context.campaign.name"), "event.context.campaign.name"),
    "context.geo.city": (_set("context.geo.city"), "event.context.geo.city"),
    "context.device.os": (_set("context.device.os"), "event.context.device.os"),
    "vendor id key": (_vendor_key, "event.context.vendor_ids."),
    "vendor id value": (_vendor_value, "event.context.vendor_ids.ga"),
    "consent category code": (_category_code, "event.context.consent.categories"),
}


def _event() -> pb.Event:
    return pb.Event(type="track", event="e", anonymous_id="a")


@pytest.mark.parametrize("case", CASES)
def test_one_character_over_the_limit_is_named(case: str) -> None:
    apply, field = CASES[case]
    event = _event()
    apply(event, "x" * (MAX_STRING + 1))
    with pytest.raises(InvalidEvent) as raised:
        validate_event(event)
    assert [v.field for v in raised.value.violations if v.field.startswith(field)]
    with pytest.raises(InvalidEvent):
        checked_event_dict(event)


@pytest.mark.parametrize("case", CASES)
def test_a_string_at_the_limit_passes(case: str) -> None:
    apply, _ = CASES[case]
    event = _event()
    apply(event, "x" * MAX_STRING)
    validate_event(event)  # raises InvalidEvent on a violation
    checked_event_dict(event)


@pytest.mark.parametrize(
    ("field", "limit", "kind"),
    [
        ("anonymous_id", MAX_ANONYMOUS_ID, "an anonymous id"),
        ("canonical_id", MAX_CANONICAL_ID, "a canonical id"),
    ],
)
def test_a_visitor_id_over_its_own_limit_is_named_with_the_limit(
    field: str, limit: int, kind: str
) -> None:
    """anonymous_id and canonical_id are held to their limits in limits.py, as the gateway is.

    Until session 20 anonymous_id was held to MAX_STRING: Deliver took an id of 201-8192
    characters whose profile BrowserProfile and ``/v1/enrich`` then refused to look up;
    until session 22 canonical_id was, a visitor id 40 times the anonymous id it stands for.
    """
    event = _event()
    setattr(event, field, "x" * limit)
    validate_event(event)
    checked_event_dict(event)
    for length in (limit + 1, MAX_STRING + 1):  # named once, not also as a string too long
        setattr(event, field, "x" * length)
        for check in (validate_event, checked_event_dict):
            with pytest.raises(InvalidEvent) as raised:
                check(event)
            (violation,) = raised.value.violations
            assert violation.field == f"event.{field}"
            assert f"longer than {limit} characters, the limit for {kind}" in (
                violation.description
            )


def test_a_consent_category_code_over_the_limit_is_refused_as_record_consent_refuses_it() -> None:
    """Deliver holds each category code to RecordConsent's limit, not only their number.

    Until session 27 it checked only how many: a state held through a cache outage is as
    large as its codes, 256 of 8 KB or more each.
    """
    event = _event()
    _category_code(event, "C" * (MAX_STRING + 1))
    with pytest.raises(InvalidEvent) as raised:
        checked_event_dict(event)
    [violation] = raised.value.violations
    assert violation.field == "event.context.consent.categories"
    assert violation.description == CATEGORY_CODE_TOO_LONG
    assert f"longer than {MAX_STRING} characters" in violation.description


@pytest.mark.parametrize("value", ["GRANTED", "yes", ""])
def test_a_google_consent_value_other_than_granted_or_denied_is_named(value: str) -> None:
    """A Google consent signal that is neither granted nor denied is refused, by its path."""
    event = _event()
    event.context.consent.google.ad_storage = value
    event.context.consent.google.analytics_storage = "granted"
    with pytest.raises(InvalidEvent) as raised:
        checked_event_dict(event)
    [violation] = raised.value.violations
    assert violation.field == "event.context.consent.google.ad_storage"
    assert '"granted" or "denied"' in violation.description
