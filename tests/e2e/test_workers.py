"""``serve --workers 2``: two processes share the ports and /metrics counts for both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from amperity_signal.pid_dirs import runs
from datafly.amperity.v1 import amperity_service_pb2 as pb
from datafly.amperity.v1 import amperity_service_pb2_grpc as pb_grpc
from tests.e2e.stack import Sandbox, Service, Stack, free_port
from tests.support import ALICE_EMAIL, message_id, until

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "adm-3e9d51c07b2a4f86-workers"
DELIVERIES = re.compile(
    r'^amperity_signal_deliveries_total\{[^}]*outcome="delivered"[^}]*\} (\S+)$'
)


@contextlib.asynccontextmanager
async def stub_on_new_connection(address: str) -> AsyncIterator[pb_grpc.AmperityServiceAsyncStub]:
    """A stub on a channel of its own: a fresh TCP connection, which may reach either worker."""
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        yield pb_grpc.AmperityServiceStub(channel)


async def two_workers_up(service: Service) -> None:
    """Wait until both workers print their addresses, that is until both serve."""
    await until(
        lambda: sum(line.startswith("gateway listening") for line in service.process.lines) == 2,
        lambda: f"two workers did not start: {service.process.lines}",
    )


async def two_workers_in(stack: Stack, sandbox: Sandbox, tmpdir: Path, **keys: Any) -> Service:
    """``serve --workers 2`` with ``tmpdir`` as its TMPDIR (its metrics files), once both serve."""
    service = await stack.service(
        sandbox, args=("--workers", "2"), env={"TMPDIR": str(tmpdir)}, **keys
    )
    await two_workers_up(service)
    return service


async def test_two_workers_share_the_ports_and_aggregate_metrics(stack: Stack) -> None:
    """Connections spread over both workers; /metrics sums deliveries across them."""
    sandbox = await stack.sandbox()
    grpc_address = f"127.0.0.1:{free_port()}"
    service = await stack.service(
        sandbox, server={"grpc_address": grpc_address}, args=("--workers", "2")
    )
    await two_workers_up(service)

    async def deliver_on_new_connection(n: int) -> None:
        async with stub_on_new_connection(grpc_address) as stub:
            event = pb.Event(message_id=message_id(), type="page", anonymous_id=f"anon_w{n}")
            await stub.Deliver(pb.DeliverRequest(integration_id="web", event=event), timeout=10)

    await asyncio.gather(*(deliver_on_new_connection(n) for n in range(30)))
    async with httpx.AsyncClient(base_url=service.http_url) as http:
        text = (await http.get("/metrics")).text
    counted = sum(float(m.group(1)) for line in text.splitlines() if (m := DELIVERIES.match(line)))
    assert counted == 30
    # The days-to-expiry gauge: one series per key (the freshest worker's), not one per pid.
    expiry = [
        line
        for line in text.splitlines()
        if line.startswith("amperity_signal_token_days_to_expiry{")
    ]
    assert len(expiry) == 2 and not any('pid="' in line for line in expiry), text
    assert len(await sandbox.events()) == 30
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0


async def test_configuration_warnings_are_logged_once_whatever_the_workers(stack: Stack) -> None:
    """Key expiry, NO_PROXY and route lines once under --workers 2; each worker's own twice.

    The keys minted for the stack expire within the hour (a warning each), and NO_PROXY
    carries an entry that is no range (a warning); the sandbox is reached directly.
    """
    sandbox = await stack.sandbox()
    env = {"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,10.0.0/8"}
    service = await stack.service(sandbox, args=("--workers", "2"), env=env)
    await two_workers_up(service)
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0
    messages = [json.loads(line)["msg"] for line in service.process.log.read_text().splitlines()]

    def count(fragment: str) -> int:
        return sum(fragment in message for message in messages)

    assert count("api_key expires in") == 2, messages  # api_key and profile_api_key
    assert count("NO_PROXY entry '10.0.0/8' is ignored") == 1, messages
    assert count("integration web reaches") == 1, messages
    assert count("shutting down") == 2, messages  # each worker's own line
    assert sum(line.startswith("grpc listening") for line in service.process.lines) == 2


def lookups_by_kind(families: Iterable[Metric]) -> dict[str, tuple[float, float]]:
    """(hits, hit + miss + error) of each cache kind's counters among ``families``."""
    counts: dict[str, tuple[float, float]] = {}
    for family in families:
        for sample in family.samples:
            result = sample.labels.get("result")
            if sample.name == "amperity_signal_cache_total" and result in {"hit", "miss", "error"}:
                hits, lookups = counts.get(sample.labels["cache"], (0.0, 0.0))
                hit = sample.value if result == "hit" else 0.0
                counts[sample.labels["cache"]] = (hits + hit, lookups + sample.value)
    return counts


def counters_by_worker(tmpdir: Path) -> list[Iterable[Metric]]:
    """Each worker's own counters: its file in the metrics directory made under ``tmpdir``."""
    return [
        MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        for path in tmpdir.glob("amperity-signal-metrics-*/counter_*.db")
    ]


async def test_two_workers_show_one_cache_hit_ratio_of_their_summed_counters(
    stack: Stack, tmp_path: Path
) -> None:
    """Enrich on both workers: one ratio series per kind, of the counters summed on the page."""
    # The workers' metrics directory is made under TMPDIR: there each worker's own files
    # show that both served lookups.
    service = await two_workers_in(stack, await stack.sandbox(), tmp_path)
    grpc_address = service.grpc_target

    async def enrich_on_new_connection(n: int) -> None:
        async with stub_on_new_connection(grpc_address) as stub:
            # Four visitors, each seen several times: misses first, then hits, per worker.
            event = pb.Event(message_id=message_id(), type="page", anonymous_id=f"anon_r{n % 4}")
            event.traits.update({"email": ALICE_EMAIL})
            await stub.Enrich(pb.EnrichRequest(integration_id="web", event=event), timeout=10)

    for n in range(40):  # one after another: a visitor's second call finds the cache filled
        await enrich_on_new_connection(n)
    async with httpx.AsyncClient(base_url=service.http_url) as http:
        text = (await http.get("/metrics")).text
    # Both workers looked up (each has its own counter file), so the page sums two.
    workers = counters_by_worker(tmp_path)
    assert len(workers) == 2
    for metrics in workers:
        assert lookups_by_kind(metrics), "a worker served no Enrich"
    summed = lookups_by_kind(text_string_to_metric_families(text))
    counts = {kind: count for kind, count in summed.items() if count[1]}
    assert counts, text
    ratios = [
        line for line in text.splitlines() if line.startswith("amperity_signal_cache_hit_ratio")
    ]
    expected = {kind: hits / lookups for kind, (hits, lookups) in counts.items()}
    expected["all"] = sum(h for h, _ in counts.values()) / sum(n for _, n in counts.values())
    shown = {
        sample.labels["cache"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "amperity_signal_cache_hit_ratio" and set(sample.labels) == {"cache"}
    }
    assert len(ratios) == len(expected) and shown == expected, text
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0


def delivered(metrics: Iterable[Metric]) -> float:
    """How many events the counters in ``metrics`` say were delivered."""
    return sum(
        sample.value
        for family in metrics
        for sample in family.samples
        if sample.name == "amperity_signal_deliveries_total"
    )


def deliveries_by_worker(tmpdir: Path) -> list[float]:
    """How many events each worker has delivered, from its counter file under ``tmpdir``."""
    return [delivered(metrics) for metrics in counters_by_worker(tmpdir)]


async def deliver_until_both_workers_have(grpc_address: str, tmpdir: Path) -> list[str]:
    """Deliver on fresh connections until each worker has delivered one more; their ids."""
    before = deliveries_by_worker(tmpdir) or [0.0, 0.0]
    delivered = []
    for n in range(40):
        async with stub_on_new_connection(grpc_address) as stub:
            event = pb.Event(message_id=message_id(), type="page", anonymous_id=f"anon_l{n}")
            await stub.Deliver(pb.DeliverRequest(integration_id="web", event=event), timeout=10)
        delivered.append(event.message_id)
        now = deliveries_by_worker(tmpdir)
        if len(now) == 2 and all(a > b for a, b in zip(now, before, strict=True)):
            return delivered
    pytest.fail(f"the kernel gave every connection to one worker: {before} -> {now}")


async def stream_until(lines: AsyncIterator[str], wanted: set[str]) -> None:
    """Read a Live Events stream until it has shown a `delivery` of every id in ``wanted``."""
    missing = set(wanted)
    event = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "delivery":
            missing.discard(json.loads(line.removeprefix("data: "))["message_id"])
            if not missing:
                return


def made(tmpdir: Path, pattern: str) -> list[Path]:
    """What the service made under ``tmpdir`` besides its metrics files' directory."""
    return [p for p in tmpdir.glob(pattern) if not p.name.startswith("amperity-signal-metrics-")]


async def test_live_events_shows_every_workers_deliveries(stack: Stack) -> None:
    """Under --workers 2 one /live/stream replays, then streams, what both workers delivered.

    Each worker keeps its own Live Events; the gateway that answers the stream watches
    every worker's socket, so which worker the kernel gives the page does not matter.
    """
    sandbox = await stack.sandbox()
    grpc_address = f"127.0.0.1:{free_port()}"
    # A short TMPDIR: the workers' metrics files show who delivered, and their sockets'
    # paths stay within a Unix socket's 107 bytes.
    tmpdir = Path(tempfile.mkdtemp(prefix="lv", dir="/tmp"))
    try:
        service = await stack.service(
            sandbox,
            server={"grpc_address": grpc_address, "admin_token": ADMIN_TOKEN},
            args=("--workers", "2"),
            env={"TMPDIR": str(tmpdir)},
        )
        await two_workers_up(service)
        replayed = await deliver_until_both_workers_have(grpc_address, tmpdir)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with (
            httpx.AsyncClient(base_url=service.http_url, timeout=10) as http,
            http.stream("GET", "/live/stream?replay=100", headers=headers) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            await asyncio.wait_for(stream_until(lines, set(replayed)), 5)
            live = await deliver_until_both_workers_have(grpc_address, tmpdir)
            await asyncio.wait_for(stream_until(lines, set(live)), 5)
        assert sorted(path.name for path in made(tmpdir, "*/worker-*.sock")) == [
            "worker-0.sock",
            "worker-1.sock",
        ]
        service.process.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0
        # The parent removes the workers' socket directory as it stops.
        assert made(tmpdir, "*") == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def metrics_dirs(tmpdir: Path) -> list[Path]:
    """The workers' metrics directories in ``tmpdir``."""
    return sorted(tmpdir.glob("amperity-signal-metrics-*"))


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux: its workers and multiprocessing's tracker)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_workers_stop_when_their_parent_is_killed_and_a_start_sweeps_their_directory(
    stack: Stack, tmp_path: Path
) -> None:
    """A parent killed alone: its workers stop by themselves; the next start sweeps its files.

    SIGKILL forwards nothing, so the workers notice their parent is gone (``workers``:
    ``stop_when_orphaned``) and stop gracefully, leaving the metrics directory the parent
    would have removed; a later start removes it, and its own is removed at its stop.
    """
    sandbox = await stack.sandbox()
    env = {"TMPDIR": str(tmp_path)}
    killed = await stack.service(sandbox, args=("--workers", "2"), env=env)
    await two_workers_up(killed)
    [left] = metrics_dirs(tmp_path)
    children = children_of(killed.process.pid)
    writers = {int(path.stem.rpartition("_")[2]) for path in left.glob("*.db")}
    assert len(writers) == 2 and writers <= set(children)  # files named for the workers
    await killed.process.stop(signal.SIGKILL)  # the parent alone

    for _ in range(300):  # up to 30 s; old code: they serve on, unsupervised
        if not any(runs(pid) for pid in writers):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"the killed parent's workers {sorted(writers)} still run")
    stopping = killed.process.log.read_text().count("that started this worker is gone")
    assert stopping == 2
    assert left.exists()  # nobody removed it

    later = await stack.service(sandbox, args=("--workers", "2"), env=env)
    await two_workers_up(later)
    assert not left.exists() and len(metrics_dirs(tmp_path)) == 1
    assert "removed 1 metrics directory that stopped services left in" in (
        later.process.log.read_text()
    )
    assert await later.process.stop() == 0
    assert metrics_dirs(tmp_path) == []


def log_records(service: Service) -> list[dict[str, object]]:
    """The JSON lines ``service`` has logged so far."""
    return [json.loads(line) for line in service.process.log.read_text().splitlines()]


def logged(service: Service, msg: str) -> list[dict[str, object]]:
    """The lines ``service`` has logged whose message is ``msg``."""
    return [record for record in log_records(service) if record["msg"] == msg]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_the_service_says_once_at_info_level_that_it_is_ready(
    stack: Stack, workers: str
) -> None:
    """One info line, "ready", with both addresses and the workers; under --workers, the parent's.

    The addresses were printed on stdout only, and the one line in the log was each
    worker's "serving", at debug level: at info the log did not say the service was up.
    """
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox, args=("--workers", workers))
    await until(
        lambda: bool(logged(service, "ready")),
        lambda: f"no ready line: {service.process.log.read_text()}",
    )
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0
    [ready] = logged(service, "ready")
    assert ready["level"] == "info"
    assert (ready["grpc_address"], ready["http_address"]) == (
        service.grpc_target,
        service.http_url,
    )
    assert ready["workers"] == int(workers)
    assert ready["pid"] == service.process.pid


def deliveries_of(metrics_dir: Path, pid: int) -> float:
    """How many events worker ``pid`` has delivered, from its counter file."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    return delivered(MultiProcessCollector.merge([str(path)]))  # type: ignore[no-untyped-call]


async def deliver_until_worker_has_delivered(grpc_address: str, metrics_dir: Path, pid: int) -> int:
    """Deliver on fresh connections until worker ``pid`` has delivered one; how many were sent."""
    for n in range(1, 41):
        async with stub_on_new_connection(grpc_address) as stub:
            event = pb.Event(message_id=message_id(), type="page", anonymous_id=f"anon_k{n}")
            await stub.Deliver(pb.DeliverRequest(integration_id="web", event=event), timeout=10)
        if deliveries_of(metrics_dir, pid):
            return n
    pytest.fail(f"the kernel gave no connection to worker {pid}")


async def replaced(service: Service, killed: int) -> int:
    """The pid of the worker that replaced ``killed``, once it serves; checks the error line."""
    await until(
        lambda: bool(logged(service, "replacement worker ready")),
        lambda: f"no worker replaced {killed}: {service.process.log.read_text()}",
    )
    [error] = [r for r in log_records(service) if r["level"] == "error"]
    assert str(error["msg"]).endswith(
        f" (pid {killed}) was killed by SIGKILL; starting a replacement"
    ), error
    assert error["pid"] == killed and error["exit_code"] == -signal.SIGKILL
    [ready] = logged(service, "replacement worker ready")
    assert ready["worker"] == error["worker"]
    assert isinstance(ready["pid"], int) and ready["pid"] != killed
    assert ready["pid"] in children_of(service.process.pid)
    return ready["pid"]


async def test_a_killed_worker_is_logged_and_replaced_and_what_it_counted_is_kept(
    stack: Stack, tmp_path: Path
) -> None:
    """SIGKILL one of two workers: an error names it, a new one serves, /metrics sums all three.

    Before, the parent noticed nothing: no line, no replacement, the service served on one
    worker (health SERVING), and its stop exited 0 without a word. The graceful stop still
    exits 0; its last line, a warning, counts the worker that died.
    """
    sandbox = await stack.sandbox()
    service = await two_workers_in(stack, sandbox, tmp_path)
    grpc_address = service.grpc_target
    sent = len(await deliver_until_both_workers_have(grpc_address, tmp_path))
    [metrics_dir] = metrics_dirs(tmp_path)
    killed = min(int(path.stem.rpartition("_")[2]) for path in metrics_dir.glob("counter_*.db"))
    os.kill(killed, signal.SIGKILL)

    replacement = await replaced(service, killed)
    sent += await deliver_until_worker_has_delivered(grpc_address, metrics_dir, replacement)

    async with httpx.AsyncClient(base_url=service.http_url) as http:
        text = (await http.get("/metrics")).text
    counted = sum(float(m.group(1)) for line in text.splitlines() if (m := DELIVERIES.match(line)))
    assert counted == sent == len(await sandbox.events())
    service.process.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.proc.wait(), 30) == 0
    [stopped] = [r for r in log_records(service) if str(r["msg"]).startswith("stopped; ")]
    assert (stopped["level"], stopped["workers_died"]) == ("warning", 1)


def breaker_gauges(metrics_dir: Path) -> dict[int, float]:
    """Each worker's own amperity_signal_breaker_open, by pid, from its gauge file."""
    found: dict[int, float] = {}
    for path in metrics_dir.glob("gauge_*max_*.db"):
        merged: Iterable[Metric] = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        for family in merged:
            for sample in family.samples:
                if sample.name == "amperity_signal_breaker_open":
                    found[int(path.stem.rpartition("_")[2])] = sample.value
    return found


async def breaker_shown(service: Service) -> list[float]:
    """The values of amperity_signal_breaker_open on the service's /metrics page."""
    async with httpx.AsyncClient(base_url=service.http_url) as http:
        text = (await http.get("/metrics")).text
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "amperity_signal_breaker_open"
    ]


async def test_the_open_breaker_of_a_killed_worker_no_longer_shows(
    stack: Stack, tmp_path: Path
) -> None:
    """A worker whose breaker is open is killed: amperity_signal_breaker_open no longer says 1.

    Before, /metrics showed the largest value of every gauge file in the directory, the
    dead worker's too, and nobody removed it: 1 for good, though no running worker's
    breaker was open (a page for an outage that was not there).
    """
    sandbox = await stack.sandbox()
    breaker = {"breaker_failures": 1, "breaker_cooldown": 600}
    service = await two_workers_in(
        stack, sandbox, tmp_path, cache={"backend": "memory", **breaker}, max_retries=0
    )
    await sandbox.fault(status=503, kind="lookup")
    event = pb.Event(message_id=message_id(), type="page", anonymous_id="anon_breaker")
    event.traits.update({"email": ALICE_EMAIL})
    # One channel, one connection: one worker's breaker opens.
    await service.stub.Enrich(pb.EnrichRequest(integration_id="web", event=event), timeout=15)
    [metrics_dir] = metrics_dirs(tmp_path)
    [opened] = [pid for pid, value in breaker_gauges(metrics_dir).items() if value == 1]
    assert await breaker_shown(service) == [1.0]
    os.kill(opened, signal.SIGKILL)

    await replaced(service, opened)
    assert await breaker_shown(service) in ([], [0.0])
