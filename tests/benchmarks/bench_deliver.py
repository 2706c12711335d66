"""(2) Deliver CPU per event vs the two bare transports it rides on.

Enrichment is cached (warmed first; TTLs of a day). The sink is ``tests.benchmarks.sink``
answering 202, at 0, 5 and 50 ms. Baselines, same payload sizes and concurrency: the echo
server's CPU per RPC (DeliverRequest in, DeliverResponse bytes out) and a bare httpx
process's CPU per POST of the mapped payload to the same sink (8 clients x 4 in flight,
the shape of the service's sharded pool). Server CPU is read from /proc/PID/stat.
"""

from __future__ import annotations

import asyncio
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
    cpu_seconds,
    identifies,
    ratio,
    visitor_event,
)
from tests.benchmarks.profiles import Profile

SINK_DELAYS_MS = (0.0, 5.0, 50.0)
HTTPX_CLIENTS = 8
HTTPX_IN_FLIGHT = 4


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


async def measured(pid: int, function: Any, *args: Any) -> tuple[dict[str, Any], float]:
    """Run a load generator in its own process; its result and ``pid``'s CPU seconds."""
    before = cpu_seconds(pid)
    result = await asyncio.to_thread(loadgen.run_in_process, function, *args)
    return result, cpu_seconds(pid) - before


async def one_delay(profile: Profile, delay_ms: float, payloads: list[bytes]) -> dict[str, Any]:
    """One row: the service and bare httpx against a sink answering after ``delay_ms``."""
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
        args = (profile.concurrency, profile.duration, profile.warmup)
        ours, cpu = await measured(
            service.pid, loadgen.grpc_closed, target, DELIVER_METHOD, payloads, *args
        )
        bare_httpx = await asyncio.to_thread(
            loadgen.run_in_process,
            loadgen.httpx_posts,
            f"{sink_url}/prof/events/esm-2VP6va3Zn",
            body,
            {"content-type": "application/json"},
            HTTPX_CLIENTS,
            HTTPX_IN_FLIGHT,
            profile.duration,
            profile.warmup,
        )
        echo_cpu_per_rpc = 0.0
        echo: dict[str, Any] = {}
        if delay_ms == 0:
            echo_target = await start_echo(processes, {DELIVER_METHOD: answers[0]})
            echo, used = await measured(
                processes.started[-1].pid,
                loadgen.grpc_closed,
                echo_target,
                DELIVER_METHOD,
                payloads,
                *args,
            )
            echo_cpu_per_rpc = used / max(echo["total_calls"], 1)
    finally:
        await processes.close()
    return {
        "sink_delay_ms": delay_ms,
        "payload_bytes": len(body),
        "deliver": {**ours, "cpu_per_event": cpu / max(ours["total_calls"], 1)},
        "httpx": bare_httpx,
        "echo": {**echo, "cpu_per_rpc": echo_cpu_per_rpc},
    }


async def run(profile: Profile) -> dict[str, Any]:
    """CPU per event at each sink delay, against echo CPU/RPC + bare httpx CPU/POST."""
    payloads = deliver_requests(profile.hot_visitors)
    rows = [await one_delay(profile, delay, payloads) for delay in SINK_DELAYS_MS]
    echo_cpu = rows[0]["echo"]["cpu_per_rpc"]
    table = []
    targets: dict[str, bool] = {}
    for row in rows:
        bare = echo_cpu + row["httpx"]["cpu_per_post"]
        row["bare_cpu_per_event"] = bare
        row["ratio"] = ratio(row["deliver"]["cpu_per_event"], bare)
        met = row["ratio"] <= 1.3
        targets[f"cpu_ratio_le_1.3_at_{row['sink_delay_ms']:g}ms"] = met
        table.append(
            (
                f"deliver CPU us/event, sink {row['sink_delay_ms']:g} ms "
                f"({row['deliver']['rate']:.0f} ev/s vs httpx {row['httpx']['rate']:.0f}/s)",
                f"{row['deliver']['cpu_per_event'] * 1e6:.0f}",
                f"{bare * 1e6:.0f} (echo {echo_cpu * 1e6:.0f} + httpx "
                f"{row['httpx']['cpu_per_post'] * 1e6:.0f})",
                f"{row['ratio']:.2f}",
                f"<=1.3 {'MET' if met else 'MISSED'}",
            )
        )
    return {"rows": rows, "targets": targets, "table": table}
