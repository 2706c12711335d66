"""The Live Events text of a delivery cancelled once its POST had begun, from its progress."""

from __future__ import annotations

import pytest

from amperity_signal.amperity import CallProgress, Stage
from amperity_signal.delivery import cancelled_while_posting, may_have_arrived

WHY = "the caller hung up"


@pytest.mark.parametrize(
    ("progress", "says"),
    [
        (
            CallProgress(1, Stage.RATE_LIMIT),
            "cancelled before the event was posted to Amperity (the caller hung up), while "
            "waiting for a rate-limit slot: it was not sent; the caller decides whether to "
            "send it again.",
        ),
        (
            CallProgress(1, Stage.CONNECTING),
            "cancelled before the event was posted to Amperity (the caller hung up), while "
            "opening a connection to Amperity: it was not sent; the caller decides whether "
            "to send it again.",
        ),
        (
            CallProgress(3, Stage.POOL, status=503),
            "cancelled before attempt 3 was posted to Amperity (the caller hung up), while "
            "waiting for a connection: it was not sent; attempt 2 was answered 503; the "
            "caller decides whether to send it again.",
        ),
        (
            CallProgress(2, Stage.BACKOFF, unanswered=1),
            "cancelled before attempt 2 was posted to Amperity (the caller hung up), while "
            "waiting to retry: it was not sent; attempt 1 got no answer and may have reached "
            "Amperity: look for it there by message_id before sending it again.",
        ),
        (
            CallProgress(3, Stage.BACKOFF, status=503, unanswered=1),
            "cancelled before attempt 3 was posted to Amperity (the caller hung up), while "
            "waiting to retry: it was not sent; attempt 2 was answered 503; attempt 1 got no "
            "answer and may have reached Amperity: look for it there by message_id before "
            "sending it again.",
        ),
        (
            CallProgress(2, Stage.SENDING, unanswered=1),
            "cancelled while the event was being posted to Amperity (the caller hung up): "
            "attempt 2's POST may have been sent and the event may well have reached "
            "Amperity; look for it there by message_id before sending it again.",
        ),
        (
            CallProgress(1, Stage.ANSWERED, status=204),
            "cancelled after Amperity answered 204 to attempt 1 (the caller hung up), so the "
            "event reached Amperity; do not send it again.",
        ),
        (
            CallProgress(2, Stage.ANSWERED, status=503),
            "cancelled after Amperity answered 503 to attempt 2 (the caller hung up), which "
            "does not accept the event; the caller decides whether to send it again.",
        ),
    ],
    ids=lambda value: getattr(getattr(value, "stage", None), "name", "text"),
)
def test_the_record_says_whether_and_by_which_attempt_the_event_was_sent(
    progress: CallProgress, says: str
) -> None:
    """Not sent (and where it waited), maybe sent, or answered; earlier attempts that count."""
    assert cancelled_while_posting(progress, WHY) == says


@pytest.mark.parametrize(
    ("progress", "arrived"),
    [
        (CallProgress(1, Stage.RATE_LIMIT), False),
        (CallProgress(3, Stage.POOL, status=503), False),
        (CallProgress(2, Stage.ANSWERED, status=503), False),
        (CallProgress(2, Stage.SENDING), True),
        (CallProgress(2, Stage.BACKOFF, unanswered=1), True),
        (CallProgress(3, Stage.ANSWERED, status=503, unanswered=1), True),
        (CallProgress(1, Stage.ANSWERED, status=202), True),
    ],
    ids=lambda value: getattr(getattr(value, "stage", None), "name", str(value)),
)
def test_a_cancelled_call_may_have_arrived_once_sent_unanswered_or_accepted(
    progress: CallProgress, arrived: bool
) -> None:
    """Its warning is for a POST in flight, an earlier one unanswered, or a 2xx it cut."""
    assert may_have_arrived(progress) is arrived
