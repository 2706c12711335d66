"""The breaker's half-open state: one trial call after the cooldown, not a stampede."""

from __future__ import annotations

import logging

import pytest

from amperity_signal.enrich.breaker import Breaker
from amperity_signal.metrics import Metrics

from .enrich_fakes import FakeClock

COOLDOWN = 30.0


def opened(clock: FakeClock, metrics: Metrics) -> Breaker:
    """A breaker that three consecutive outages have just opened."""
    breaker = Breaker("acme", failures=3, cooldown=COOLDOWN, clock=clock, metrics=metrics)
    for _ in range(3):
        breaker.record_failure()
    return breaker


def gauge(metrics: Metrics) -> float | None:
    """The breaker_open gauge of integration acme."""
    return metrics.registry.get_sample_value(
        "amperity_signal_breaker_open", {"integration": "acme"}
    )


def test_after_the_cooldown_one_trial_call_goes_and_the_others_wait_for_it() -> None:
    """Half-open lets one call through; the rest are refused until that call reports."""
    clock, metrics = FakeClock(), Metrics()
    breaker = opened(clock, metrics)
    assert not breaker.allow()
    clock.advance(COOLDOWN)
    assert breaker.allow()  # the trial
    assert [breaker.allow() for _ in range(5)] == [False] * 5
    assert breaker.retry_in() == COOLDOWN
    assert gauge(metrics) == 1
    breaker.record_success()
    assert [breaker.allow() for _ in range(5)] == [True] * 5
    assert gauge(metrics) == 0


def test_a_failed_trial_reopens_the_breaker_for_another_cooldown() -> None:
    """The trial's outage opens the breaker again; the next trial comes a cooldown later."""
    clock, metrics = FakeClock(), Metrics()
    breaker = opened(clock, metrics)
    clock.advance(COOLDOWN)
    assert breaker.allow()
    assert breaker.record_failure()  # reopened: logged as BREAKER_OPEN again
    clock.advance(COOLDOWN - 1)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    assert not breaker.allow()


def test_a_trial_that_never_reports_frees_its_place_after_a_cooldown() -> None:
    """A cancelled trial cannot hold the breaker half-open for ever."""
    clock, metrics = FakeClock(), Metrics()
    breaker = opened(clock, metrics)
    clock.advance(COOLDOWN)
    assert breaker.allow()  # this trial is cancelled: no success, no failure
    clock.advance(COOLDOWN - 1)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_the_breaker_closing_logs_once_that_partner_calls_resume(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The trial's answer closes the breaker: one info line naming the integration, gauge 0.

    Its opening was logged (BREAKER_OPEN) and its closing was not: an operator reading the
    logs could not tell the outage was over. Successes while closed log nothing.
    """
    clock, metrics = FakeClock(), Metrics()
    breaker = opened(clock, metrics)
    clock.advance(COOLDOWN)
    assert breaker.allow()
    assert gauge(metrics) == 1  # until the trial answers, as docs/enrich.md says
    with caplog.at_level(logging.INFO, logger="amperity_signal.enrich"):
        for _ in range(3):
            breaker.record_success()
    assert gauge(metrics) == 0
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 1, lines
    level, message = lines[0]
    assert level == "INFO"
    assert message.startswith("partner calls resume for acme")
