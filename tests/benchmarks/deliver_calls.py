"""Deliver calls in process, each window marked for callgrind (deterministic counts).

    valgrind --tool=callgrind --dump-before=os_getppid python -m tests.benchmarks.deliver_calls

(with the venv's python) writes the startup to part 1 and 300 calls to part 2: its
``summary`` line over 300 is the instructions per Deliver. As ``enrich_hits`` (whose
``--cold`` it shares): the registered Deliver handler as ``inprocess`` runs it, the
Deliver benchmark's track events, enrichment cached, Amperity answered in process by
``httpx.MockTransport`` (its cost, building a 202, is included).
"""

from __future__ import annotations

from typing import Any

import uvloop

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.benchmarks.bench_deliver import deliver_requests
from tests.benchmarks.enrich_hits import VISITORS, WARM_UP, arguments, marked_calls
from tests.benchmarks.inprocess import _Context, bench_server


async def run(calls: int, *, cold: bool) -> None:
    """Warm the enrichment cache, then make ``calls`` Delivers between the markers."""
    _, _, methods = bench_server()
    context: Any = _Context()
    deliver = methods["Deliver"]
    raw = deliver_requests(VISITORS)
    for i in range(VISITORS + WARM_UP):  # the first round fills the enrichment cache
        response = await deliver(pb.DeliverRequest.FromString(raw[i % VISITORS]), context)
        assert i < VISITORS or response.enrichment.cache_status == pb.CACHE_STATUS_HIT
    await marked_calls(
        calls,
        lambda i: deliver(pb.DeliverRequest.FromString(raw[i % VISITORS]), context),
        cold=cold,
    )


def main() -> None:
    """Parse the arguments and run."""
    args = arguments(__doc__ or "", "call")
    uvloop.run(run(args.calls, cold=args.cold))


if __name__ == "__main__":
    main()
