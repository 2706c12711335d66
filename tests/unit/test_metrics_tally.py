"""``TalliedCounter``: plain-int counts that every scrape sees exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
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


@pytest.fixture
def multiprocess(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """prometheus-client in multiprocess mode, as a worker of ``serve --workers`` runs it."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    return tmp_path


def test_with_several_workers_the_child_counts_at_once(multiprocess: Path) -> None:
    """In multiprocess mode ``/metrics`` reads every worker's files: no count may wait."""
    tmp_path = multiprocess
    metrics = Metrics()
    counts = metrics.cache_events.tally("attrs", "hit")
    assert counts is metrics.cache_events.labels("attrs", "hit")
    counts.inc()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("amperity_signal_cache_total", HIT) == 1


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""The service's latency buckets (``metrics._LATENCY_BUCKETS``)."""


def latency_lines(registry: CollectorRegistry) -> list[str]:
    """The ``amperity_signal_rpc_seconds`` lines of a scrape, but for the creation times."""
    body = generate_latest(registry).decode()
    return [line for line in body.splitlines() if "rpc_seconds" in line and "created" not in line]


def test_a_tallied_histogram_scrapes_as_a_histogram_observing_the_same() -> None:
    """Buckets (bounds inclusive, +Inf), count and sum: the very lines a Histogram gives."""
    metrics = Metrics()
    plain = CollectorRegistry()
    reference = Histogram(
        "amperity_signal_rpc_seconds",
        "gRPC handling time by method and status code.",
        ["method", "code"],
        buckets=LATENCY_BUCKETS,
        registry=plain,
    ).labels("Enrich", "OK")
    tally = metrics.rpc_latency.tally("Enrich", "OK")
    amounts = [0.0, 1e-9, 0.0005, 0.0007, 0.001, 0.3, 2.5, 9.99, 10.0, 11.0, 3600.0]
    for amount in amounts * 3:
        tally.observe(amount)
        reference.observe(amount)
    assert latency_lines(metrics.registry) == latency_lines(plain)
    labels = {"method": "Enrich", "code": "OK"}
    assert metrics.registry.get_sample_value("amperity_signal_rpc_seconds_count", labels) == 33


def test_a_histogram_child_and_its_tally_add_up() -> None:
    """Observations made on the child itself are not lost beside the tally's."""
    metrics = Metrics()
    metrics.rpc_latency.labels("Enrich", "OK").observe(0.002)
    metrics.rpc_latency.tally("Enrich", "OK").observe(0.004)
    labels = {"method": "Enrich", "code": "OK", "le": "0.005"}
    assert metrics.registry.get_sample_value("amperity_signal_rpc_seconds_bucket", labels) == 2
    assert metrics.rpc_latency.tally("Enrich", "OK") is metrics.rpc_latency.tally("Enrich", "OK")


@pytest.mark.usefixtures("multiprocess")
def test_with_several_workers_the_histogram_child_observes_at_once() -> None:
    """In multiprocess mode the child itself observes (as counters, above)."""
    metrics = Metrics()
    assert metrics.rpc_latency.tally("Enrich", "OK") is metrics.rpc_latency.labels("Enrich", "OK")


def plain_lines(registry: CollectorRegistry, names: tuple[str, ...]) -> list[str]:
    """The scrape's HELP, TYPE and sample lines of ``names`` (``Metrics`` drops ``_created``)."""
    body = generate_latest(registry).decode()
    return [line for line in body.splitlines() if any(name in line for name in names)]


def test_deliver_metrics_scrape_as_the_plain_counters_and_histogram() -> None:
    """Each Deliver's counts, tallied: the same names, help, labels and exact values.

    The reference registry holds what ``Metrics`` declared before they were tallied.
    """
    metrics = Metrics()
    plain = CollectorRegistry()
    deliveries = Counter(
        "amperity_signal_deliveries",
        "Events handled by Deliver, by integration, Amperity type, outcome and the reason "
        "code of a failed or refused one.",
        ["integration", "amperity_type", "outcome", "reason"],
        registry=plain,
    )
    calls = Counter(
        "amperity_signal_amperity_calls",
        "HTTP requests made to Amperity, by integration, endpoint and status (0 = none, "
        "with the reason it got none).",
        ["integration", "endpoint", "status", "reason"],
        registry=plain,
    )
    latency = Histogram(
        "amperity_signal_amperity_call_seconds",
        "Latency of single HTTP requests to Amperity, by endpoint.",
        ["endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=plain,
    )
    names = ("amperity_signal_deliveries", "amperity_signal_amperity_call")
    for n, (outcome, status, seconds) in enumerate(
        [("delivered", "202", 0.004), ("failed", "0", 0.3), ("delivered", "202", 0.0005)] * 7
    ):
        reason = "TIMEOUT" if outcome == "failed" else ""
        metrics.deliveries.tally("web", "view_item", outcome, reason).inc()
        deliveries.labels("web", "view_item", outcome, reason).inc()
        metrics.partner_calls.tally("web", "events", status, reason).inc()
        calls.labels("web", "events", status, reason).inc()
        metrics.partner_latency.tally("events").observe(seconds)
        latency.labels("events").observe(seconds)
        if n % 5 == 0:  # a scrape in between folds what was counted so far
            assert plain_lines(metrics.registry, names) == plain_lines(plain, names)
    assert plain_lines(metrics.registry, names) == plain_lines(plain, names)
    delivered = {
        "integration": "web",
        "amperity_type": "view_item",
        "outcome": "delivered",
        "reason": "",
    }
    assert metrics.registry.get_sample_value("amperity_signal_deliveries_total", delivered) == 14


def test_with_several_workers_the_breaker_gauge_is_one_series_per_integration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One series per integration, 1 while any worker's breaker is open; no pid label.

    prometheus-client's default for a gauge under ``--workers`` is a series per worker pid:
    a new set at every restart, and the README's ``integration`` label alone no longer
    names one series.
    """
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for worker, is_open in enumerate([0, 1, 0], start=1):
        # Each worker's values go to its own files, as under `serve --workers 3`.
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda w=worker: w))  # type: ignore[no-untyped-call]
        Metrics().breaker_open.labels(integration="acme").set(is_open)
    body = generate_latest(MultiProcessCollector(None, path=str(tmp_path))).decode()  # type: ignore[no-untyped-call]
    lines = [line for line in body.splitlines() if line.startswith("amperity_signal_breaker_open")]
    assert lines == ['amperity_signal_breaker_open{integration="acme"} 1.0']
