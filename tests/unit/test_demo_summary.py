"""The demo's summary line on the cache, read off a ``/metrics`` page."""

from __future__ import annotations

from prometheus_client import generate_latest

from amperity_signal.demo import cache_hit_line
from amperity_signal.metrics import Metrics, WithCacheHitRatio

RATIO = "amperity_signal_cache_hit_ratio"


def test_the_demo_summary_reads_the_overall_ratio_off_the_page() -> None:
    """The demo's line shows cache="all" as a percentage, or says there was no lookup."""
    metrics = Metrics()
    page = WithCacheHitRatio(metrics.registry)
    assert cache_hit_line(generate_latest(page).decode()) == "no cache lookups yet"
    metrics.cache_events.labels("attrs", "hit").inc(3)
    metrics.cache_events.labels("res", "miss").inc()
    metrics.cache_events.labels("res", "dampened").inc()
    assert cache_hit_line(generate_latest(page).decode()) == (
        f'hit ratio 75% since the start ({RATIO}{{cache="all"}})'
    )
