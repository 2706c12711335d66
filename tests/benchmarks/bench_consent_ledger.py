r"""Consent-ledger writes against a real Redis: microseconds per remember(), for before/after runs.

Not part of ``make bench``: like ``bench_identity_merge`` it compares two versions of the
code, one fresh process per version and round (``PYTHONPATH=<old tree>/server`` puts an
older checkout first)::

    redis-server --port 6390 --save '' --appendonly no &
    for round in 1 2 3 4 5; do
      PYTHONPATH=/tmp/old/server .venv/bin/python -m tests.benchmarks.bench_consent_ledger \
          --redis-url redis://127.0.0.1:6390/0 --label before
      .venv/bin/python -m tests.benchmarks.bench_consent_ledger \
          --redis-url redis://127.0.0.1:6390/0 --label after
    done

Uses only ``ConsentLedger.remember`` (what Deliver calls when an integration sets
``browser_consent``), which every version has. Scenarios, each on a flushed database:
``repeat`` (one visitor's consent on every event, each event newer: the common case, and
one that writes, to advance ``at``), ``retry`` (the same event again: nothing to change),
``late`` (events older than the state kept: nothing to write), ``new`` (a new visitor per
event) and ``concurrent`` (``repeat`` over 100 visitors, 32 events in flight). Prints one
JSON line per scenario: wall-clock and client CPU microseconds per event, the round trips
per event (from ``INFO commandstats``: GET, SET and EVALSHA sent by the client; Redis
counts a script's own GET and SET there too, which are taken off: every version that
scripts reads exactly once in its script and never sends a SET itself), and Redis's own
CPU per event (``INFO cpu``, user plus system: parsing, replying and the network as well
as the commands, so a round trip saved shows there too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as redis

from amperity_signal.browser import ConsentLedger
from amperity_signal.config import CacheSettings
from amperity_signal.enrich import build_cache
from amperity_signal.metrics import Metrics
from tests.benchmarks.bench_identity_merge import IN_FLIGHT, WARM_UP, _timed

CONSENT = {"functional": True, "marketing": True, "analytics": False}
VISITORS = 100
"""Visitors of the ``concurrent`` scenario: several events of each are in flight at once."""


def _event(visitor: int, moment: datetime) -> dict[str, Any]:
    """An event as Deliver hands it to the ledger (its timestamp already a datetime)."""
    return {
        "type": "track",
        "anonymous_id": f"anon_{visitor}",
        "timestamp": moment,
        "context": {"consent": CONSENT},
    }


async def _redis_cpu(admin: redis.Redis) -> float:
    """Redis's CPU seconds so far (user plus system, main thread and the rest)."""
    cpu = await admin.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def _round_trips(admin: redis.Redis, events: int) -> float:
    """Commands the ledger sent per event since the last CONFIG RESETSTAT (see above)."""
    stats = await admin.info("commandstats")
    gets, sets, scripts = (
        stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "set", "evalsha")
    )
    if scripts:
        # A script's own GET counts under GET too, so the GETs counted are those sent plus
        # one per EVALSHA sent; its SET counts under SET, though the client sent none.
        return float(gets) / events
    return float(gets + sets) / events


async def main() -> None:
    """Run every scenario once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    settings = CacheSettings(backend="redis", redis_url=args.redis_url, jitter=0)
    backend = build_cache(settings, Metrics())
    ledger = ConsentLedger(backend)
    admin = redis.Redis.from_url(args.redis_url)
    # Every instant lies in the past: the ledger counts one past its clock as now.
    start = datetime.now(UTC) - timedelta(days=1)
    kept_at = start + timedelta(hours=1)
    step = timedelta(milliseconds=1)
    offset = 0

    async def repeat(number: int) -> None:
        await ledger.remember("web", _event(0, start + (offset + number) * step))

    async def retry(_number: int) -> None:
        await ledger.remember("web", _event(0, kept_at))

    async def late(number: int) -> None:
        await ledger.remember("web", _event(0, start + (offset + number) * step))

    async def new(number: int) -> None:
        await ledger.remember("web", _event(offset + number, start))

    async def concurrent(number: int) -> None:
        moment = start + (offset + number) * step
        await ledger.remember("web", _event(number % VISITORS, moment))

    scenarios: tuple[tuple[str, Callable[[int], Awaitable[None]], int], ...] = (
        ("repeat", repeat, 1),
        ("retry", retry, 1),
        ("late", late, 1),
        ("new", new, 1),
        ("concurrent", concurrent, IN_FLIGHT),
    )
    try:
        for scenario, remember, in_flight in scenarios:
            await admin.flushall()
            if scenario in ("retry", "late"):  # the state kept is newer than the events
                await ledger.remember("web", _event(0, kept_at))
            await _timed(WARM_UP, remember, 1)
            offset += WARM_UP
            await admin.config_resetstat()
            redis_cpu = await _redis_cpu(admin)
            wall, cpu = await _timed(args.events, remember, in_flight)
            redis_cpu = await _redis_cpu(admin) - redis_cpu
            round_trips = await _round_trips(admin, args.events)
            offset += args.events
            if not backend.available:
                raise SystemExit("Redis stopped answering during the run")
            figures = {
                "label": args.label,
                "scenario": scenario,
                "wall_us": round(wall, 1),
                "client_cpu_us": round(cpu, 1),
                "round_trips": round(round_trips, 3),
                "redis_cpu_us": round(redis_cpu / args.events * 1e6, 1),
            }
            print(json.dumps(figures), flush=True)
    finally:
        await admin.aclose()
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
