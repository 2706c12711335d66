"""Load generators, each run in its own process, never in the loop of the server it measures.

Entry points are submitted positionally to a process pool (``run_in_process``), hence
their long positional signatures; they use uvloop like the service does.

Clients send prebuilt bytes and do not parse answers, so the generator costs the same
whichever server it loads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import grpc
import httpx
import uvloop

from tests.benchmarks.common import cpu_seconds, percentile

CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
OPEN_TICK = 0.001
"""Seconds between the open-loop generator's batches."""
MAX_LAG_MS = 2.5
"""p99 send lag (ms) above which an open-loop run is reported as invalid."""


def run_in_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` in a fresh spawned process and return its result."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


async def measured(
    pid: int, function: Callable[..., dict[str, Any]], *args: Any
) -> tuple[dict[str, Any], float]:
    """Run a load generator in its own process; its result and ``pid``'s CPU seconds."""
    before = cpu_seconds(pid)
    result = await asyncio.to_thread(run_in_process, function, *args)
    return result, cpu_seconds(pid) - before


def run_many(
    function: Callable[..., dict[str, Any]], argss: Sequence[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """Run several generators at once, one process each."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(argss), mp_context=context) as pool:
        futures = [pool.submit(function, *args) for args in argss]
        return [future.result() for future in futures]


def _channels(target: str, count: int) -> list[grpc.aio.Channel]:
    return [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(count)]


def grpc_closed(  # noqa: PLR0917 - submitted positionally to a process pool
    target: str,
    method: str,
    payloads: list[bytes],
    concurrency: int,
    duration: float,
    warmup: float,
    channels: int = 1,
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` callers back to back for ``duration`` s; calls/s."""

    async def main() -> dict[str, Any]:
        opened = _channels(target, channels)
        calls: list[Any] = [c.unary_unary(method) for c in opened]
        counts = {"ok": 0, "errors": 0, "total": 0}
        measuring = False
        stop_at = time.monotonic() + warmup + duration

        async def worker(n: int) -> None:
            call = calls[n % len(calls)]
            i = n
            while time.monotonic() < stop_at:
                try:
                    await call(payloads[i % len(payloads)], timeout=10)
                    counts["total"] += 1
                    if measuring:
                        counts["ok"] += 1
                except grpc.aio.AioRpcError:
                    counts["errors"] += 1
                i += concurrency

        tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        started = time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        for channel in opened:
            await channel.close()
        return {
            "calls": counts["ok"],
            "errors": counts["errors"],
            "seconds": elapsed,
            "total_calls": counts["total"],
            "rate": counts["ok"] / elapsed,
        }

    return uvloop.run(main())


def grpc_open(  # noqa: PLR0917 - submitted positionally to a process pool
    target: str,
    method: str,
    payloads: list[bytes],
    rate: float,
    duration: float,
    warmup: float,
    tick: float = OPEN_TICK,
) -> dict[str, Any]:
    """Open loop at ``rate`` calls/s; latency counted from the scheduled send time.

    Paced in small batches: every ``tick`` seconds the loop sends every call whose scheduled
    time has come, then yields. (Sleeping per call cannot pace above ~1,000/s: a sleep is at
    least one timer tick, and when the loop fell behind it used to fire a burst without
    yielding.) The latencies come back raw so several generators can be merged; ``lag_ms``
    (p99 of send time minus scheduled time) and the achieved rate tell whether the
    generator itself kept up.
    """

    async def main() -> dict[str, Any]:
        (channel,) = _channels(target, 1)
        call: Any = channel.unary_unary(method)
        await channel.channel_ready()
        latencies: list[float] = []
        from_send: list[float] = []
        lags: list[float] = []
        errors = 0
        pending: set[asyncio.Task[None]] = set()
        count = len(payloads)

        async def one(payload: bytes, scheduled: float, keep: bool) -> None:
            nonlocal errors
            sent_at = time.monotonic()
            try:
                await call(payload, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            if keep:
                done = time.monotonic()
                latencies.append(done - scheduled)
                from_send.append(done - sent_at)

        total = int((warmup + duration) * rate)
        first_kept = int(warmup * rate)
        start = time.monotonic() + 0.01
        sent = 0
        measured_from = measured_to = 0.0
        while sent < total:
            now = time.monotonic()
            due = min(total, int((now - start) * rate) + 1)
            for i in range(sent, due):
                scheduled = start + i / rate
                keep = i >= first_kept
                if keep:
                    lags.append(now - scheduled)
                    if i == first_kept:
                        measured_from = now
                task = asyncio.create_task(one(payloads[i % count], scheduled, keep))
                pending.add(task)
                task.add_done_callback(pending.discard)
            sent = max(sent, due)
            await asyncio.sleep(tick)
        measured_to = time.monotonic()
        await asyncio.gather(*list(pending))
        await channel.close()
        span = max(measured_to - measured_from, 1e-9)
        return {
            "rate": rate,
            "achieved_rate": len(lags) / span,
            "calls": len(latencies),
            "errors": errors,
            "latencies": latencies,
            "from_send": from_send,
            "lag_p99_ms": percentile(lags, 0.99) * 1000,
        }

    return uvloop.run(main())


def grpc_open_spread(  # noqa: PLR0917
    target: str,
    method: str,
    payloads: list[bytes],
    rate: float,
    duration: float,
    warmup: float,
    processes: int = 2,
) -> dict[str, Any]:
    """``grpc_open`` at ``rate`` in total, split over ``processes`` generator processes.

    Returns merged p50/p99 and ``valid``: no errors, the generators sent at >= 97 % of the
    rate, and their p99 send lag stayed under ``MAX_LAG_MS``. (On a two-core machine one
    generator process paces better than two: two generators and the server fight for cores.)
    """
    share = rate / processes
    args = (target, method, payloads, share, duration, warmup)
    parts = run_many(grpc_open, [args] * processes)
    latencies = [lat for part in parts for lat in part["latencies"]]
    from_send = [lat for part in parts for lat in part["from_send"]]
    achieved = sum(part["achieved_rate"] for part in parts)
    errors = sum(part["errors"] for part in parts)
    lag = max(part["lag_p99_ms"] for part in parts)
    valid = errors == 0 and achieved >= 0.97 * rate and lag <= MAX_LAG_MS
    return {
        "rate": rate,
        "processes": processes,
        "achieved_rate": achieved,
        "calls": len(latencies),
        "errors": errors,
        "lag_p99_ms": lag,
        "valid": valid,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p90_ms": percentile(latencies, 0.9) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p50_from_send_ms": percentile(from_send, 0.5) * 1000,
        "p99_from_send_ms": percentile(from_send, 0.99) * 1000,
    }


def http_closed(  # noqa: PLR0917 - submitted positionally to a process pool
    host: str, port: int, request: bytes, concurrency: int, duration: float, warmup: float
) -> dict[str, Any]:
    """Closed loop over raw keep-alive HTTP/1.1 connections (a near-free client); requests/s."""

    async def main() -> dict[str, Any]:
        counts = {"ok": 0, "bad": 0}
        measuring = False
        stop_at = time.monotonic() + warmup + duration

        async def connection() -> None:
            reader, writer = await asyncio.open_connection(host, port)
            while time.monotonic() < stop_at:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if measuring:
                    counts["ok" if head.startswith(b"HTTP/1.1 200") else "bad"] += 1
            writer.close()

        tasks = [asyncio.create_task(connection()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        started = time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        return {
            "requests": counts["ok"],
            "bad": counts["bad"],
            "seconds": elapsed,
            "rate": counts["ok"] / elapsed,
        }

    return uvloop.run(main())


def bare_posts(  # noqa: PLR0917 - submitted positionally to a process pool
    library: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    clients: int,
    in_flight_per_client: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """Bare ``httpx`` or ``aiohttp``: ``clients`` clients, ``in_flight_per_client`` POSTs each.

    Returns POST/s and this process's CPU seconds per POST (the bare client's cost).
    """

    async def with_httpx() -> dict[str, Any]:
        limits = httpx.Limits(
            max_connections=in_flight_per_client, max_keepalive_connections=in_flight_per_client
        )
        pool = [httpx.AsyncClient(limits=limits, timeout=10) for _ in range(clients)]

        async def post(client: httpx.AsyncClient) -> int:
            return (await client.post(url, content=body, headers=headers)).status_code

        try:
            return await _posts(pool, post, in_flight_per_client, duration, warmup)
        finally:
            for client in pool:
                await client.aclose()

    async def with_aiohttp() -> dict[str, Any]:
        pool = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight_per_client))
            for _ in range(clients)
        ]

        async def post(session: aiohttp.ClientSession) -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        try:
            return await _posts(pool, post, in_flight_per_client, duration, warmup)
        finally:
            for session in pool:
                await session.close()

    return uvloop.run(with_httpx() if library == "httpx" else with_aiohttp())


async def _posts(
    pool: Sequence[Any],
    post: Callable[[Any], Awaitable[int]],
    in_flight_per_client: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    """POST back to back from every client of ``pool``; POST/s and CPU seconds per POST."""
    counts = {"ok": 0}
    measuring = False
    stop_at = time.monotonic() + warmup + duration

    async def worker(client: Any) -> None:
        while time.monotonic() < stop_at:
            status = await post(client)
            if measuring and status == 202:
                counts["ok"] += 1

    tasks = [
        asyncio.create_task(worker(client)) for client in pool for _ in range(in_flight_per_client)
    ]
    await asyncio.sleep(warmup)
    measuring = True
    started, cpu = time.monotonic(), cpu_seconds(os.getpid())
    await asyncio.gather(*tasks)
    elapsed, used = time.monotonic() - started, cpu_seconds(os.getpid()) - cpu
    return {
        "posts": counts["ok"],
        "seconds": elapsed,
        "rate": counts["ok"] / elapsed,
        "cpu_per_post": used / max(counts["ok"], 1),
    }


def grpc_replay(
    target: str, method: str, payloads: list[bytes], concurrency: int
) -> dict[str, Any]:
    """Send every payload once, ``concurrency`` in flight; each one's dispatch time (s)."""

    async def main() -> dict[str, Any]:
        (channel,) = _channels(target, 1)
        call: Any = channel.unary_unary(method)
        times = [0.0] * len(payloads)
        counts = {"ok": 0, "errors": 0}
        next_index = iter(range(len(payloads)))
        started = time.monotonic()

        async def worker() -> None:
            for index in next_index:
                times[index] = time.monotonic() - started
                try:
                    await call(payloads[index], timeout=30)
                    counts["ok"] += 1
                except grpc.aio.AioRpcError:
                    counts["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        await channel.close()
        return {**counts, "times": times, "seconds": elapsed}

    return uvloop.run(main())
