"""In-process CPU per call of the hot paths: ``python -m tests.benchmarks.inprocess``.

A diagnostic for comparing two versions of the code, not a target: no gRPC, no load
generator, so it is far steadier than the throughput runs. Each figure is the minimum
over 7 batches of CPU time (``time.process_time``) per call, on a warm cache:

- ``enrich_hit``: parsing an EnrichRequest and the registered Enrich handler on a cache
  hit (a stand-in servicer context). Since session 5 that handler includes the RPC
  observation (request id, latency histogram), ~2-4 us that the interceptor used to add
  outside this figure;
- ``deliver``: parsing a DeliverRequest and ``AmperityServicer.Deliver`` with a mock
  Amperity transport (whose own cost, building a response, is included);
- ``browser_profile``: the generated stub over ``Service.in_process_channel()``, the
  handler called directly, and the stub over a loopback socket (client and server CPU);
- ``gateway_*``: ``GET /v1/enrich`` and the gateway benchmark's bare route, as an ASGI
  call and through uvicorn's h11 protocol, warm and (``gateway_*_h11_cold``) cold
  (``inprocess_gateway``);
- ``*_cold``: the Enrich, Deliver and BrowserProfile handlers with the CPU's caches
  evicted before each call (``COLD_BYTES`` written, one byte per cache line), the
  eviction itself not timed. Under load a handler costs ~2x its warm figure, because
  gRPC, the kernel and the load generator evict its code and data between calls; the cold
  figure reproduces that, so it predicts what a change will do under load where the warm
  one does not (docs/benchmarks.md, session 6).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import uvloop

from amperity_signal.config import Settings
from amperity_signal.service.app import Deps, Service, build_server
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.benchmarks.bench_deliver import deliver_requests
from tests.benchmarks.bench_enrich import HOT_CACHE, enrich_requests
from tests.benchmarks.inprocess_gateway import gateway_figures
from tests.benchmarks.sink import ATTRIBUTES, profile
from tests.support import integration_dict, mint_keys, settings_for

BATCHES = 7
VISITORS = 500
COLD_BYTES = 3 << 20
"""Bytes written before each cold call: a core's L2 here is 2 MiB. Calibrated in session 6:
with 3 MiB the Enrich and Deliver servicer methods take the thread CPU they take under the
Enrich and Deliver benchmarks' closed loop (docs/benchmarks.md)."""
COLD_CALLS = 500
CACHE_LINE = 64


class _Context:
    """The servicer context methods the servicer and its interceptor call."""

    def time_remaining(self) -> float:
        return 10.0

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(status)

    def set_trailing_metadata(self, metadata: Any) -> None:
        """Nothing to keep."""

    def code(self) -> None:
        return None


def _amperity(request: httpx.Request) -> httpx.Response:
    """A canned Amperity: 202 for events, a profile per identifier for lookups."""
    if request.url.path.startswith("/prof/events"):
        return httpx.Response(202)
    return httpx.Response(200, json=profile(request.url.path.encode()))


def _contextual_amperity(request: httpx.Request) -> httpx.Response:
    """``_amperity``, its personalised answers naming their context's category."""
    answer = _amperity(request)
    category = request.url.params.get("pageCategory")
    if category is None:
        return answer
    found = answer.json()
    found["attributes"] = {**found["attributes"], "RecommendedCategory": category}
    return httpx.Response(200, json=found)


async def _per_call(calls: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds of CPU per call: the minimum over ``BATCHES`` batches."""
    best = float("inf")
    for _ in range(BATCHES):
        started = time.process_time()
        for i in range(calls):
            await call(i)
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return round(best, 1)


def _evictor() -> Callable[[], None]:
    """A function that evicts the CPU's caches: it writes one byte in each line of a buffer."""
    buffer = bytearray(COLD_BYTES)
    lines = len(buffer[::CACHE_LINE])
    fill = [0]

    def evict() -> None:
        fill[0] ^= 1
        buffer[::CACHE_LINE] = bytes([fill[0]]) * lines

    return evict


async def _per_call_cold(calls: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds of CPU per call with cold caches: the minimum over ``BATCHES`` batches.

    Only the calls are timed (this thread's CPU), not the eviction before each of them.
    """
    evict = _evictor()
    best = float("inf")
    for _ in range(BATCHES):
        spent = 0
        for i in range(calls):
            evict()
            started = time.thread_time_ns()
            await call(i)
            spent += time.thread_time_ns() - started
        best = min(best, spent / calls / 1e3)
    return round(best, 1)


def bench_server(
    redis_url: str | None = None, *, contextual: bool = False
) -> tuple[Settings, Service, dict[str, Any]]:
    """The settings, the server (not started) and its unary handlers by method name.

    One integration with a personalisation mapping, a memory cache (Redis at ``redis_url``
    when given) whose entries outlive the run, and Amperity answered in process
    (``_amperity``; ``contextual``: ``_contextual_amperity``, a result per context).
    """
    table = integration_dict(
        "http://amperity.test",
        mint_keys(ttl=86_400),
        personalisation_enabled=True,
        personalisation_context_mappings=[
            {"source": "properties.category", "target": "pageCategory"}
        ],
        rate_limit_per_second=10_000,
        browser_attribute_allowlist=list(ATTRIBUTES),
    )
    cache = {"backend": "redis", "redis_url": redis_url} if redis_url else {"backend": "memory"}
    settings = settings_for(table, cache={**cache, **HOT_CACHE})
    service = build_server(
        settings,
        Deps(transport=httpx.MockTransport(_contextual_amperity if contextual else _amperity)),
    )
    methods: dict[str, Any] = {
        path.rsplit("/", 1)[1]: handler.unary_unary for path, handler in service.handlers.items()
    }
    return settings, service, methods


async def measure() -> dict[str, float]:
    """Every figure, in microseconds of CPU per call."""
    settings, service, methods = bench_server()
    context: Any = _Context()
    # Each timed call parses its request, as the server does: a message parsed once and
    # reused keeps upb's Python wrappers warm and flatters the handler.
    enrich_raw = enrich_requests(VISITORS)
    deliver_raw = deliver_requests(VISITORS)
    enrich = [pb.EnrichRequest.FromString(raw) for raw in enrich_raw]
    deliver = [pb.DeliverRequest.FromString(raw) for raw in deliver_raw]
    for enrich_request in enrich:  # fill the cache; the timed calls are hits
        await methods["Enrich"](enrich_request, context)
    for deliver_request in deliver:
        await methods["Deliver"](deliver_request, context)
    gc.collect()
    gc.freeze()  # as serve does: the collector no longer walks the startup objects
    handlers: dict[str, Callable[[int], Awaitable[Any]]] = {
        "enrich_hit": lambda i: methods["Enrich"](
            pb.EnrichRequest.FromString(enrich_raw[i % VISITORS]), context
        ),
        "deliver": lambda i: methods["Deliver"](
            pb.DeliverRequest.FromString(deliver_raw[i % VISITORS]), context
        ),
    }
    figures = {name: await _per_call(1000, call) for name, call in handlers.items()}
    await service.start()
    channel = service.in_process_channel()
    browser = pb.BrowserProfileRequest(pipeline_key="pk_web", anonymous_id="anon-3")
    stub = pb_grpc.AmperityServiceStub(channel)
    figures["browser_profile_in_process"] = await _per_call(
        1000, lambda _: stub.BrowserProfile(browser, timeout=5)
    )
    handlers["browser_profile_handler"] = lambda _: methods["BrowserProfile"](browser, context)
    figures["browser_profile_handler"] = await _per_call(1000, handlers["browser_profile_handler"])
    for name, call in handlers.items():
        figures[f"{name}_cold"] = await _per_call_cold(COLD_CALLS, call)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as socket_channel:
        socket_stub = pb_grpc.AmperityServiceStub(socket_channel)
        figures["browser_profile_socket"] = await _per_call(
            300, lambda _: socket_stub.BrowserProfile(browser, timeout=5)
        )
    figures |= await gateway_figures(service, settings, _per_call, _per_call_cold)
    await channel.close()
    await service.stop(0)
    return figures


def main() -> None:
    """Print the figures as JSON."""
    print(json.dumps(uvloop.run(measure()), indent=2))


if __name__ == "__main__":
    main()
