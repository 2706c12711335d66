"""The gateway reads a timestamp as the clients do: the same instant, or the same refusal.

The clients take RFC 3339 only (``clients/testdata/timestamps.json``, which both client
suites read, gives the Timestamp or the whole error for each string). The gateway reads
an event's ``timestamp`` and ``/v1/consent``'s ``consentedAt`` with the same grammar
(``amperity_signal.rfc3339``): the same Timestamp to the nanosecond, or a 400 naming the
field in the clients' words (``timestamp: is not …`` where a client says ``timestamp is
not …``). No difference is left; no offset means UTC in all three (docs/gateway.md).

A dry run (``blueprint test --events FILE``, ``event_from_datafly_json``) reads an event's
``timestamp`` as the gateway does: the datetime the service makes of the gateway's
Timestamp, or the gateway's refusal word for word (docs/blueprint.md).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from amperity_signal.blueprint import event_from_datafly_json
from amperity_signal.errors import InvalidEvent
from amperity_signal.gateway import convert
from amperity_signal.gateway.errors import GatewayError, InvalidFieldError
from amperity_signal.service.convert import event_to_dict
from amperity_signal_client.fields import EventFieldError
from amperity_signal_client.timestamps import timestamp_parts

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "clients" / "testdata" / "timestamps.json").read_text("utf-8")
)["cases"]
FACTS = convert.RequestFacts("track", "127.0.0.1", None, None, datetime.now(UTC), lambda: "m")


def _event_reads(timestamp: str, prefix: str = "") -> dict[str, Any]:
    """The gateway's event Timestamp for ``timestamp``, or its error, in the cases' shape."""
    try:
        event = convert.event_from_json({"anonymousId": "a", "timestamp": timestamp}, FACTS, prefix)
    except InvalidFieldError as error:
        return {"error": error.message, "answer": (error.status, error.code, error.field)}
    return {"seconds": str(event.timestamp.seconds), "nanos": event.timestamp.nanos}


def _consent_reads(consented_at: str) -> dict[str, Any]:
    """The gateway's RecordConsent ``consented_at`` for ``consentedAt``, or its error."""
    try:
        stamp = convert.consented_at_from_json({"consentedAt": consented_at})
    except GatewayError as error:
        return {"error": error.message, "answer": (error.status, error.code, error.field)}
    assert stamp is not None
    return {"seconds": str(stamp.seconds), "nanos": stamp.nanos}


def _as_the_gateway_says(case: dict[str, Any], field: str, code: str) -> dict[str, Any]:
    """A client's reading as the gateway answers it: a 400 ``code`` worded ``field: is …``."""
    if "error" in case:
        message = case["error"].replace("timestamp ", f"{field}: ", 1)
        return {"error": message, "answer": (400, code, field)}
    return {"seconds": case["seconds"], "nanos": case["nanos"]}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_gateway_reads_an_event_timestamp_as_the_clients_do(case: dict[str, Any]) -> None:
    """The same Timestamp to the nanosecond, or the same refusal naming the field."""
    assert _event_reads(case["input"]) == _as_the_gateway_says(case, "timestamp", "INVALID_EVENT")
    assert _event_reads(case["input"], "batch[3].") == _as_the_gateway_says(
        case, "batch[3].timestamp", "INVALID_EVENT"
    )


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_the_gateway_reads_consented_at_as_the_clients_read_a_timestamp(
    case: dict[str, Any],
) -> None:
    """``POST /v1/consent``'s consentedAt by the same rules, as INVALID_CONSENT."""
    assert _consent_reads(case["input"]) == _as_the_gateway_says(
        case, "consentedAt", "INVALID_CONSENT"
    )


def _client_reads(timestamp: str) -> dict[str, Any]:
    """The Python client's reading (which the Node client's matches, tests/e2e)."""
    try:
        seconds, nanos = timestamp_parts(timestamp)
    except EventFieldError as error:
        return _as_the_gateway_says({"error": str(error)}, "timestamp", "INVALID_EVENT")
    return {"seconds": str(seconds), "nanos": nanos}


def _digits(low: int, high: int, width: int) -> st.SearchStrategy[str]:
    """Numbers in low..high written with ``width`` digits, now and then one too few."""
    return st.builds(
        lambda number, short: f"{number:0{width - short}d}",
        st.integers(low, high),
        st.sampled_from([0] * 9 + [1]),
    )


# Strings near the grammar: mostly date-times, some with a part out of range or the
# wrong form, strings of the characters it and its neighbours use, and any text at all
# (whatever it is, the gateway answers a 400, never a 500).
_NEAR_RFC_3339 = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789-:.+TtZz ,W", max_size=40),
    st.builds(
        "{}-{}-{}{}{}:{}:{}{}{}".format,
        _digits(0, 9999, 4),
        _digits(0, 13, 2),
        _digits(0, 32, 2),
        st.sampled_from(["T", "t", " ", "x", "", "TT"]),
        _digits(0, 24, 2),
        _digits(0, 60, 2),
        _digits(0, 60, 2),
        st.one_of(
            st.sampled_from(["", ".", ",5"]), st.from_regex(r"\.[0-9]{1,12}", fullmatch=True)
        ),
        st.one_of(
            st.sampled_from(["", "Z", "z", "+01", "+0100", "Z\n", "\u0661"]),
            st.builds(
                "{}{}:{}".format, st.sampled_from("+-"), _digits(0, 24, 2), _digits(0, 60, 2)
            ),
        ),
    ),
)


@settings(max_examples=500, deadline=None)
@given(_NEAR_RFC_3339)
@example("2025-01-31 12:00")
@example("2025-01-31T12:00:00,5")
@example("2024-02-29T23:59:59.999999")
@example("0001-01-01T00:00:00-23:59")
def test_the_gateway_and_the_python_client_agree_beyond_the_shared_cases(timestamp: str) -> None:
    """Any string near the grammar: the same Timestamp or the same words."""
    assert _event_reads(timestamp) == _client_reads(timestamp)


def _gateway_moment(timestamp: Any) -> dict[str, Any]:
    """What the service's mapping sees of a gateway event's ``timestamp``, or the refusal."""
    try:
        event = convert.event_from_json({"anonymousId": "a", "timestamp": timestamp}, FACTS)
    except InvalidFieldError as error:
        return {"error": error.message}
    return {"moment": event_to_dict(event)["timestamp"]}


def _dry_run_moment(timestamp: Any) -> dict[str, Any]:
    """What a dry run maps for the same event, or its refusal as the CLI words it."""
    try:
        event = event_from_datafly_json({"anonymousId": "a", "timestamp": timestamp})
    except InvalidEvent as error:
        return {"error": "; ".join(f"{v.field}: {v.description}" for v in error.violations)}
    return {"moment": event["timestamp"]}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_a_dry_run_reads_an_event_timestamp_as_the_gateway_does(case: dict[str, Any]) -> None:
    """The same instant (to the microsecond the mapping sees) or the same words."""
    gateway = _gateway_moment(case["input"])
    assert _dry_run_moment(case["input"]) == gateway
    assert ("error" in gateway) == ("error" in case)


@pytest.mark.parametrize("timestamp", ["", 1738324800, 1.5, True, [], {}], ids=repr)
def test_a_dry_run_refuses_what_the_gateway_refuses_beyond_strings(timestamp: Any) -> None:
    """An empty string is no absent timestamp, a number no date-time: refused, as there."""
    assert _dry_run_moment(timestamp) == _gateway_moment(timestamp)
    assert "error" in _dry_run_moment(timestamp)


@settings(max_examples=300, deadline=None)
@given(_NEAR_RFC_3339)
def test_a_dry_run_and_the_gateway_agree_beyond_the_shared_cases(timestamp: str) -> None:
    """Any string near the grammar: the same instant or the same words."""
    assert _dry_run_moment(timestamp) == _gateway_moment(timestamp)


def _received_at(now: datetime) -> timestamp_pb2.Timestamp:
    """The Timestamp the gateway gives an event without one, received at ``now``."""
    facts = dataclasses.replace(FACTS, now=now)
    return convert.event_from_json({"anonymousId": "a"}, facts).timestamp


@pytest.mark.parametrize(
    ("now", "seconds", "nanos"),
    [
        (datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC), 1738324800, 123456000),
        (
            datetime(2025, 1, 31, 13, 0, 0, 999999, tzinfo=timezone(timedelta(hours=1))),
            1738324800,
            999999000,
        ),
        (datetime(2025, 1, 31, 12, 0, 0, 1), 1738324800, 1000),  # naive: UTC
        (datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), -1, 500000000),
    ],
    ids=["UTC", "an offset", "naive", "before 1970"],
)
def test_an_event_without_a_timestamp_gets_the_receive_time_to_the_microsecond(
    now: datetime, seconds: int, nanos: int
) -> None:
    """The receive time, set part by part, is the instant ``FromDatetime`` gave."""
    stamp = _received_at(now)
    assert (stamp.seconds, stamp.nanos) == (seconds, nanos)
    assert stamp.ToDatetime(tzinfo=UTC) == now.replace(tzinfo=now.tzinfo or UTC)


# Offsets of whole seconds, as every real zone's (of a fraction of a second in the offset,
# FromDatetime's utctimetuple drops the fraction); the gateway's own now is UTC.
_RECEIVE_ZONES = st.integers(-86_399, 86_399).map(lambda s: timezone(timedelta(seconds=s)))


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=_RECEIVE_ZONES),
    st.booleans(),
)
def test_the_receive_time_is_what_from_datetime_made_of_it(now: datetime, naive: bool) -> None:
    """Any receive time, aware or naive: the same seconds and nanos as ``FromDatetime``."""
    if naive:
        now = now.replace(tzinfo=None)
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(now)
    assert _received_at(now) == expected
