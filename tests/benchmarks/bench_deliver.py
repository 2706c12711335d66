"""(2) Deliver CPU per event vs the two bare transports it rides on.

Enrichment is cached (warmed first; TTLs of a day). The sink is ``tests.benchmarks.sink``
answering 202, at 0, 5 and 50 ms. Baselines, same payload sizes and concurrency: the echo
server's CPU per RPC (DeliverRequest in, DeliverResponse bytes out) and a bare httpx
process's CPU per POST of the mapped payload to the same sink (8 clients x 4 in flight,
the shape of the service's sharded pool). The target is against bare httpx, as issue 8
defines it; since Deliver sends over aiohttp (amperity/aiohttp_transport.py) a second row
compares with a bare aiohttp client, the transport actually used. Server CPU is read from
/proc/PID/stat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.benchmarks import loadgen
from tests.benchmarks.bench_enrich import HOT_CACHE, start_echo, warm
from tests.benchmarks.common import (
    CATEGORIES,
    DELIVER_METHOD,
    PYTHON,
    Processes,
    identifies,
    interleaved,
    median,
    ratio,
    visitor_event,
)
from tests.benchmarks.profiles import Profile

SINK_DELAYS_MS = (0.0, 5.0, 50.0)
BARE_CLIENTS = 8
BARE_IN_FLIGHT = 4
"""Both bare clients (httpx and aiohttp) run 8 clients x 4 in flight, the sharded pool's shape."""


def deliver_requests(visitors: int) -> list[bytes]:
    """Serialized DeliverRequests (track events) over ``visitors`` visitors."""
    return [
        pb.DeliverRequest(
            integration_id="web",
            event=visitor_event(
                v, CATEGORIES[v % len(CATEGORIES)], email=identifies(v), kind="track"
            ),
        ).SerializeToString()
        for v in range(visitors)
    ]


async def one_delay(
    profile: Profile, delay_ms: float, payloads: list[bytes], *, with_echo: bool
) -> dict[str, Any]:
    """One row: the service and bare httpx (and the echo server) in interleaved rounds."""
    processes = Processes()
    try:
        sink = await processes.start(
            [PYTHON, "-m", "tests.benchmarks.sink", "--delay-ms", str(delay_ms)],
            "sink listening on ",
            "sink",
        )
        sink_url = sink.output_value("sink listening on ")
        service, target = await processes.service(
            sink_url, cache=HOT_CACHE, rate_limit_per_second=10_000
        )
        answers = await warm(target, DELIVER_METHOD, payloads)
        response = pb.DeliverResponse.FromString(answers[0])
        assert response.enrichment.cache_status == pb.CACHE_STATUS_HIT, response.enrichment
        body = orjson.dumps(MessageToDict(response.payload))
        args = (profile.concurrency, profile.round_duration, profile.warmup)

        async def deliver() -> dict[str, Any]:
            result, cpu = await loadgen.measured(
                service.pid, loadgen.grpc_closed, target, DELIVER_METHOD, payloads, *args
            )
            return {**result, "cpu_per_event": cpu / max(result["total_calls"], 1)}

        def bare(library: str) -> Callable[[], Awaitable[dict[str, Any]]]:
            return lambda: asyncio.to_thread(
                loadgen.run_in_process,
                loadgen.bare_posts,
                library,
                f"{sink_url}/prof/events/esm-2VP6va3Zn",
                body,
                {"content-type": "application/json"},
                BARE_CLIENTS,
                BARE_IN_FLIGHT,
                profile.round_duration,
                profile.warmup,
            )

        measures = [deliver, bare("httpx"), bare("aiohttp")]
        if with_echo:
            echo_target = await start_echo(processes, {DELIVER_METHOD: answers[0]})
            echo_pid = processes.started[-1].pid

            async def echo() -> dict[str, Any]:
                result, cpu = await loadgen.measured(
                    echo_pid, loadgen.grpc_closed, echo_target, DELIVER_METHOD, payloads, *args
                )
                return {**result, "cpu_per_rpc": cpu / max(result["total_calls"], 1)}

            measures.append(echo)
        rounds = await interleaved(profile.rounds, measures)
    finally:
        await processes.close()
    return {
        "sink_delay_ms": delay_ms,
        "payload_bytes": len(body),
        "rounds": [
            {
                "deliver": r[0],
                "httpx": r[1],
                "aiohttp": r[2],
                **({"echo": r[3]} if with_echo else {}),
            }
            for r in rounds
        ],
    }


async def run(profile: Profile) -> dict[str, Any]:
    """CPU per event at each sink delay, against echo CPU/RPC + bare httpx (and aiohttp) POSTs."""
    payloads = deliver_requests(profile.hot_visitors)
    rows = [
        await one_delay(profile, delay, payloads, with_echo=index == 0)
        for index, delay in enumerate(SINK_DELAYS_MS)
    ]
    # Echo's CPU per RPC does not depend on the sink: measured in the first row's rounds.
    echo_cpu = median([r["echo"]["cpu_per_rpc"] for r in rows[0]["rounds"]])
    table = []
    targets: dict[str, bool] = {}
    for row in rows:
        rounds = row["rounds"]
        ours = median([r["deliver"]["cpu_per_event"] for r in rounds])
        httpx_cpu = median([r["httpx"]["cpu_per_post"] for r in rounds])
        bare = echo_cpu + httpx_cpu
        row["bare_cpu_per_event"] = bare
        row["deliver_cpu_per_event"] = ours
        row["round_ratios"] = [
            ratio(r["deliver"]["cpu_per_event"], echo_cpu + r["httpx"]["cpu_per_post"])
            for r in rounds
        ]
        row["ratio"] = median(row["round_ratios"])
        met = row["ratio"] <= 1.3
        targets[f"cpu_ratio_le_1.3_at_{row['sink_delay_ms']:g}ms"] = met
        rate = median([r["deliver"]["rate"] for r in rounds])
        httpx_rate = median([r["httpx"]["rate"] for r in rounds])
        # The transport Deliver rides on is aiohttp's (amperity/aiohttp_transport.py): the
        # ratio against a bare aiohttp client is our overhead over what we actually use.
        aiohttp_cpu = median([r["aiohttp"]["cpu_per_post"] for r in rounds])
        row["aiohttp_round_ratios"] = [
            ratio(r["deliver"]["cpu_per_event"], echo_cpu + r["aiohttp"]["cpu_per_post"])
            for r in rounds
        ]
        row["ratio_vs_aiohttp"] = median(row["aiohttp_round_ratios"])
        table.append(
            (
                f"deliver CPU us/event, sink {row['sink_delay_ms']:g} ms "
                f"({rate:.0f} ev/s vs httpx {httpx_rate:.0f}/s; median of {len(rounds)} rounds)",
                f"{ours * 1e6:.0f}",
                f"{bare * 1e6:.0f} (echo {echo_cpu * 1e6:.0f} + httpx {httpx_cpu * 1e6:.0f})",
                f"{row['ratio']:.2f}",
                f"<=1.3 {'MET' if met else 'MISSED'}",
            )
        )
        table.append(
            (
                f"  same, against bare aiohttp (the transport used), sink "
                f"{row['sink_delay_ms']:g} ms",
                f"{ours * 1e6:.0f}",
                f"{(echo_cpu + aiohttp_cpu) * 1e6:.0f} (echo + aiohttp {aiohttp_cpu * 1e6:.0f})",
                f"{row['ratio_vs_aiohttp']:.2f}",
                "",
            )
        )
    return {"rows": rows, "targets": targets, "table": table}
