"""``TalliedCounter``: plain-int counts that every scrape sees exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from amperity_signal.metrics import Metrics

HIT = {"cache": "attrs", "result": "hit"}


def scraped(metrics: Metrics) -> list[str]:
    """The ``amperity_signal_cache_total`` lines of a ``/metrics`` body."""
    body = generate_latest(metrics.registry).decode()
    return [line for line in body.splitlines() if line.startswith("amperity_signal_cache_total")]


def test_tallied_counts_are_exact_at_every_scrape() -> None:
    """Counts held in a tally are folded in at each scrape, once, beside the child's own."""
    metrics = Metrics()
    tally = metrics.cache_events.tally("attrs", "hit")
    for _ in range(3):
        tally.inc()
    assert scraped(metrics) == ['amperity_signal_cache_total{cache="attrs",result="hit"} 3.0']
    assert scraped(metrics) == ['amperity_signal_cache_total{cache="attrs",result="hit"} 3.0']
    tally.inc()
    metrics.cache_events.labels(cache="attrs", result="hit").inc()
    assert metrics.registry.get_sample_value("amperity_signal_cache_total", HIT) == 5


def test_one_tally_per_child() -> None:
    """Asking again gives the same tally: asking per read does not grow a list."""
    metrics = Metrics()
    first = metrics.cache_events.tally("attrs", "hit")
    assert metrics.cache_events.tally("attrs", "hit") is first
    assert metrics.cache_events.tally("attrs", "miss") is not first


def test_with_several_workers_the_child_counts_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In multiprocess mode ``/metrics`` reads every worker's files: no count may wait."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    metrics = Metrics()
    counts = metrics.cache_events.tally("attrs", "hit")
    assert counts is metrics.cache_events.labels("attrs", "hit")
    counts.inc()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("amperity_signal_cache_total", HIT) == 1
