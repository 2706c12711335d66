"""Deadlines, idle timeouts and retry settings that could never work are refused up front."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from amperity_signal_client import AmperityClient, AsyncAmperityClient, RetryPolicy
from datafly.amperity.v1 import amperity_service_pb2 as pb

from .conftest import ClientFactory
from .fakes import FakeSyncSleep, RunningService, delivery_error, unavailable

EVENT = pb.Event(message_id="m-1", type="track", event="Product Viewed", anonymous_id="a-1")
CANNOT_WORK = [0, 0.0, -1.0, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("client_class", [AsyncAmperityClient, AmperityClient])
@pytest.mark.parametrize(
    ("option", "example"), [("default_timeout", "10.0"), ("stream_idle_timeout", "30.0")]
)
@pytest.mark.parametrize("value", CANNOT_WORK)
async def test_a_client_timeout_that_cannot_work_is_refused_when_the_client_is_built(
    client_class: type[AsyncAmperityClient | AmperityClient],
    option: str,
    example: str,
    value: float,
) -> None:
    """Zero, negative, NaN or infinite: a ValueError naming the option and a value to pass."""
    with pytest.raises(
        ValueError, match=rf"^{option} must be a finite number of seconds"
    ) as raised:
        client_class("127.0.0.1:1", integration_id="shop", **{option: value})  # type: ignore[arg-type]

    assert f"e.g. {example}" in str(raised.value)
    assert f"got {value!r}" in str(raised.value)


@pytest.mark.parametrize("client_class", [AsyncAmperityClient, AmperityClient])
async def test_a_timeout_that_is_not_a_number_is_a_type_error(
    client_class: type[AsyncAmperityClient | AmperityClient],
) -> None:
    """A string or a bool is not a number of seconds, whatever it converts to."""
    with pytest.raises(TypeError, match=r"^default_timeout must be .* not str\.$"):
        client_class("127.0.0.1:1", integration_id="shop", default_timeout="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^stream_idle_timeout must be .* not bool\.$"):
        client_class("127.0.0.1:1", integration_id="shop", stream_idle_timeout=True)


@pytest.mark.parametrize("value", CANNOT_WORK)
async def test_an_attempt_timeout_that_cannot_work_is_refused_before_any_call(
    running: RunningService,
    client: AsyncAmperityClient,
    sync_client: AmperityClient,
    value: float,
) -> None:
    """A per-call attempt_timeout is checked as the constructor's, and nothing is sent."""
    message = (
        r"^attempt_timeout must be a finite number .* or None for the client's default_timeout"
    )
    with pytest.raises(ValueError, match=message):
        await client.deliver(EVENT, attempt_timeout=value)
    with pytest.raises(ValueError, match=message):
        await client.record_consent("a-1", {}, attempt_timeout=value)
    with pytest.raises(ValueError, match=message):
        await asyncio.to_thread(sync_client.browser_profile, "a-1", attempt_timeout=value)

    assert running.service.calls == []


@pytest.mark.parametrize(
    ("option", "value", "wanted"),
    [
        ("max_attempts", 0, "a whole number, 1 or more"),
        ("max_attempts", 2.5, "a whole number, 1 or more"),
        ("initial_backoff", -0.1, "a finite number of seconds, zero or more, e.g. 0.1"),
        ("initial_backoff", math.nan, "a finite number of seconds, zero or more, e.g. 0.1"),
        ("initial_backoff", math.inf, "a finite number of seconds, zero or more, e.g. 0.1"),
        ("max_backoff", -1.0, "a finite number of seconds, zero or more, e.g. 5.0"),
        ("max_backoff", math.nan, "a finite number of seconds, zero or more, e.g. 5.0"),
        ("multiplier", 0.5, "a finite number, 1 or more"),
        ("multiplier", math.nan, "a finite number, 1 or more"),
        ("multiplier", math.inf, "a finite number, 1 or more"),
        ("total_timeout", 0, "more than zero, e.g. 30.0, or math.inf for no overall deadline"),
        ("total_timeout", -5.0, "more than zero, e.g. 30.0, or math.inf for no overall deadline"),
        (
            "total_timeout",
            math.nan,
            "more than zero, e.g. 30.0, or math.inf for no overall deadline",
        ),
    ],
)
def test_a_retry_policy_that_cannot_work_is_refused_when_it_is_built(
    option: str, value: Any, wanted: str
) -> None:
    """Each field's error names it, says what it takes and echoes the value given."""
    with pytest.raises(ValueError, match=rf"^RetryPolicy\.{option} must be ") as raised:
        RetryPolicy(**{option: value})

    assert wanted in str(raised.value)
    assert str(raised.value).endswith(f"got {value!r}.")


def test_a_retry_setting_that_is_not_a_number_is_a_type_error() -> None:
    """A string total_timeout would fail only at the first call's arithmetic."""
    with pytest.raises(TypeError, match=r"^RetryPolicy\.total_timeout must be .* not str\.$"):
        RetryPolicy(total_timeout="30")  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "shown"), [("3", "'3'"), (True, "True"), (None, "None")])
def test_a_max_attempts_that_is_not_a_number_is_a_type_error(value: object, shown: str) -> None:
    """As documented and as the Node client refuses it; it was a ValueError.

    A fraction or a number below 1 stays a ValueError (above).
    """
    message = (
        r"^RetryPolicy\.max_attempts must be a whole number, 1 or more \(1: no retries\), "
        rf"e\.g\. 5; got {shown}\.$"
    )
    with pytest.raises(TypeError, match=message):
        RetryPolicy(max_attempts=value)  # type: ignore[arg-type]


async def test_retryable_codes_given_as_numbers_are_status_codes(
    running: RunningService, make_client: ClientFactory
) -> None:
    """``{14, 8}``, as the Node client takes them, retries as the StatusCode members do.

    The numbers were kept as given: a unary call was never retried and deliver_many failed
    with an AttributeError at its first per-event error.
    """
    # Typed as StatusCode members (what the policy holds); numbers are taken at run time.
    numbers: Any = frozenset({14, 8})
    policy = RetryPolicy(max_attempts=3, retryable_codes=numbers)
    assert policy == RetryPolicy(max_attempts=3)
    running.service.unary_failures = [unavailable(0.5)]
    running.service.event_errors = {"m-1": [delivery_error(14, "AMPERITY_UNAVAILABLE", 0.1)]}
    client = make_client(retry=policy)

    assert (await client.deliver(EVENT)).message_id == "m-1"
    assert running.service.calls == ["Deliver", "Deliver"]
    streamed = [response async for response in client.deliver_many([EVENT])]
    assert [response.HasField("result") for response in streamed] == [True]
    assert running.service.received["m-1"] == 2


@pytest.mark.parametrize(
    ("codes", "error", "got"),
    [
        ([14, 99], ValueError, "got 99 in it."),
        (["14"], TypeError, "got '14' in it."),
        ([True], TypeError, "got True in it."),
        (14, TypeError, "got 14."),
        ("14", TypeError, "got '14'."),
    ],
)
def test_retryable_codes_that_are_no_status_codes_are_refused(
    codes: object, error: type[Exception], got: str
) -> None:
    """Refused when the policy is built, as the Node client refuses its retryableCodes."""
    wanted = "a set of gRPC status codes, grpc.StatusCode members or their numbers 0 to 16"
    with pytest.raises(
        error, match=rf"^RetryPolicy\.retryable_codes must be {wanted}, e\.g\."
    ) as raised:
        RetryPolicy(retryable_codes=codes)  # type: ignore[arg-type]
    assert str(raised.value).endswith(got)


async def test_an_infinite_total_timeout_means_no_overall_deadline(
    running: RunningService, make_client: ClientFactory, sync_sleep: FakeSyncSleep
) -> None:
    """math.inf is accepted: attempts keep their own deadline and retries still happen."""
    running.service.unary_failures = [unavailable(0.5)]
    policy = RetryPolicy(max_attempts=3, total_timeout=math.inf)
    client = make_client(retry=policy)

    delivered = await client.deliver(EVENT)

    assert delivered.message_id == "m-1"
    assert running.service.calls == ["Deliver", "Deliver"]
    # default_timeout (10 s) per attempt; grpc rounds the timeout it sends up a little.
    assert all(deadline is not None and deadline < 11 for deadline in running.service.deadlines)
    sync_client = AmperityClient(
        running.target, integration_id="shop", retry=policy, sleep=sync_sleep
    )
    try:
        profile = await asyncio.to_thread(sync_client.browser_profile, "a-1")
    finally:
        sync_client.close()
    assert profile.provider == "amperity"
