"""Prometheus metrics, held by one ``Metrics`` object wired through constructors.

Names are documented in the README's metrics list. A fresh ``CollectorRegistry`` per
``Metrics`` keeps tests independent; in multi-worker mode ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` so the workers' values are aggregated at ``/metrics``.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_CACHE_TOTAL = "amperity_signal_cache_total"
# The results that are lookups; dampened and stale are hits counted again by kind.
_LOOKUPS = frozenset({"hit", "miss", "error"})


class Increments(Protocol):
    """What counts one more: a ``Counter`` child or a ``Tally``."""

    def inc(self) -> Any:
        """Count one."""


class Tally:
    """One ``Counter`` child's increments, kept in a plain int until the counter is collected.

    ``Counter.inc`` costs ~4.4k instructions (its checks and its lock); ``Tally.inc`` a few
    hundred. A page's ``/v1/enrich`` counts four cache reads (docs/benchmarks.md, session
    16). ``TalliedCounter.collect`` folds the count into the child, so every scrape (and
    every ``get_sample_value``) sees exact values. Incremented and collected on one thread:
    the event loop's, where the service and the gateway's ``/metrics`` both run.
    """

    __slots__ = ("_child", "count")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.count = 0

    def inc(self) -> None:
        """Count one."""
        self.count += 1

    def fold(self) -> None:
        """Add the count to the child and start again from zero."""
        count = self.count
        if count:
            self.count = 0
            self._child.inc(count)


class TalliedCounter(Counter):
    """A ``Counter`` whose hottest children may be counted through a ``Tally``.

    Each ``collect`` first folds every tally into its child. With ``PROMETHEUS_MULTIPROC_DIR``
    set (several workers) ``tally`` gives the child itself: there ``/metrics`` reads every
    worker's values from their files, where a count still held in another worker's tally
    would be missing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tallies: dict[tuple[str, ...], Tally] = {}

    def tally(self, *labelvalues: str) -> Increments:
        """What counts one more for these label values: a ``Tally``, or the child itself.

        One tally per child, however often it is asked for.
        """
        child = self.labels(*labelvalues)
        if values.ValueClass is not values.MutexValue:  # multiprocess mode
            return child
        tally = self._tallies.get(labelvalues)
        if tally is None:
            tally = self._tallies[labelvalues] = Tally(child)
        return tally

    def collect(self) -> Iterable[Metric]:
        """The counter's samples, every tally folded in first."""
        for tally in self._tallies.values():
            tally.fold()
        return super().collect()


class Observes(Protocol):
    """What observes a value: a ``Histogram`` child or a ``HistogramTally``."""

    def observe(self, amount: float) -> Any:
        """Observe ``amount``."""


class HistogramTally:
    """One ``Histogram`` child's observations, kept in plain numbers.

    ``Histogram.observe`` costs ~9.7k instructions (its checks, a Python walk over the
    bounds and two locked increments); this a bisection and two additions. Each request
    to ``/v1/enrich`` makes two (the gateway's and the RPC's latency). Never folded into
    the child (no public call adds to its buckets): ``TalliedHistogram.collect`` adds the
    tally to the child's samples instead. One thread, as ``Tally``.
    """

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is not below it."""
        self.sum += amount
        self.counts[bisect_left(self._bounds, amount)] += 1

    def added(self, sample: Sample, bounds: Sequence[float]) -> Sample:
        """``sample`` of the child (a bucket, the count or the sum) with this tally added."""
        name = sample.name
        if name.endswith("_bucket"):
            last = bisect_left(bounds, float(sample.labels["le"]))
            return sample._replace(value=sample.value + sum(self.counts[: last + 1]))
        if name.endswith("_count"):
            return sample._replace(value=sample.value + sum(self.counts))
        if name.endswith("_sum"):
            return sample._replace(value=sample.value + self.sum)
        return sample


class TalliedHistogram(Histogram):
    """A ``Histogram`` whose hottest children may observe through a ``HistogramTally``.

    ``collect`` adds each tally to its child's samples, so every scrape is exact. With
    ``PROMETHEUS_MULTIPROC_DIR`` set, ``tally`` gives the child itself (as
    ``TalliedCounter.tally``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buckets = [float(b) for b in kwargs.get("buckets", Histogram.DEFAULT_BUCKETS)]
        self._bounds = buckets if buckets[-1] == math.inf else [*buckets, math.inf]
        self._tallies: dict[tuple[str, ...], HistogramTally] = {}

    def tally(self, *labelvalues: str) -> Observes:
        """What observes for these label values: a ``HistogramTally``, or the child itself."""
        child = self.labels(*labelvalues)
        if values.ValueClass is not values.MutexValue:  # multiprocess mode
            return child
        tally = self._tallies.get(labelvalues)
        if tally is None:
            tally = self._tallies[labelvalues] = HistogramTally(self._bounds)
        return tally

    def collect(self) -> Iterable[Metric]:
        """The histogram's samples, each child's tally added."""
        metrics = list(super().collect())
        if not self._tallies:
            return metrics
        names = self._labelnames
        for metric in metrics:
            samples = []
            for sample in metric.samples:
                tally = self._tallies.get(tuple(sample.labels[name] for name in names))
                samples.append(sample if tally is None else tally.added(sample, self._bounds))
            metric.samples = samples
        return metrics


class Metrics:
    """Every metric the service exports."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock  # wall-clock seconds, for the days to a key's expiry
        r = self.registry
        # Counted once per Deliver, and the Amperity call once per request it makes:
        # tallied, see ``Tally`` and ``HistogramTally``.
        self.deliveries = TalliedCounter(
            "amperity_signal_deliveries",
            "Events handled by Deliver, by integration, Amperity type and outcome.",
            ["integration", "amperity_type", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "amperity_signal_amperity_retries",
            "Retried Amperity requests, by integration, endpoint and cause.",
            ["integration", "endpoint", "cause"],
            registry=r,
        )
        self.partner_calls = TalliedCounter(
            "amperity_signal_amperity_calls",
            "HTTP requests made to Amperity, by integration, endpoint and status (0 = none).",
            ["integration", "endpoint", "status"],
            registry=r,
        )
        self.partner_latency = TalliedHistogram(
            "amperity_signal_amperity_call_seconds",
            "Latency of single HTTP requests to Amperity, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Four reads per page (``JsonCache``): tallied, see ``Tally``.
        self.cache_events = TalliedCounter(
            "amperity_signal_cache",
            "Cache lookups by cache and result: hit, miss, error; dampened and stale hits "
            "are also counted by kind.",
            ["cache", "result"],
            registry=r,
        )
        self.single_flight_joins = Counter(
            "amperity_signal_single_flight_joins",
            "Requests that joined another request's partner call instead of making one.",
            ["integration"],
            registry=r,
        )
        self.rate_limiter_waits = Counter(
            "amperity_signal_rate_limiter_waits",
            "Requests that waited for the per-tenant rate limit, by integration.",
            ["integration"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "amperity_signal_breaker_open",
            "1 while the integration's profile breaker stops partner calls.",
            ["integration"],
            registry=r,
        )
        self.enrichment_degraded = Counter(
            "amperity_signal_enrichment_degraded",
            "Enrichments that ran without a cache or failed, by integration and cause.",
            ["integration", "cause"],
            registry=r,
        )
        # Recomputed at every scrape (``refresh_key_expiry``); across workers the smallest,
        # that is the freshest, value is shown: one series per key rather than one per pid.
        self.token_days_to_expiry = Gauge(
            "amperity_signal_token_days_to_expiry",
            "Days until an Amperity key expires (negative once expired), by integration/key.",
            ["integration", "key"],
            registry=r,
            multiprocess_mode="min",
        )
        self._key_expiries: dict[tuple[str, str], float] = {}
        # Observed once per RPC and per gateway request: tallied, see ``HistogramTally``.
        self.rpc_latency = TalliedHistogram(
            "amperity_signal_rpc_seconds",
            "gRPC handling time by method and status code.",
            ["method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gateway_latency = TalliedHistogram(
            "amperity_signal_gateway_seconds",
            "HTTP gateway handling time by route and status.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def key_expires(self, integration_id: str, key: str, expires_at: datetime) -> None:
        """Track when one key expires; ``token_days_to_expiry`` counts down to it."""
        self._key_expiries[integration_id, key] = expires_at.timestamp()
        self.refresh_key_expiry()

    def refresh_key_expiry(self) -> None:
        """Set ``token_days_to_expiry`` of every tracked key from the time now.

        Called for each ``/metrics`` scrape: a value set once at start would read the same
        for as long as the service runs, and an alert on it would never fire.
        """
        current = self._clock()
        for (integration_id, key), expires in self._key_expiries.items():
            days = (expires - current) / 86_400
            self.token_days_to_expiry.labels(integration_id, key).set(days)


class WithCacheHitRatio:
    """What ``/metrics`` shows: every metric of ``source``, and the cache hit ratio of them.

    ``amperity_signal_cache_hit_ratio{cache}`` is hits / (hit + miss + error) of the
    ``amperity_signal_cache_total`` samples this very collect gives, by kind and over
    ``cache="all"``: under ``--workers`` the summed counters of every worker, so one series
    per kind. Computed only here, at the scrape: the lookups count exactly as before. A kind
    with no lookup yet has no series (no 0/0).

    Args:
        source: The registry, or the multiprocess collector of the workers' files.
    """

    def __init__(self, source: Collector) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        """``source``'s metrics, the ratio right after the counters it is computed from."""
        metrics = list(self._source.collect())
        for at, metric in enumerate(metrics):
            ratio = cache_hit_ratio(metric)
            if ratio is not None:
                metrics.insert(at + 1, ratio)
                break
        return metrics


def cache_hit_ratio(metric: Metric) -> Metric | None:
    """``amperity_signal_cache_hit_ratio`` from ``metric``, if it holds the cache counters."""
    lookups: dict[str, float] = {}
    hits: dict[str, float] = {}
    for sample in metric.samples:
        result = sample.labels.get("result")
        if sample.name != _CACHE_TOTAL or result not in _LOOKUPS:
            continue
        kind = sample.labels["cache"]
        lookups[kind] = lookups.get(kind, 0.0) + sample.value
        if result == "hit":
            hits[kind] = hits.get(kind, 0.0) + sample.value
    if not lookups:
        return None
    ratio = GaugeMetricFamily(
        "amperity_signal_cache_hit_ratio",
        "Cache hits / (hit + miss + error) since the start, by cache; all = every kind.",
        labels=["cache"],
    )
    for kind, count in sorted(lookups.items()):
        if count:
            ratio.add_metric([kind], hits.get(kind, 0.0) / count)
    total = sum(lookups.values())
    if total:
        ratio.add_metric(["all"], sum(hits.values()) / total)
    return ratio
