"""(5) Memory: RSS while distinct visitors go through the real Enricher and MemoryStore.

A spawned process builds the service's ``Enricher`` over ``build_cache`` (the bounded
in-memory LRU, ``[cache] max_entries`` at its default) with a fake Profile API client that
answers every lookup with a profile of five attributes and every personalised call with one
offer, then pushes ``memory_visitors`` distinct visitors through it (a third identify with an
email; ten page categories; personalisation on), sampling RSS from ``/proc/self/statm``.
Each new visitor writes 4-5 cache entries (``res``, ``attrs``, ``good``, ``pers``,
``perslast`` and, for identified ones, ``ident``), so the bound is reached after roughly
``max_entries / 4.5`` visitors; from there RSS must stay flat.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.benchmarks import loadgen
from tests.benchmarks.common import CATEGORIES, identifies, visitor_email
from tests.benchmarks.profiles import Profile

LIMIT_BYTES = 512 * 1024 * 1024
PLATEAU_BYTES_PER_1000 = 1024
"""Growth per 1,000 visitors, once the store is full, below which RSS has stopped growing."""
SAMPLES = 40
ATTRIBUTES = {
    "Persona": "Value Hunter",
    "LifetimeTier": "Gold",
    "FavoriteBrand": "Acme Outdoor",
    "NextBestOffer": "free-shipping",
    "ChurnRisk": "low",
}


@dataclass(frozen=True)
class _Profile:
    profile_id: str
    attributes: dict[str, Any] = field(default_factory=lambda: dict(ATTRIBUTES))


class _Client:
    """A Profile API answering every identifier with a profile derived from it."""

    async def lookup(self, key: str, value: str, *, deadline: float | None) -> _Profile | None:
        return _Profile("p-" + hashlib.sha1(value.encode()).hexdigest()[:12])

    async def get_profile(
        self,
        profile_id: str,
        *,
        context: Mapping[str, str] | None = None,
        deadline: float | None,
    ) -> _Profile | None:
        profile = _Profile(profile_id)
        if context:
            profile.attributes["Offer"] = f"{context.get('pageCategory', 'none')}-promo"
        return profile


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def drive(visitors: int, max_entries: int | None) -> dict[str, Any]:
    """In a spawned process: push ``visitors`` distinct visitors through the Enricher."""
    from amperity_signal.allocator import fix_mmap_threshold
    from amperity_signal.config import CacheSettings, settings_from_dict
    from amperity_signal.enrich import Enricher
    from amperity_signal.enrich.cache import build_cache
    from amperity_signal.metrics import Metrics
    from tests.support import integration_dict, mint_keys

    fix_mmap_threshold()  # as each service process does (runner.py)
    cache_table: dict[str, Any] = {"backend": "memory", "jitter": 0}
    if max_entries is not None:
        cache_table["max_entries"] = max_entries
    settings = settings_from_dict(
        {
            "server": {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"},
            "cache": cache_table,
            "integrations": [
                integration_dict(
                    "http://127.0.0.1:9",
                    mint_keys(),
                    personalisation_enabled=True,
                    personalisation_context_mappings=[
                        {"source": "properties.category", "target": "pageCategory"}
                    ],
                )
            ],
        },
        {},
    )
    integration = settings.integrations[0]
    cache_settings: CacheSettings = settings.cache
    metrics = Metrics()
    client = _Client()
    store = build_cache(cache_settings, metrics)
    enricher = Enricher(cache_settings, client_for=lambda _id: client, cache=store, metrics=metrics)
    every = max(1, visitors // SAMPLES)

    async def main() -> list[dict[str, float]]:
        samples = [{"visitors": 0, "rss": _rss(), "entries": 0, "seconds": 0.0}]
        started = time.monotonic()
        for v in range(visitors):
            category = CATEGORIES[v % len(CATEGORIES)]
            event: dict[str, Any] = {
                "message_id": f"m-{v}",
                "type": "page",
                "anonymous_id": f"anon-{v}",
                "canonical_id": f"anon-{v}",
                "properties": {"category": category, "url": f"https://shop.example/{category}"},
            }
            if identifies(v):
                event["traits"] = {"email": visitor_email(v)}
            result = await enricher.enrich(integration, event, deadline=None)
            assert result.resolved, result.warnings
            if (v + 1) % every == 0:
                samples.append(
                    {
                        "visitors": v + 1,
                        "rss": _rss(),
                        "entries": store.store.size(),  # type: ignore[attr-defined]
                        "seconds": time.monotonic() - started,
                    }
                )
        return samples

    samples = asyncio.run(main())
    gc.collect()
    return {
        "max_entries": cache_settings.max_entries,
        "samples": samples,
        "final_rss_after_gc": _rss(),
    }


async def run(profile: Profile) -> dict[str, Any]:
    """RSS against visitors; the plateau after the bound, and the 512 MB limit."""
    result = await asyncio.to_thread(loadgen.run_in_process, drive, profile.memory_visitors, None)
    samples = result["samples"]
    bound = result["max_entries"]
    full = [s for s in samples if s["entries"] >= bound]
    # "RSS stops growing": a leak grows with every visitor, while the allocator settles in
    # a few one-off steps after the store fills (dict tables resized under churn, arenas
    # kept for reuse). So the growth is measured over the second half of the samples taken
    # at the bound, and the plateau holds when it is under 1 KB per 1,000 visitors (a
    # single leaked small object per visitor would be 50 KB or more). The one-off settling
    # is reported beside it: RSS at the end against RSS when the store first filled.
    after = full[len(full) // 2 :]
    growth = (
        (after[-1]["rss"] - after[0]["rss"])
        / max(after[-1]["visitors"] - after[0]["visitors"], 1)
        * 1000
        if len(after) >= 2
        else float("nan")
    )
    settled = (samples[-1]["rss"] - full[0]["rss"]) if full else float("nan")
    peak = max(s["rss"] for s in samples)
    baseline = samples[0]["rss"]
    at_bound = full[0] if full else samples[-1]
    per_entry = (at_bound["rss"] - baseline) / max(at_bound["entries"], 1)
    plateau = len(after) >= 2 and growth < PLATEAU_BYTES_PER_1000
    under_limit = peak < LIMIT_BYTES
    mb = 1024 * 1024
    return {
        "table": [
            (
                f"memory peak RSS, {samples[-1]['visitors']:,} visitors (max_entries={bound:,})",
                f"{peak / mb:.0f} MB",
                f"{baseline / mb:.0f} MB at start",
                "",
                f"<512 MB {'MET' if under_limit else 'MISSED'}",
            ),
            (
                f"memory growth, last {after[-1]['visitors'] - after[0]['visitors']:,} visitors "
                "at the bound (KB / 1,000 visitors)"
                if len(after) >= 2
                else "memory growth at the bound (too few samples)",
                f"{growth / 1024:.2f}",
                f"{per_entry:.0f} B/entry to the bound; settled +{settled / mb:.0f} MB after",
                "",
                f"plateau {'MET' if plateau else 'MISSED'}",
            ),
        ],
        "max_entries": bound,
        "samples": samples,
        "bytes_per_entry_to_bound": per_entry,
        "growth_bytes_per_1000_visitors_second_half_at_bound": growth,
        "settling_bytes_after_bound": settled,
        "peak_rss": peak,
        "targets": {"under_512mb": under_limit, "plateau": plateau},
    }
