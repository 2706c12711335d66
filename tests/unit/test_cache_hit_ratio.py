"""``amperity_signal_cache_hit_ratio``: computed at the scrape from the page's own counters."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from amperity_signal.metrics import Metrics, WithCacheHitRatio

RATIO = "amperity_signal_cache_hit_ratio"


def ratios(text: str) -> dict[str, float]:
    """The ratio series of a ``/metrics`` body, by their ``cache`` label."""
    return {
        sample.labels["cache"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == RATIO
    }


def count(metrics: Metrics, kind: str, result: str, times: int) -> None:
    """Count ``times`` lookups of one kind and result, through the tally the service uses."""
    tally = metrics.cache_events.tally(kind, result)
    for _ in range(times):
        tally.inc()


def test_each_kind_and_all_show_hits_over_hit_miss_and_error() -> None:
    """Exact ratios; dampened and stale, hits counted again, do not count twice."""
    metrics = Metrics()
    count(metrics, "attrs", "hit", 3)
    count(metrics, "attrs", "miss", 1)
    count(metrics, "res", "hit", 3)
    count(metrics, "res", "dampened", 2)
    count(metrics, "res", "miss", 4)
    count(metrics, "res", "error", 1)
    count(metrics, "good", "hit", 1)
    count(metrics, "good", "stale", 1)
    count(metrics, "good", "miss", 1)
    text = generate_latest(WithCacheHitRatio(metrics.registry)).decode()
    assert ratios(text) == {"attrs": 3 / 4, "res": 3 / 8, "good": 1 / 2, "all": 7 / 14}
    assert f"# TYPE {RATIO} gauge" in text


def test_a_kind_without_lookups_has_no_series() -> None:
    """A counter child at zero (or only dampened hits) gives no 0/0; no lookups, no ratio."""
    metrics = Metrics()
    assert ratios(generate_latest(WithCacheHitRatio(metrics.registry)).decode()) == {}
    metrics.cache_events.tally("pers", "miss")  # the child exists, at 0
    metrics.cache_events.tally("pers", "hit")
    count(metrics, "res", "dampened", 1)
    assert ratios(generate_latest(WithCacheHitRatio(metrics.registry)).decode()) == {}
    count(metrics, "attrs", "miss", 2)
    text = generate_latest(WithCacheHitRatio(metrics.registry)).decode()
    assert ratios(text) == {"attrs": 0.0, "all": 0.0}
    assert "NaN" not in text


def test_the_ratio_follows_the_counters_at_each_scrape() -> None:
    """Recomputed at every scrape from the counts so far, tallied or counted on the child."""
    metrics = Metrics()
    page = WithCacheHitRatio(metrics.registry)
    count(metrics, "attrs", "hit", 1)
    assert ratios(generate_latest(page).decode()) == {"attrs": 1.0, "all": 1.0}
    metrics.cache_events.labels(cache="attrs", result="error").inc()
    count(metrics, "ident", "miss", 2)
    assert ratios(generate_latest(page).decode()) == {"attrs": 0.5, "ident": 0.0, "all": 0.25}


def test_with_several_workers_the_ratio_is_of_the_summed_counters(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two workers' files: one series per kind, hits over lookups of both (not a mean)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for worker, (hits, misses) in enumerate([(1, 0), (1, 2)], start=1):
        # Each worker's values go to its own files, as under `serve --workers 2`.
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda w=worker: w))  # type: ignore[no-untyped-call]
        metrics = Metrics()
        count(metrics, "attrs", "hit", hits)
        count(metrics, "attrs", "miss", misses)
    text = generate_latest(WithCacheHitRatio(MultiProcessCollector(None, str(tmp_path)))).decode()  # type: ignore[no-untyped-call]
    assert ratios(text) == {"attrs": 2 / 4, "all": 2 / 4}  # the mean of 1 and 1/3 is 2/3
    assert [line for line in text.splitlines() if line.startswith(RATIO)] == [
        f'{RATIO}{{cache="attrs"}} 0.5',
        f'{RATIO}{{cache="all"}} 0.5',
    ]
