"""Enrich cache hits in process, each window marked for callgrind (deterministic counts).

    valgrind --tool=callgrind --dump-before=os_getppid python -m tests.benchmarks.enrich_hits

(with the venv's python) writes the startup to part 1 and 300 hits to part 2
(``callgrind.out.PID.2``): its ``summary`` line over 300 is the instructions per hit,
repeatable within ~1k. With ``--cold`` the caches are evicted before each hit
(``inprocess.COLD_BYTES``) and each hit gets its own part (the even ones: 2, 4, ...); run
it with ``--cache-sim=yes --LL=2097152,16,64`` and the misses of those parts are how much
code and memory one cold hit touches, the figure that predicts a hit under load
(docs/benchmarks.md, sessions 6 and 16). The visitors are the Enrich benchmark's (a third
identified by email), the integration ``inprocess``'s. ``deliver_calls`` does the same for
Deliver with ``marked_calls``. ``--switch`` alternates each visitor between two categories
whose personalised results differ (every personalised hit then copies its result over the
profile's latest, session 23), and ``--redis URL`` caches in that Redis instead of memory
(the Ir are the client's only). The canned Amperity resolves every visitor to one profile,
so without ``--switch`` its latest entry changes category on every hit too, but all
categories' results are the same bytes: the memory store copies each hit's entry, Redis
finds the bytes equal and copies nothing.
"""

from __future__ import annotations

import argparse
import gc
import os
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
import uvloop

from amperity_signal.service.app import SERVICE_NAME
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.benchmarks.bench_enrich import enrich_requests
from tests.benchmarks.inprocess import _Context, _evictor, bench_server

VISITORS = 30
WARM_UP = 100


async def marked_calls(calls: int, call: Callable[[int], Awaitable[Any]], *, cold: bool) -> None:
    """``call(i)`` for ``calls`` values of ``i``, between ``os.getppid()`` markers.

    Warm: one window around all the calls. Cold: the caches evicted before each call, and a
    window around each. Startup objects are frozen first, as serve does.
    """
    gc.collect()
    gc.freeze()  # as serve does
    evict = _evictor()
    if not cold:
        os.getppid()
    for i in range(calls):
        if cold:
            evict()
            os.getppid()
        await call(i)
        if cold:
            os.getppid()
    if not cold:
        os.getppid()


async def run(hits: int, *, cold: bool, switch: bool = False, redis_url: str = "") -> None:
    """Fill the cache, then make ``hits`` Enrich hits between ``os.getppid()`` markers.

    Each hit parses its request and serializes its response with the method's own
    serializer (none since session 17: the handler answers bytes), as gRPC does. With
    ``switch`` each visitor's calls alternate between two categories, whose personalised
    results differ, so every hit's differs from the visitor's latest (and is copied); with
    ``redis_url`` the cache is that Redis (flushed first), not the memory store.
    """
    if redis_url:
        flush = redis.Redis.from_url(redis_url)
        await flush.flushdb()
        await flush.aclose()
    _, service, _ = bench_server(redis_url or None, contextual=switch)
    context: Any = _Context()
    handler = service.handlers[f"/{SERVICE_NAME}/Enrich"]
    enrich: Any = handler.unary_unary
    serialize = handler.response_serializer or _as_sent
    contexts = (enrich_requests(VISITORS), enrich_requests(VISITORS, shift=1))
    turns = [0] * VISITORS

    async def hit(i: int) -> bytes:
        visitor = i % VISITORS
        if switch:
            turns[visitor] ^= 1
        request = pb.EnrichRequest.FromString(contexts[turns[visitor]][visitor])
        answer: bytes = serialize(await enrich(request, context))
        return answer

    for i in range(VISITORS * (1 + switch) + WARM_UP):  # the first round(s) fill the cache
        response = pb.EnrichResponse.FromString(await hit(i))
        assert i < VISITORS or response.cache_status == pb.CACHE_STATUS_HIT
    await marked_calls(hits, hit, cold=cold)


def _as_sent(response: bytes) -> bytes:
    return response


def arguments(doc: str, what: str) -> argparse.Namespace:
    """The command line of a callgrind script: how many calls, and whether cold."""
    return argument_parser(doc, what).parse_args()


def argument_parser(doc: str, what: str) -> argparse.ArgumentParser:
    """``arguments``' parser, for a script that adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("calls", type=int, nargs="?", default=300)
    parser.add_argument("--cold", action="store_true", help=f"evict the caches before each {what}")
    return parser


def main() -> None:
    """Parse the arguments and run."""
    parser = argument_parser(__doc__ or "", "hit")
    parser.add_argument(
        "--switch",
        action="store_true",
        help="alternate each visitor between two categories (every hit changes its latest)",
    )
    parser.add_argument("--redis", default="", help="a Redis URL to cache in (flushed first)")
    args = parser.parse_args()
    uvloop.run(run(args.calls, cold=args.cold, switch=args.switch, redis_url=args.redis))


if __name__ == "__main__":
    main()
