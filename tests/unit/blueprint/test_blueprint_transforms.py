"""Each transform, its failure mode and the double-hash guard."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amperity_signal.blueprint import TRANSFORMS
from amperity_signal.blueprint.errors import TransformError
from amperity_signal.blueprint.transforms import format_timestamp

EMAIL_SHA = hashlib.sha256(b"jane.doe@example.com").hexdigest()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("lowercase", "MiXeD", "mixed"),
        ("uppercase", "gbp", "GBP"),
        ("trim", "  a b  ", "a b"),
        ("to_string", 12345.0, "12345"),
        ("to_string", 12.5, "12.5"),
        ("to_string", True, "true"),
        ("to_number", "12", 12),
        ("to_number", "12.5", 12.5),
        ("to_number", 3, 3),
        ("to_int", "2.0", 2),
        ("to_int", 2.7, 2),
        ("to_number", "99999999999999999999", 1e20),
        ("to_number", -(2**63), -(2**63)),
        ("to_int", 2**63 - 1, 2**63 - 1),
        ("to_bool", "yes", True),
        ("to_bool", "FALSE", False),
        ("to_bool", 1, True),
        ("e164", "+44 7700 900123", "+447700900123"),
        ("e164", "0044 (7700) 900-123", "+447700900123"),
        ("e164", "07700 900123", "07700900123"),
        ("sha256", " Jane.Doe@Example.com ", EMAIL_SHA),
        (
            "sha256_upper",
            "jane.doe@example.com",
            hashlib.sha256(b"JANE.DOE@EXAMPLE.COM").hexdigest().upper(),
        ),
    ],
)
def test_transform_converts_value(name: str, value: Any, expected: Any) -> None:
    """Every named transform converts a typical value as documented."""
    assert TRANSFORMS[name](value) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("to_number", "abc"),
        ("to_number", "nan"),
        ("to_number", float("inf")),
        ("to_number", True),
        ("to_int", "x1"),
        ("to_int", 1e20),
        ("to_int", "-99999999999999999999"),
        ("to_number", "9" * 400),
        ("to_bool", "maybe"),
        ("e164", "call me"),
        ("iso8601", "yesterday"),
        ("iso8601", 1e30),
        ("iso8601", -1e15),
        ("iso8601", "0001-01-01T00:00:00+01:00"),
        ("iso8601", "9999-12-31T23:59:59-01:00"),
        ("items", [{"colour": "red"}]),
        ("lowercase", {"a": 1}),
    ],
)
def test_transform_refuses_values_it_cannot_convert(name: str, value: Any) -> None:
    """A value a transform cannot convert raises TransformError (the engine omits it)."""
    with pytest.raises(TransformError):
        TRANSFORMS[name](value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2025-01-31T12:00:00z", "'2025-01-31T12:00:00z' is not an ISO 8601 timestamp"),
        ("1738324800", "'1738324800' is not an ISO 8601 timestamp"),
        ("", "'' is not an ISO 8601 timestamp"),
        ("yesterday", "'yesterday' is not an ISO 8601 timestamp"),
        (True, "True is not a timestamp"),
        (float("nan"), "nan is not a timestamp"),
        (float("-inf"), "-inf is not a timestamp"),
        ([2025], "[2025] is not a timestamp"),
        # Only a moment datetime cannot hold is out of range.
        (1e30, "1e+30 is outside the years 1-9999 (UTC)"),
        (
            "0001-01-01T00:00:00+01:00",
            "'0001-01-01T00:00:00+01:00' is outside the years 1-9999 (UTC)",
        ),
    ],
    ids=repr,
)
def test_iso8601_says_why_a_value_is_not_a_timestamp(value: Any, message: str) -> None:
    """A value that is no timestamp is not called out of range (TransformError is a ValueError)."""
    with pytest.raises(TransformError) as caught:
        TRANSFORMS["iso8601"](value)
    assert str(caught.value) == message


def test_sha256_never_hashes_an_existing_digest_again() -> None:
    """A value that already is a 64-char hex digest passes through sha256 unchanged."""
    assert TRANSFORMS["sha256"](EMAIL_SHA) == EMAIL_SHA
    assert TRANSFORMS["sha256"](EMAIL_SHA.upper()) == EMAIL_SHA
    assert TRANSFORMS["sha256_upper"](EMAIL_SHA) == EMAIL_SHA.upper()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 4, 17, 15, 37, 10, 484999, tzinfo=UTC), "2026-04-17T15:37:10.484Z"),
        (
            datetime(2026, 4, 17, 17, 37, 10, tzinfo=timezone(timedelta(hours=2))),
            "2026-04-17T15:37:10.000Z",
        ),
        (datetime(2026, 4, 17, 15, 37, 10), "2026-04-17T15:37:10.000Z"),
        ("2026-04-17T15:37:10.484Z", "2026-04-17T15:37:10.484Z"),
        ("2026-04-17T16:37:10+01:00", "2026-04-17T15:37:10.000Z"),
        (1776440230, "2026-04-17T15:37:10.000Z"),
        (1776440230484, "2026-04-17T15:37:10.484Z"),
    ],
)
def test_iso8601_writes_utc_milliseconds_with_z(value: Any, expected: str) -> None:
    """Datetimes, ISO strings and epoch numbers all become UTC, milliseconds, Z."""
    assert TRANSFORMS["iso8601"](value) == expected


@given(
    st.datetimes(
        # A day inside the datetime range, so every offset converts to UTC.
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(
            st.none(),
            st.just(UTC),
            st.builds(
                timezone,
                st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
            ),
        ),
    )
)
def test_timestamps_read_exactly_as_strftime_writes_them(moment: datetime) -> None:
    """Any datetime, any year, naive or at any offset: the text strftime gives, in UTC."""
    utc = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    reference = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert format_timestamp(moment) == reference


def test_items_normalises_ga4_and_segment_lists_to_one_shape() -> None:
    """GA4 items[] and Segment products[] normalise to the same item dicts."""
    ga4 = [
        {
            "item_id": "S1",
            "item_name": "Shoe",
            "item_brand": "B",
            "item_category": "C",
            "price": 10.0,
            "quantity": 2.0,
        }
    ]
    segment = [
        {
            "product_id": "S1",
            "name": "Shoe",
            "brand": "B",
            "category": "C",
            "price": "10.0",
            "quantity": 2,
        }
    ]
    expected = [
        {
            "item_id": "S1",
            "item_name": "Shoe",
            "item_brand": "B",
            "item_category": "C",
            "price": 10.0,
            "quantity": 2,
        }
    ]
    assert TRANSFORMS["items"](ga4) == expected
    assert TRANSFORMS["items"](segment) == expected


def test_items_reads_a_single_product_dict_as_one_item() -> None:
    """A Segment single-product properties dict becomes a one-item list; sku is an id."""
    assert TRANSFORMS["items"]({"sku": 42.0, "price": 5, "currency": "USD"}) == [
        {"item_id": "42", "price": 5}
    ]
