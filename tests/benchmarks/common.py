"""Shared pieces: process CPU/RSS from /proc, ports, configs, synthetic events, processes."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from amperity_signal.processes import Process, start_process
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.support import Keys, integration_dict, mint_keys

PYTHON = sys.executable
CLI = [PYTHON, "-m", "amperity_signal.cli"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CATEGORIES = tuple(f"category-{n}" for n in range(10))
ENRICH_METHOD = "/datafly.amperity.v1.AmperityService/Enrich"
DELIVER_METHOD = "/datafly.amperity.v1.AmperityService/Deliver"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all threads included (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process in bytes (/proc/PID/statm)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def visitor_event(
    visitor: int, category: str, *, email: bool, message_id: str = "", kind: str = "page"
) -> pb.Event:
    """A synthetic page event of visitor ``visitor`` (with ``traits.email`` if identified)."""
    event = pb.Event(
        message_id=message_id or f"m-{visitor}-{category}",
        type=kind,
        event="Product Viewed" if kind == "track" else "",
        anonymous_id=f"anon-{visitor}",
    )
    event.properties.update({"category": category, "url": f"https://shop.example/{category}"})
    event.context.page.url = f"https://shop.example/{category}/item"
    event.context.page.title = f"{category} item"
    event.context.user_agent = "Mozilla/5.0 (bench)"
    event.context.ip = "203.0.113.7"
    if email:
        event.traits.update({"email": f"visitor{visitor}@example.com"})
    return event


def visitor_email(visitor: int) -> str:
    """The email a visitor identifies with (every third visitor does)."""
    return f"visitor{visitor}@example.com"


def identifies(visitor: int) -> bool:
    """Whether a visitor identifies with an email (a third of them)."""
    return visitor % 3 == 0


@dataclass
class Processes:
    """Processes started by one benchmark; all stopped by ``close``."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))
    started: list[Process] = field(default_factory=list)

    async def start(
        self, command: Sequence[str], ready: str, name: str, ready_within: float = 60.0
    ) -> Process:
        """Start a process and wait for its ready line."""
        process = await start_process(
            command,
            ready=ready,
            log=self.workdir / f"{name}.log",
            ready_within=ready_within,
        )
        self.started.append(process)
        return process

    def config(self, name: str, config: dict[str, Any]) -> Path:
        """Write a TOML config file; its path."""
        path = self.workdir / f"{name}.toml"
        path.write_text(tomli_w.dumps(config))
        return path

    async def service(
        self,
        base_url: str,
        *,
        cache: dict[str, Any] | None = None,
        workers: int = 1,
        gateway: bool = False,
        keys: Keys | None = None,
        cli: Sequence[str] = CLI,
        **overrides: Any,
    ) -> tuple[Process, str]:
        """Start ``amperity-signal serve``; the process and its gRPC target."""
        keys = keys or mint_keys(ttl=86_400)
        table = integration_dict(
            base_url,
            keys,
            integration_id="web",
            personalisation_enabled=True,
            personalisation_context_mappings=[
                {"source": "properties.category", "target": "pageCategory"}
            ],
            **overrides,
        )
        grpc_port = free_port() if workers > 1 else 0
        config = {
            "server": {
                "grpc_address": f"127.0.0.1:{grpc_port}",
                "http_address": f"127.0.0.1:{free_port()}",
                "grace_period": 1.0,
                "workers": workers,
            },
            "cache": {"backend": "memory", **(cache or {})},
            "integrations": [table],
        }
        path = self.config(f"service-{len(self.started)}", config)
        args = [] if gateway else ["--no-gateway"]
        ready = "gateway listening on " if gateway else "grpc listening on "
        process = await self.start(
            [*cli, "serve", "--config", str(path), "--workers", str(workers), *args],
            ready,
            f"service-{len(self.started)}",
        )
        target = process.output_value("grpc listening on ")
        if workers > 1:
            target = f"127.0.0.1:{grpc_port}"
        return process, target

    async def close(self) -> None:
        """Stop every started process, newest first."""
        for process in reversed(self.started):
            await process.stop(grace=5.0)
        self.started.clear()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def ratio(ours: float, bare: float) -> float:
    """``ours / bare``, 0 when the baseline is 0."""
    return ours / bare if bare else 0.0


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


async def interleaved(
    rounds: int, measures: Sequence[Callable[[], Awaitable[dict[str, Any]]]]
) -> list[list[dict[str, Any]]]:
    """Run each measurement once per round, in turn: ``result[round][measure]``.

    The machines are shared and noisy, and noise drifts over minutes: measuring ours and
    the baseline side by side in several short rounds, then taking the median of the
    per-round ratios, keeps a slow drift from landing on one side of a comparison.
    """
    results: list[list[dict[str, Any]]] = []
    for _ in range(rounds):
        results.append([await measure() for measure in measures])
    return results
