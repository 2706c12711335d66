"""(4) Gateway: ``GET /v1/enrich`` (cache hit) vs a bare Starlette route on the same server.

The service runs through ``tests.benchmarks.gateway_serve``, which is ``amperity-signal
serve`` with an outer ASGI dispatcher sending ``/bench/bare`` to a plain Starlette route
(fixed JSON); both routes ride the same uvicorn server and event loop. Load: the raw
keep-alive HTTP/1.1 client of ``loadgen.http_closed`` from a separate process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.benchmarks import loadgen
from tests.benchmarks.bench_enrich import HOT_CACHE
from tests.benchmarks.common import PYTHON, Processes, interleaved, median, ratio
from tests.benchmarks.profiles import Profile

GATEWAY_CLI = [PYTHON, "-m", "tests.benchmarks.gateway_serve"]
VISITOR = "anon-gateway-1"
CONNECTIONS = 16


def _request(host: str, port: int, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Pipeline-Key: pk_web\r\n\r\n"
    ).encode()


async def run(profile: Profile) -> dict[str, Any]:
    """Requests/s of the gateway's enrich route against the bare route, same server."""
    processes = Processes()
    try:
        sink = await processes.start(
            [PYTHON, "-m", "tests.benchmarks.sink"], "sink listening on ", "sink"
        )
        sink_url = sink.output_value("sink listening on ")
        service, _ = await processes.service(
            sink_url,
            cache=HOT_CACHE,
            gateway=True,
            cli=GATEWAY_CLI,
            rate_limit_per_second=10_000,
        )
        url = service.output_value("gateway listening on ")
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        enrich_path = f"/v1/enrich?provider=amperity&anonymous_id={VISITOR}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for _ in range(2):  # fill the cache, then read it
                warm = await client.get(enrich_path, headers={"X-Pipeline-Key": "pk_web"})
            assert warm.status_code == 200, warm.text
            attributes = warm.json().get("attributes")
            assert attributes, f"enrich answered no attributes: {warm.text}"
            bare_check = await client.get("/bench/bare")
            assert bare_check.status_code == 200, bare_check.text
        closed = (CONNECTIONS, profile.round_duration, profile.warmup)

        def load(path: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            request = _request(host, port, path)
            return lambda: asyncio.to_thread(
                loadgen.run_in_process, loadgen.http_closed, host, port, request, *closed
            )

        rounds = await interleaved(profile.rounds, [load("/bench/bare"), load(enrich_path)])
    finally:
        await processes.close()
    round_ratios = [ratio(o["rate"], b["rate"]) for b, o in rounds]
    throughput_ratio = median(round_ratios)
    bare_rate = median([b["rate"] for b, _ in rounds])
    ours_rate = median([o["rate"] for _, o in rounds])
    met = throughput_ratio >= 0.6
    return {
        "table": [
            (
                f"gateway /v1/enrich req/s (c={CONNECTIONS}, median of {len(rounds)} rounds)",
                f"{ours_rate:.0f}",
                f"{bare_rate:.0f} bare route",
                f"{throughput_ratio:.2f}",
                f">=0.6 {'MET' if met else 'MISSED'}",
            )
        ],
        "connections": CONNECTIONS,
        "rounds": [{"bare_route": b, "enrich": o} for b, o in rounds],
        "ratios": {"throughput": throughput_ratio, "throughput_rounds": round_ratios},
        "targets": {"throughput_ratio_ge_0.6": met},
    }
