"""What the reliability tests share: events, a patient caller, and the lost/duplicate count.

A run streams events through ``AsyncAmperityClient.deliver_many`` (the client's own
at-least-once machinery, with budgets long enough to outlast the injected faults),
records every acknowledgement, then asks the sandbox's inspector what Amperity actually
received. ``RunReport`` says what was lost (offered but never received), what was
acknowledged without being received (a broken promise), and which events arrived twice.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amperity_signal_client import AsyncAmperityClient, RetryPolicy
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import Sandbox
from tests.reliability.profile import PROFILE
from tests.support import STREAM

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "reliability"

# The caller outlasts every fault the tests inject: per-event retries far beyond the
# connector's own, and a stream that is reopened for two minutes after the last answer.
CALLER_RETRY = RetryPolicy(max_attempts=40, initial_backoff=0.2, max_backoff=2.0, total_timeout=600)
STREAM_RETRY = RetryPolicy(max_attempts=60, initial_backoff=0.2, max_backoff=2.0, total_timeout=120)

_TRACKS = ("Product Viewed", "Product Added", "Order Completed", "Checkout Started")


def make_events(count: int, run: str, *, visitors: int = 200) -> list[pb.Event]:
    """``count`` distinct events (tracks, pages, identifies) with unique message ids."""
    rng = random.Random(run)
    events: list[pb.Event] = []
    for index in range(count):
        kind = rng.choice(("track", "track", "track", "page", "identify"))
        event = pb.Event(
            message_id=f"{run}-{index:06d}",
            type=kind,
            anonymous_id=f"anon_{run}_{index % visitors}",
        )
        if kind == "track":
            event.event = rng.choice(_TRACKS)
            event.properties.update({"product_id": f"sku-{index % 50}", "price": 19.5})
        elif kind == "page":
            event.context.page.path = f"/p/{index % 30}"
        events.append(event)
    return events


def patient_client(target: str, *, idle_timeout: float = 20.0) -> AsyncAmperityClient:
    """A client with budgets that outlast the injected faults and a restart."""
    return AsyncAmperityClient(
        target,
        integration_id="web",
        retry=CALLER_RETRY,
        stream_retry=STREAM_RETRY,
        stream_idle_timeout=idle_timeout,
    )


@dataclass
class Outcome:
    """What the caller saw: acknowledged message ids, final errors, the latest answer."""

    acknowledged: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    last: pb.DeliverStreamResponse | None = None


async def stream_all(
    client: AsyncAmperityClient,
    events: Iterable[pb.Event],
    *,
    on_answer: Callable[[Outcome], Awaitable[None]] | None = None,
    concurrency: int = 64,
) -> Outcome:
    """Run ``deliver_many`` to the end; ``on_answer`` sees the outcome after each answer."""
    outcome = Outcome()
    started = time.monotonic()
    async for response in client.deliver_many(events, concurrency=concurrency):
        if response.HasField("error"):
            outcome.errors[response.message_id] = (
                f"{response.error.reason}: {response.error.message}"
            )
        else:
            outcome.acknowledged.append(response.message_id)
        outcome.last = response
        if on_answer is not None:
            await on_answer(outcome)
    outcome.elapsed = time.monotonic() - started
    return outcome


async def received(sandbox: Sandbox) -> Counter[str]:
    """How often each message id reached the sandbox's realtime stream (202s only)."""
    events = await sandbox.events(stream=STREAM, limit=100_000)
    return Counter(str(e["body"].get("message_id")) for e in events if e["status"] == 202)


@dataclass
class RunReport:
    """Offered vs acknowledged vs received for one run."""

    name: str
    offered: list[str]
    outcome: Outcome
    found: Counter[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> list[str]:
        """Offered, never received by Amperity."""
        return [m for m in self.offered if self.found[m] == 0]

    @property
    def acknowledged_but_missing(self) -> list[str]:
        """Acknowledged OK to the caller, yet never received: a broken promise."""
        return [m for m in self.outcome.acknowledged if self.found[m] == 0]

    @property
    def duplicates(self) -> dict[str, int]:
        """Message ids received more than once, with their counts."""
        return {m: n for m, n in self.found.items() if n > 1}

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures of the run."""
        duplicates = self.duplicates
        return {
            "name": self.name,
            "profile": PROFILE.name,
            "offered": len(self.offered),
            "acknowledged": len(set(self.outcome.acknowledged)),
            "final_errors": len(self.outcome.errors),
            "found_in_sandbox": sum(1 for m in self.offered if self.found[m] > 0),
            "lost": len(self.lost),
            "acknowledged_but_missing": len(self.acknowledged_but_missing),
            "duplicates": len(duplicates),
            "duplicate_deliveries": sum(n - 1 for n in duplicates.values()),
            "duplicate_ids": dict(sorted(duplicates.items())[:50]),
            "error_samples": dict(list(self.outcome.errors.items())[:10]),
            "elapsed_seconds": round(self.outcome.elapsed, 2),
            **self.extra,
        }

    def write(self) -> dict[str, Any]:
        """Print the summary and write it to ``artifacts/reliability/<name>.json``."""
        data = self.summary()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{self.name}.json").write_text(json.dumps(data, indent=2) + "\n")
        shown = {k: v for k, v in data.items() if k not in ("duplicate_ids", "error_samples")}
        print(f"\n[{self.name}] {json.dumps(shown)}")
        if data["duplicates"]:
            print(f"[{self.name}] duplicates: {data['duplicate_ids']}")
        return data
