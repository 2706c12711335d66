"""Hypothesis over the gRPC surface: random events never crash the service.

Random Structs (unicode keys and values, NaN and Infinity, deep nesting, huge strings),
bad timestamps, missing and unknown fields go through ``Deliver``, ``Enrich``,
``DeliverStream`` and ``BrowserProfile`` of an in-process service whose Amperity is the
sandbox app. Properties: no UNKNOWN or INTERNAL status (nor any other unexpected one),
every INVALID_ARGUMENT names at least one field of the event, and an event that passes
validation is delivered. Case counts go to ``artifacts/reliability/fuzz_grpc.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amperity_signal.errors import InvalidEvent
from amperity_signal.service.convert import event_to_dict
from amperity_signal.service.validation import MAX_STRING, checked_event_dict, validate_event
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.reliability.inprocess import InProcess, bad_request_fields, inprocess_service
from tests.reliability.profile import PROFILE
from tests.reliability.support import ARTIFACTS

CASES = {
    "deliver": PROFILE.grpc_fuzz_cases,
    "enrich": PROFILE.grpc_fuzz_cases * 5 // 8,
    "deliver_stream": PROFILE.grpc_fuzz_cases // 2,
    "browser_profile": PROFILE.grpc_fuzz_cases * 3 // 8,
}
RAN: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()
EXPECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

# Protobuf strings are UTF-8: lone surrogates cannot even be serialised by the caller.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
HUGE = st.sampled_from([MAX_STRING, MAX_STRING + 1]).map(lambda n: "é" * n)
STRINGS = TEXT
NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=24)
USUALLY = st.sampled_from([True] * 7 + [False])  # shrinks towards True
NUMBERS = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=20,
)


@st.composite
def deep(draw: st.DrawFn) -> dict[str, Any]:
    """An object nested 1-14 levels deep, around the 10-level limit."""
    value: Any = draw(SCALARS)
    for _ in range(draw(st.integers(1, 12))):
        value = [value] if draw(st.booleans()) else {draw(TEXT): value}
    return {"deep": value}


STRUCTS = st.one_of(st.none(), st.dictionaries(TEXT, JSON, max_size=6), deep())


@st.composite
def contexts(draw: st.DrawFn, context: pb.Context) -> None:
    """Fill a Context with random strings, ids, numbers and consent."""
    context.ip = draw(STRINGS)
    context.page.url = draw(STRINGS)
    context.session.number = draw(st.integers(-(2**63), 2**63 - 1))
    for key, value in draw(st.dictionaries(TEXT, STRINGS, max_size=3)).items():
        context.vendor_ids[key] = value
    consent = draw(st.sampled_from([None, True, False]))
    if consent is not None:
        context.consent.analytics = consent
    context.consent.google.ad_storage = draw(
        st.one_of(st.sampled_from(["granted", "denied"]), TEXT)
    )
    for key, flag in draw(st.dictionaries(TEXT, st.booleans(), max_size=3)).items():
        context.consent.categories[key] = flag


@st.composite
def events(draw: st.DrawFn) -> pb.Event:
    """A random Event: each field absent, plausible, hostile or out of range."""
    event = pb.Event()
    # Mostly well-formed where it matters, so that valid events reach Amperity too.
    for name in ("message_id", "event", "anonymous_id", "canonical_id", "user_id"):
        if name in ("event", "anonymous_id"):
            if draw(USUALLY):
                setattr(event, name, draw(NAMES))
        elif draw(st.booleans()):
            setattr(event, name, draw(STRINGS))
    types = st.sampled_from(["track", "page", "identify", "screen", "group", "alias"])
    event.type = draw(st.one_of(types, types, types, TEXT))
    if draw(st.booleans()):
        event.timestamp.seconds = draw(
            st.one_of(
                st.integers(-(2**40), 2**40),
                st.integers(946_684_700, 4_102_444_900),
                st.integers(1_600_000_000, 1_900_000_000),
                st.integers(1_600_000_000, 1_900_000_000),
            )
        )
        event.timestamp.nanos = draw(
            st.one_of(st.integers(0, 999_999_999), st.integers(-5, 2**31 - 1))
        )
    for name in ("properties", "traits", "partner_attrs"):
        value = draw(STRUCTS)
        if value is not None:
            getattr(event, name).update(value)
    if draw(st.booleans()):
        draw(contexts(event.context))
    if not draw(USUALLY):
        # One string at or just over the 8,192-character limit, somewhere.
        where = draw(st.sampled_from(["event", "anonymous_id", "user_id", "page", "property"]))
        huge = draw(HUGE)
        if where == "page":
            event.context.page.url = huge
        elif where == "property":
            event.properties.update({"long": huge})
        else:
            setattr(event, where, huge)
    return event


def integration_ids() -> st.SearchStrategy[str]:
    """Mostly the configured integration, sometimes an unknown one."""
    return st.one_of(st.just("web"), st.just("web"), st.just("web"), TEXT)


def check_error(error: grpc.aio.AioRpcError, rpc: str) -> None:
    """The property every failed call must hold."""
    OUTCOMES[f"{rpc}:{error.code().name}"] += 1
    assert error.code() in EXPECTED, (error.code(), error.details())
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        fields = bad_request_fields(error)
        assert fields, f"INVALID_ARGUMENT names no field: {error.details()}"
        # Request fields (event.*, integration_id) or, for a mapped body over Amperity's
        # 64 KB, the body fields to shorten.
        assert all(f.strip() for f in fields), fields


def is_valid(event: pb.Event) -> bool:
    """Whether the service's own validation accepts the event."""
    try:
        validate_event(event)
    except InvalidEvent:
        return False
    return True


def record(rpc: str) -> None:
    """Count one case and rewrite the summary (so a failing run still reports)."""
    RAN[rpc] += 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "profile": PROFILE.name,
        "cases": dict(RAN),
        "total": sum(RAN.values()),
        "outcomes": dict(sorted(OUTCOMES.items())),
    }
    if sum(RAN.values()) % 50 == 0 or RAN[rpc] == CASES[rpc]:
        (ARTIFACTS / "fuzz_grpc.json").write_text(json.dumps(summary, indent=2) + "\n")


def fuzz(rpc: str) -> settings:
    """The settings of one fuzz test: its case count, no deadline, no example database."""
    return settings(
        max_examples=CASES[rpc],
        deadline=None,
        database=None,
        suppress_health_check=SUPPRESSED,
    )


SUPPRESSED = [
    HealthCheck.function_scoped_fixture,  # the service is stateless between cases
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
]


@pytest.fixture
async def service() -> AsyncIterator[InProcess]:
    """One in-process service for every case of a test."""
    async with inprocess_service() as running:
        yield running


@fuzz("deliver")
@given(event=events(), integration_id=integration_ids())
async def test_deliver_never_crashes_and_every_invalid_argument_names_a_field(
    service: InProcess, event: pb.Event, integration_id: str
) -> None:
    """Random events to Deliver: OK (202/204) or INVALID_ARGUMENT/NOT_FOUND naming fields."""
    record("deliver")
    request = pb.DeliverRequest(integration_id=integration_id, event=event)
    try:
        response = await service.stub.Deliver(request, timeout=20)
    except grpc.aio.AioRpcError as caught:
        error: grpc.aio.AioRpcError | None = caught
    else:
        error = None
    if error is not None:
        check_error(error, "deliver")
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            fields = bad_request_fields(error)
            if is_valid(event):  # then only the integration or the mapped body can be at fault
                assert fields == ["integration_id"] or "65,536 bytes" in (error.details() or "")
        return
    OUTCOMES["deliver:OK"] += 1
    assert is_valid(event)
    assert response.vendor_request.status_code in (202, 204)


@fuzz("enrich")
@given(event=events())
async def test_enrich_never_crashes_and_every_invalid_argument_names_a_field(
    service: InProcess, event: pb.Event
) -> None:
    """Random events to Enrich: OK, or INVALID_ARGUMENT naming the event's fields."""
    record("enrich")
    try:
        await service.stub.Enrich(pb.EnrichRequest(integration_id="web", event=event), timeout=20)
    except grpc.aio.AioRpcError as error:
        check_error(error, "enrich")
        return
    OUTCOMES["enrich:OK"] += 1
    assert is_valid(event)


@fuzz("deliver_stream")
@given(batch=st.lists(events(), min_size=1, max_size=5))
async def test_deliver_stream_answers_every_random_event_without_breaking(
    service: InProcess, batch: list[pb.Event]
) -> None:
    """A stream of random events: one answer per event, never UNKNOWN/INTERNAL, stream intact."""
    record("deliver_stream")
    for index, event in enumerate(batch):
        event.message_id = f"fuzz-{index}"  # answers are matched by message id

    async def feed() -> AsyncIterator[pb.DeliverStreamRequest]:
        for event in batch:
            yield pb.DeliverStreamRequest(integration_id="web", event=event)

    answers = {a.message_id: a async for a in service.stub.DeliverStream(feed(), timeout=30)}
    assert set(answers) == {e.message_id for e in batch}
    for event in batch:
        answer = answers[event.message_id]
        if answer.HasField("error"):
            code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            OUTCOMES[f"deliver_stream:{answer.error.reason}"] += 1
            assert answer.error.code == code, answer.error
            assert answer.error.metadata.get("fields"), answer.error
        else:
            OUTCOMES["deliver_stream:OK"] += 1
            assert is_valid(event)


@fuzz("browser_profile")
@given(anonymous_id=STRINGS, pipeline_key=st.one_of(st.just("pk_web"), TEXT))
async def test_browser_profile_never_crashes_on_random_visitors_and_keys(
    service: InProcess, anonymous_id: str, pipeline_key: str
) -> None:
    """Random visitors and pipeline keys: attributes, or NOT_FOUND/INVALID_ARGUMENT."""
    record("browser_profile")
    request = pb.BrowserProfileRequest(pipeline_key=pipeline_key, anonymous_id=anonymous_id)
    try:
        response = await service.stub.BrowserProfile(request, timeout=20)
    except grpc.aio.AioRpcError as caught:
        error: grpc.aio.AioRpcError | None = caught
    else:
        error = None
    if error is not None:
        check_error(error, "browser_profile")
        return
    OUTCOMES["browser_profile:OK"] += 1
    assert response.provider == "amperity"


def test_the_fuzzers_ran_at_least_1000_cases_together() -> None:
    """The cases actually run by the tests above (defined first, so run first) total ≥ 1,000."""
    assert sum(CASES.values()) >= 1_000
    assert sum(RAN.values()) >= 1_000, dict(RAN)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=SUPPRESSED)
@given(event=events())
def test_the_one_walk_conversion_agrees_with_validation_and_conversion(event: pb.Event) -> None:
    """checked_event_dict = validate_event, then event_to_dict: same violations, same dict."""
    if is_valid(event):
        assert checked_event_dict(event) == event_to_dict(event)
        return
    with pytest.raises(InvalidEvent) as expected:
        validate_event(event)
    with pytest.raises(InvalidEvent) as caught:
        checked_event_dict(event)
    assert caught.value.violations == expected.value.violations
