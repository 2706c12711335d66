"""The ``reason`` label holds reason codes only: a closed set, never a message's text."""

from __future__ import annotations

import pytest

from amperity_signal.metrics import NO_REASON, OTHER_REASON, reason_label


@pytest.mark.parametrize("code", ["STREAM_NOT_FOUND", "RATE_LIMITED_LOCALLY", "TIMEOUT"])
def test_a_reason_code_is_its_own_label(code: str) -> None:
    """The service's codes (UPPER_SNAKE) are the label's values as they are."""
    assert reason_label(code) == code


def test_no_reason_stays_empty() -> None:
    """Outcomes without a reason keep the empty value, which Prometheus stores as no label."""
    assert reason_label(NO_REASON) == ""


@pytest.mark.parametrize(
    "text",
    [
        "no such host acme.amperity.com",
        "Stream_Not_Found",
        "A" * 65,
        "STREAM_NOT_FOUND\n",
        "pk_live_acme_web",
    ],
)
def test_anything_else_counts_as_other_not_as_a_series_of_its_own(text: str) -> None:
    """Free text (a message, a key, a caller's words) never becomes a label value."""
    assert reason_label(text) == OTHER_REASON
