"""(3) Partner-call economy: Profile API calls per 1,000 delivered events.

A seeded sandbox holds one profile per synthetic visitor (device cookie ``anon-N``; every
third visitor also an email), so every visitor resolves on its first lookup and the
minimum is well defined. Events follow a Zipf law over visitors, a uniform choice of ten
page categories, and personalisation on the category. The benchmark replays them through
Deliver, counts the sandbox's lookup/profile requests, and computes two references over the
same dispatch timeline: the minimum the configured TTLs allow (one lookup per identifier
per ``resolution_ttl``, one attribute fetch per profile per ``attribute_ttl``, one
personalised fetch per profile and context per ``personalized_ttl``) and a naive connector
with no cache (one lookup and one personalised fetch per event). Jitter is 0 here so the
minimum is exact; rate limits are raised (sandbox and connector) so no 429 retry counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Mapping
from importlib import resources
from typing import Any

import httpx
import yaml

from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.benchmarks import loadgen
from tests.benchmarks.common import (
    CATEGORIES,
    DELIVER_METHOD,
    PYTHON,
    Processes,
    identifies,
    visitor_email,
    visitor_event,
)
from tests.benchmarks.profiles import Profile

CACHE: dict[str, float] = {
    "resolution_ttl": 86_400,
    "attribute_ttl": 60,
    "personalized_ttl": 120,
    "not_found_ttl": 300,
    "jitter": 0,
}
ZIPF_EXPONENT = 1.0
REPLAY_CONCURRENCY = 32


def profile_id(visitor: int) -> str:
    """The seeded profile id of a visitor."""
    return f"p-{visitor:012x}"


def sandbox_data(visitors: int) -> dict[str, Any]:
    """The default sandbox world plus one profile per synthetic visitor."""
    text = resources.files("amperity_signal.sandbox").joinpath("default_data.yaml").read_text()
    raw: dict[str, Any] = yaml.safe_load(text)
    collection = raw["tenants"][0]["collections"][0]
    for visitor in range(visitors):
        links: dict[str, list[str]] = {"device_cookie": [f"anon-{visitor}"]}
        if identifies(visitor):
            digest = hashlib.sha256(visitor_email(visitor).encode()).hexdigest()
            links["email_sha256"] = [digest]
        collection["profiles"].append(
            {
                "profile_id": profile_id(visitor),
                "created_at": "2025-01-01T00:00:00Z",
                "attributes": {"Persona": "Bench", "LifetimeTier": "Gold"},
                "links": links,
            }
        )
    return raw


def synthetic_events(count: int, visitors: int, seed: int = 8) -> list[tuple[int, str]]:
    """``(visitor, category)`` pairs: Zipf over visitors, uniform over categories."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** ZIPF_EXPONENT for rank in range(visitors)]
    chosen = rng.choices(range(visitors), weights=weights, k=count)
    return [(visitor, rng.choice(CATEGORIES)) for visitor in chosen]


def model_calls(
    events: list[tuple[int, str]], times: list[float], cache: Mapping[str, float]
) -> dict[str, int]:
    """Profile API calls of an ideal cache with these TTLs over the dispatch timeline."""
    resolved: dict[str, float] = {}
    attributes: dict[str, float] = {}
    personalised: dict[tuple[str, str], float] = {}
    calls = {"lookup": 0, "profile": 0, "personalised": 0}
    order = sorted(range(len(events)), key=times.__getitem__)
    for index in order:
        visitor, category = events[index]
        at = times[index]
        identifier = f"email:{visitor}" if identifies(visitor) else f"cookie:{visitor}"
        pid = profile_id(visitor)
        if resolved.get(identifier, -1.0) <= at:
            calls["lookup"] += 1
            resolved[identifier] = at + cache["resolution_ttl"]
            attributes[pid] = at + cache["attribute_ttl"]
        elif attributes.get(pid, -1.0) <= at:
            calls["profile"] += 1
            attributes[pid] = at + cache["attribute_ttl"]
        if personalised.get((pid, category), -1.0) <= at:
            calls["personalised"] += 1
            personalised[(pid, category)] = at + cache["personalized_ttl"]
    return calls


async def run(profile: Profile) -> dict[str, Any]:
    """Replay the events; measured vs TTL minimum vs naive calls per 1,000 events."""
    processes = Processes()
    events = synthetic_events(profile.economy_events, profile.economy_visitors)
    payloads = [
        pb.DeliverRequest(
            integration_id="web",
            event=visitor_event(visitor, category, email=identifies(visitor), message_id=f"e-{n}"),
        ).SerializeToString()
        for n, (visitor, category) in enumerate(events)
    ]
    data = processes.workdir / "sandbox-data.json"
    data.write_text(json.dumps(sandbox_data(profile.economy_visitors)))
    try:
        sandbox = await processes.start(
            [
                PYTHON,
                "-m",
                "amperity_signal.sandbox",
                "--port",
                "0",
                "--data",
                str(data),
                "--profile-delay",
                "0",
                "--rate-limit",
                "10000",
                "--seed",
                "1",
            ],
            "sandbox listening on ",
            "sandbox",
        )
        url = sandbox.ready_line.split("listening on ", 1)[1].strip()
        _, target = await processes.service(url, cache=CACHE, rate_limit_per_second=10_000)
        replay = await asyncio.to_thread(
            loadgen.run_in_process,
            loadgen.grpc_replay,
            target,
            DELIVER_METHOD,
            payloads,
            REPLAY_CONCURRENCY,
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as inspector:
            stats = (await inspector.get("/_sandbox/stats")).json()
    finally:
        await processes.close()
    by_kind = stats.get("by_kind", {})
    measured = int(by_kind.get("lookup", 0)) + int(by_kind.get("profile", 0))
    minimum = model_calls(events, replay["times"], CACHE)
    minimum_total = sum(minimum.values())
    naive_total = 2 * len(events)
    per_k = 1000 / len(events)
    vs_minimum = measured / minimum_total if minimum_total else 0.0
    vs_naive = naive_total / measured if measured else 0.0
    targets = {"le_1.05x_minimum": vs_minimum <= 1.05, "ge_20x_fewer_than_naive": vs_naive >= 20}
    return {
        "events": len(events),
        "visitors": profile.economy_visitors,
        "delivered": replay["ok"],
        "errors": replay["errors"],
        "replay_seconds": replay["seconds"],
        "sandbox_stats": stats,
        "measured_calls": measured,
        "minimum_calls": minimum,
        "naive_calls": naive_total,
        "per_1000_events": {
            "measured": measured * per_k,
            "ttl_minimum": minimum_total * per_k,
            "naive": naive_total * per_k,
        },
        "ratios": {
            "measured_over_minimum": vs_minimum,
            "naive_over_measured": vs_naive,
            # The best any TTL-respecting connector can do on this workload.
            "naive_over_minimum": naive_total / minimum_total if minimum_total else 0.0,
        },
        "targets": targets,
        "table": [
            (
                f"profile calls /1k events ({len(events)} ev)",
                f"{measured * per_k:.1f}",
                f"{minimum_total * per_k:.1f} TTL min",
                f"{vs_minimum:.3f}",
                f"<=1.05 {'MET' if targets['le_1.05x_minimum'] else 'MISSED'}",
            ),
            (
                "naive / measured calls",
                f"{measured * per_k:.1f}",
                f"{naive_total * per_k:.0f} naive",
                f"{vs_naive:.1f}x fewer",
                f">=20x {'MET' if targets['ge_20x_fewer_than_naive'] else 'MISSED'}",
            ),
        ],
    }
