"""The chaos profile: ``quick`` (default, inside ``make test``) or ``long`` (``make chaos``).

The quick profile runs the same tests with a smaller N, so ``make test`` proves every
property in a few minutes; ``CHAOS_PROFILE=long`` runs the sizes the issue asks for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Sizes of one profile.

    Attributes:
        name: ``quick`` or ``long``.
        faulted_events: Events streamed through the fault storm (test 1).
        latency_spikes: How many 2 s latency spikes the storm injects.
        spike_requests: Requests each spike delays.
        crash_events: Events streamed across a kill -9 (test 2).
        shutdown_events: Events streamed across a SIGTERM (test 4).
        redis_events: Enriched events streamed across a Redis outage (test 3).
        grpc_fuzz_cases: Hypothesis examples per gRPC fuzz test.
        gateway_fuzz_cases: Schemathesis examples per gateway operation.
    """

    name: str
    faulted_events: int
    latency_spikes: int
    spike_requests: int
    crash_events: int
    shutdown_events: int
    redis_events: int
    grpc_fuzz_cases: int
    gateway_fuzz_cases: int


QUICK = Profile(
    name="quick",
    faulted_events=1_500,
    latency_spikes=2,
    spike_requests=40,
    crash_events=1_000,
    shutdown_events=1_000,
    redis_events=400,
    grpc_fuzz_cases=400,
    gateway_fuzz_cases=30,
)
LONG = Profile(
    name="long",
    faulted_events=10_000,
    latency_spikes=8,
    spike_requests=150,
    crash_events=10_000,
    shutdown_events=10_000,
    redis_events=3_000,
    grpc_fuzz_cases=4_000,
    gateway_fuzz_cases=600,
)


def current() -> Profile:
    """The profile named by ``CHAOS_PROFILE`` (``quick`` when unset)."""
    name = os.environ.get("CHAOS_PROFILE", "quick").strip().lower() or "quick"
    if name not in ("quick", "long"):
        raise ValueError(f"CHAOS_PROFILE must be quick or long, not {name!r}.")
    return LONG if name == "long" else QUICK


PROFILE = current()
