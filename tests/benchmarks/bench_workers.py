"""(6) Workers: ``serve --workers 2`` (SO_REUSEPORT) vs one worker, Enrich cache hits.

Both services listen on a fixed port; the load generator opens several channels, each with
its own subchannel (``grpc.use_local_subchannel_pool``), so the kernel spreads the
connections across the workers. On a two-core machine the generator competes with the
workers for the cores, so the ratio is a floor of what two workers give.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.benchmarks import loadgen
from tests.benchmarks.bench_enrich import HOT_CACHE, enrich_requests, warm
from tests.benchmarks.common import ENRICH_METHOD, PYTHON, Processes, ratio
from tests.benchmarks.profiles import Profile

CHANNELS = 8


async def _rate(profile: Profile, workers: int) -> dict[str, Any]:
    processes = Processes()
    try:
        sink = await processes.start(
            [PYTHON, "-m", "tests.benchmarks.sink"], "sink listening on ", "sink"
        )
        sink_url = sink.output_value("sink listening on ")
        # Two workers and a fixed port: Processes.service picks a free port when workers > 1;
        # one worker is started the same way for a like-for-like baseline.
        _, target = await processes.service(
            sink_url, cache=HOT_CACHE, workers=workers, rate_limit_per_second=10_000
        )
        payloads = enrich_requests(profile.hot_visitors)
        # Warm every worker's own memory cache: several passes over fresh connections.
        for _ in range(2 * workers):
            await warm(target, ENRICH_METHOD, payloads)
        return await asyncio.to_thread(
            loadgen.run_in_process,
            loadgen.grpc_closed,
            target,
            ENRICH_METHOD,
            payloads,
            profile.concurrency,
            profile.duration,
            profile.warmup,
            CHANNELS,
        )
    finally:
        await processes.close()


async def run(profile: Profile) -> dict[str, Any]:
    """Enrich RPC/s with two workers against one, same load."""
    one = await _rate(profile, 1)
    two = await _rate(profile, 2)
    scaling = ratio(two["rate"], one["rate"])
    return {
        "table": [
            (
                f"workers=2 enrich RPC/s ({CHANNELS} channels, c={profile.concurrency})",
                f"{two['rate']:.0f}",
                f"{one['rate']:.0f} 1 worker",
                f"{scaling:.2f}",
                "(2 cores incl. the load generator)",
            )
        ],
        "channels": CHANNELS,
        "one_worker": one,
        "two_workers": two,
        "ratios": {"scaling": scaling},
    }
