"""At least once under Amperity faults: 503s, drops, cut bodies, 429 bursts, latency spikes.

The caller (the Python client's ``deliver_many``) streams every event through
``DeliverStream`` while the sandbox misbehaves; afterwards every offered message id is in
the sandbox's inspector, nothing acknowledged is missing, duplicates are counted and
written to ``artifacts/reliability/faults.json``, and no process died. Each event whose
accepted answer was cut after its status line is tied, by its message id in the sandbox's
request log, to exactly one accepted POST and none after it: a cut acceptance is never
re-sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.stack import Sandbox, Stack
from tests.reliability.profile import PROFILE
from tests.reliability.support import (
    Outcome,
    RunReport,
    make_events,
    patient_client,
    received,
    stream_all,
)

pytestmark = pytest.mark.e2e

SPIKE_MS = 2_000


def cut_acceptances(posts: list[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """Events whose 2xx answer was cut: POSTs each took in all, and any that broke the rule.

    The rule, read from the sandbox's request log by message id: such an event was
    accepted by that one POST only and never posted after it. Earlier attempts (answered
    503 or 429, dropped) are the retries that led to it.
    """
    by_message: dict[str, list[dict[str, Any]]] = {}
    for post in posts:
        by_message.setdefault(post["message_id"], []).append(post)
    attempts: dict[str, int] = {}
    broken: list[str] = []
    for post in posts:
        if not (post["body_cut"] and 200 <= post["status"] < 300):
            continue
        message_id = post["message_id"]
        tried = by_message[message_id]
        attempts[message_id] = len(tried)
        accepted = sum(1 for p in tried if 200 <= p["status"] < 300)
        # Arrival times: a re-send arrives after the cut answer went out.
        later = sum(1 for p in tried if p["timestamp"] > post["timestamp"])
        if accepted != 1 or later:
            broken.append(f"{message_id}: accepted {accepted}x, {later} POST(s) after the cut")
    return attempts, broken


async def storm(sandbox: Sandbox, steps: list[asyncio.Event]) -> int:
    """Inject a 429 burst and a 2 s latency spike as each step is reached; how many spikes."""
    for step in steps:
        await step.wait()
        await sandbox.fault(burst_429=30, kind="events", retry_after=1)
        await sandbox.fault(
            latency_ms=SPIKE_MS, latency_rate=1.0, kind="events", count=PROFILE.spike_requests
        )
    return len(steps)


async def test_every_event_reaches_amperity_through_503s_drops_cuts_429_bursts_and_spikes(
    stack: Stack,
) -> None:
    """30% 503s, 5% drops, 5% cut bodies, 429 bursts, 2 s spikes: every message id arrives."""
    sandbox = await stack.sandbox()
    # Five seconds per attempt outlasts a 2 s spike; eight retries make a lost event
    # (0.35 ** 9 per event) rare, and the caller re-sends the rare one that runs out.
    service = await stack.service(sandbox, max_retries=8, request_timeout=5.0)
    await sandbox.fault(status=503, rate=0.3, kind="events")
    await sandbox.fault(drop_rate=0.05, kind="events")
    # Cuts the body of whichever answer comes, after its status line: a cut 202 is taken
    # as delivered (not sent again), a cut 503 or 429 is retried as that status.
    await sandbox.fault(cut_body_rate=0.05, kind="events")
    events = make_events(PROFILE.faulted_events, "faults")
    # Spike n fires once n / (spikes + 1) of the events are answered.
    steps = [asyncio.Event() for _ in range(PROFILE.latency_spikes)]

    async def count(outcome: Outcome) -> None:
        answered = len(outcome.acknowledged) + len(outcome.errors)
        for index, step in enumerate(steps, start=1):
            if answered >= len(events) * index / (len(steps) + 1):
                step.set()

    spikes = asyncio.create_task(storm(sandbox, steps))
    async with patient_client(service.grpc_target) as client:
        outcome = await stream_all(client, events, on_answer=count)
    injected = await asyncio.wait_for(spikes, 5)
    await sandbox.clear_faults()
    stats = await sandbox.stats()
    posts = await sandbox.requests(path_prefix="/prof/events/")
    cut_accepted, resent = cut_acceptances(posts)
    cut_202 = [r for r in posts if r["body_cut"] and r["status"] == 202]
    report = RunReport(
        "faults",
        [e.message_id for e in events],
        outcome,
        await received(sandbox),
        extra={
            "latency_spikes": injected,
            "sandbox_by_status": stats["by_status"],
            "sandbox_dropped": stats["dropped"],
            "sandbox_body_cut": stats["body_cut"],
            "sandbox_body_cut_202": len(cut_202),
            "cut_accepted_events": len(cut_accepted),
            "cut_accepted_posted_once": sum(1 for n in cut_accepted.values() if n == 1),
            "sandbox_throttled": stats["throttled"],
        },
    )
    summary = report.write()

    assert outcome.errors == {}
    assert report.lost == []
    assert report.acknowledged_but_missing == []
    assert summary["acknowledged"] == len(events)
    # The faults really fired: the run is only a proof if Amperity misbehaved.
    assert stats["by_status"].get("503", 0) > len(events) * 0.2
    assert stats["dropped"] > 0 and stats["throttled"] >= 30 * injected
    assert stats["body_cut"] > 0 and cut_202
    # The request log holds every event POST (the ring did not overflow), each with its
    # message id, so every cut acceptance is checked against all of its event's POSTs.
    assert len(posts) == stats["by_kind"]["events"]
    assert all(r["message_id"] for r in posts)
    assert resent == []
    assert all(report.found[m] == 1 for m in cut_accepted)
    assert service.process.proc.returncode is None, "the service died"
    assert sandbox.process.proc.returncode is None, "the sandbox died"
