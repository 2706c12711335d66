"""The per-client token buckets: bounded memory, and forgetting a bucket grants nothing."""

from __future__ import annotations

import pytest

from amperity_signal.gateway.ratelimit import TokenBuckets

from .conftest import FakeClock

RATE = 2.0
BURST = 4
REFILL = BURST / RATE
"""Seconds after its last request at which any bucket is full again."""


def _allowed(buckets: TokenBuckets, key: str, times: int) -> int:
    """How many of ``times`` requests from ``key`` may proceed."""
    return sum(buckets.take(key) == 0.0 for _ in range(times))


def test_the_table_never_holds_more_than_max_clients_buckets(clock: FakeClock) -> None:
    """50,000 distinct clients, in bursts and spread over time, leave at most 100 buckets."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=100)
    highest = 0
    for wave in range(50):
        for client in range(1_000):
            buckets.take(f"198.51.{wave}.{client}")
            highest = max(highest, buckets.tracked)
        clock.now += REFILL / 3
    assert highest == 100
    clock.now += REFILL
    for client in range(1_000):
        buckets.take(f"203.0.113.{client}")
    assert buckets.tracked == 100


def test_other_clients_cannot_push_out_a_limited_clients_bucket(clock: FakeClock) -> None:
    """A client that spent its burst is still limited after max_clients others arrive."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=10)
    assert _allowed(buckets, "attacker", BURST + 1) == BURST
    for client in range(10):
        buckets.take(f"other-{client}")
    assert buckets.take("attacker") > 0.0


def test_cycling_through_more_addresses_than_the_table_holds_stays_limited(
    clock: FakeClock,
) -> None:
    """11 addresses against a table of 10, 100 rounds at once: 10 bursts plus one, no more."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=10)
    allowed = sum(_allowed(buckets, f"2001:db8::{n}", 1) for _ in range(100) for n in range(11))
    assert allowed == 10 * BURST + BURST  # ten tracked buckets and the shared overflow one
    assert buckets.tracked == 10


def test_a_refilled_bucket_is_forgotten_for_a_newcomer(clock: FakeClock) -> None:
    """Once a bucket has refilled, a new client takes its place; the old one starts full."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=1)
    assert _allowed(buckets, "first", BURST + 1) == BURST
    assert _allowed(buckets, "second", 1) == 1  # the overflow bucket: "first" is not full
    clock.now += REFILL
    assert _allowed(buckets, "third", 1) == 1  # takes the slot "first" held
    assert _allowed(buckets, "first", BURST + 1) == BURST  # as a remembered full bucket would


def test_clients_without_a_bucket_share_one_while_the_table_is_busy(clock: FakeClock) -> None:
    """Untracked clients together get one client's burst and rate, not one each."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=2)
    _allowed(buckets, "a", BURST)
    _allowed(buckets, "b", BURST)
    assert sum(_allowed(buckets, f"new-{n}", 1) for n in range(BURST * 3)) == BURST
    clock.now += 1 / RATE
    # "a" and "b" have not refilled yet: the overflow bucket earned one token meanwhile.
    assert sum(_allowed(buckets, f"late-{n}", 1) for n in range(3)) == 1


def test_max_clients_below_one_is_refused() -> None:
    """A table without room would forget every bucket at once: refused, naming the setting."""
    with pytest.raises(ValueError, match="rate_limit_max_clients"):
        TokenBuckets(RATE, BURST, FakeClock(), max_clients=0)
