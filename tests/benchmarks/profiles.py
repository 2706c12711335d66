"""Run profiles: ``--quick`` for a few minutes on two cores, the full one for the record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of one run."""

    name: str
    duration: float
    warmup: float
    concurrency: int
    hot_visitors: int
    economy_events: int
    economy_visitors: int
    memory_visitors: int
    rounds: int
    """Interleaved rounds of ours and the baseline in throughput and CPU comparisons."""
    round_duration: float
    """Measured seconds of each such round (after ``warmup``)."""


QUICK = Profile("quick", 5.0, 1.5, 32, 200, 10_000, 10_000, 300_000, 3, 3.0)
FULL = Profile("full", 15.0, 3.0, 32, 1_000, 100_000, 10_000, 1_000_000, 5, 6.0)
