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


# Quick memory pushes 600,000 visitors: without the pinned mmap threshold (allocator.py)
# glibc settled in one-off steps for the first ~8 turnovers of the store (the bound is
# reached at ~44,000 visitors; steps up to 375,000 visitors, then flat to 1,500,000), and
# a shorter run would not tell a late step from a leak.
QUICK = Profile("quick", 5.0, 1.5, 32, 200, 10_000, 10_000, 600_000, 3, 3.0)
FULL = Profile("full", 15.0, 3.0, 32, 1_000, 100_000, 10_000, 1_000_000, 5, 6.0)
