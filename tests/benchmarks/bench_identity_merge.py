"""Identity-map merges against a real Redis: microseconds per merge, for before/after runs.

Not part of ``make bench``: it compares two versions of the code, so it is run once per
version in alternating rounds, each time in a fresh process whose ``amperity_signal`` is the
version under test (``PYTHONPATH=<old tree>/server`` puts an older checkout first)::

    redis-server --port 6390 --save '' --appendonly no &
    for round in 1 2 3 4 5; do
      PYTHONPATH=/tmp/old/server .venv/bin/python -m tests.benchmarks.bench_identity_merge \
          --redis-url redis://127.0.0.1:6390/0 --label before
      .venv/bin/python -m tests.benchmarks.bench_identity_merge \
          --redis-url redis://127.0.0.1:6390/0 --label after
    done

Uses only ``IdentityMap.merge``, which both versions have. Scenarios, each on a flushed
database: ``repeat`` (one visitor sending the identifiers already remembered: the common
case, nothing to write), ``new`` (a new visitor per merge: an entry written), and
``concurrent`` (``new`` with 32 merges in flight). Prints one JSON line per scenario:
wall-clock and client CPU microseconds per merge, and from Redis's ``INFO commandstats``
the round trips and the server microseconds per merge (the top-level commands: EVALSHA
when the merge is a script, else GET and SET; a script's own calls count under GET/SET).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as redis

from amperity_signal.config import CacheSettings, LinkingKey
from amperity_signal.enrich import IdentityMap, JsonCache, build_cache
from amperity_signal.metrics import Metrics

LINKING_KEYS = (
    LinkingKey(key="email_sha256", source="email", hash="sha256"),
    LinkingKey(key="customer_id", source="user_id"),
)
IN_FLIGHT = 32
WARM_UP = 200


def _event(number: int) -> dict[str, object]:
    return {
        "anonymous_id": f"anon_{number}",
        "user_id": f"cust-{number}",
        "traits": {"email": f"visitor{number}@example.com"},
    }


async def _timed(
    merges: int, merge: Callable[[int], Awaitable[object]], in_flight: int
) -> tuple[float, float]:
    """Wall-clock and CPU microseconds per merge over ``merges`` calls, ``in_flight`` at once."""
    queue = iter(range(merges))

    async def worker() -> None:
        for number in queue:
            await merge(number)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall = (time.perf_counter() - started) / merges * 1e6
    return wall, (time.process_time() - cpu) / merges * 1e6


async def _server_cost(admin: redis.Redis, merges: int) -> tuple[float, float]:
    """Round trips and Redis server microseconds per merge since the last CONFIG RESETSTAT."""
    stats = await admin.info("commandstats")
    scripted = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    names = ("evalsha",) if scripted else ("get", "set")
    calls = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names)
    usec = sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in names)
    return calls / merges, usec / merges


async def main() -> None:
    """Run every scenario once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--merges", type=int, default=5_000)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    settings = CacheSettings(backend="redis", redis_url=args.redis_url, jitter=0)
    metrics = Metrics()
    backend = build_cache(settings, metrics)
    identity = IdentityMap(JsonCache(backend, metrics), ttl=settings.identity_ttl, expiry=float)
    admin = redis.Redis.from_url(args.redis_url)
    offset = 0

    async def repeat(_number: int) -> object:
        return await identity.merge("acme", _event(0), LINKING_KEYS)

    async def new(number: int) -> object:
        return await identity.merge("acme", _event(offset + number), LINKING_KEYS)

    try:
        for scenario, merge, in_flight in (
            ("repeat", repeat, 1),
            ("new", new, 1),
            ("concurrent", new, IN_FLIGHT),
        ):
            await admin.flushall()
            await _timed(WARM_UP, merge, 1)
            offset += WARM_UP
            await admin.config_resetstat()
            wall, cpu = await _timed(args.merges, merge, in_flight)
            round_trips, server = await _server_cost(admin, args.merges)
            offset += args.merges
            if not backend.available:
                raise SystemExit("Redis stopped answering during the run")
            figures = {
                "label": args.label,
                "scenario": scenario,
                "wall_us": round(wall, 1),
                "client_cpu_us": round(cpu, 1),
                "round_trips": round(round_trips, 3),
                "server_us": round(server, 2),
            }
            print(json.dumps(figures), flush=True)
    finally:
        await admin.aclose()
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
