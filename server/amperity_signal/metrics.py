"""Prometheus metrics, held by one ``Metrics`` object wired through constructors.

Names are documented in the README's metrics list. A fresh ``CollectorRegistry`` per
``Metrics`` keeps tests independent; in multi-worker mode ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` so the workers' values are aggregated at ``/metrics``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from amperity_signal.metric_tallies import Increments, Observes, TalliedCounter, TalliedHistogram

# Increments and Observes: what callers type a tally with, imported from here.
__all__ = [
    "NO_REASON",
    "OTHER_REASON",
    "GatewayMetrics",
    "Increments",
    "Metrics",
    "Observes",
    "WithCacheHitRatio",
    "cache_hit_ratio",
    "reason_label",
]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_CACHE_TOTAL = "amperity_signal_cache_total"
# The results that are lookups; dampened and stale are hits counted again by kind.
_LOOKUPS = frozenset({"hit", "miss", "error"})


NO_REASON = ""
"""The ``reason`` label of a series that needs none (a delivery, an answered request).

Prometheus stores an empty label value as no label at all: those series are the very ones
they were before the label was added.
"""
_REASON_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
OTHER_REASON = "OTHER"
"""The ``reason`` label of anything that is not a reason code (a bug: see ``reason_label``)."""


def reason_label(reason: str) -> str:
    """``reason`` as a ``reason`` label value: a reason code, never free text.

    The label's values are the service's reason codes (the ErrorInfo reasons, UPPER_SNAKE),
    each written in its source: a closed set. Anything else counts as ``OTHER`` rather than
    as one new series per text. Called when a series is first counted, not per event.
    """
    if reason == NO_REASON or _REASON_CODE.fullmatch(reason):
        return reason
    return OTHER_REASON


class GatewayMetrics:
    """What the HTTP gateway records and ``/metrics`` shows: its latency, its refused connections.

    ``amperity-signal gateway``, a process of its own, exports only this: a ``Metrics``
    there listed every family of the service (deliveries, caches, RPCs, ...) with its HELP
    and TYPE lines and never a sample, as if the service's metrics were zero.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No ``*_created`` series (each counter's and histogram's creation time): in the text
        # format each is a gauge of its own, one per labelled child, which made a single
        # process's page ~20 % bigger and doubled its counter series in Prometheus, for
        # values nobody queries; ``--workers``' multiprocess pages never had them.
        # prometheus-client reads the switch at each collect, process-wide.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        # Observed once per gateway request: tallied, see ``metric_tallies.HistogramTally``.
        self.gateway_latency = TalliedHistogram(
            "amperity_signal_gateway_seconds",
            "HTTP gateway handling time by route and status.",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "amperity_signal_gateway_connections_refused",
            "Connections the gateway closed as they were made, by the limit they were over "
            "(client: max_connections_per_client, total: max_connections).",
            ["limit"],
            registry=self.registry,
        )

    def refresh_key_expiry(self) -> None:
        """Bring scrape-time values up to date before ``/metrics``: the gateway has none."""


class Metrics(GatewayMetrics):
    """Every metric the service exports, the embedded gateway's latency among them."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self._clock = clock  # wall-clock seconds, for the days to a key's expiry
        # Counted once per Deliver, and the Amperity call once per request it makes:
        # tallied, see ``metric_tallies``.
        self.deliveries = TalliedCounter(
            "amperity_signal_deliveries",
            "Events handled by Deliver, by integration, Amperity type, outcome and the reason "
            "code of a failed or refused one.",
            ["integration", "amperity_type", "outcome", "reason"],
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
            "HTTP requests made to Amperity, by integration, endpoint and status (0 = none, "
            "with the reason it got none).",
            ["integration", "endpoint", "status", "reason"],
            registry=r,
        )
        self.partner_latency = TalliedHistogram(
            "amperity_signal_amperity_call_seconds",
            "Latency of single HTTP requests to Amperity, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Four reads per page (``JsonCache``): tallied, see ``metric_tallies.Tally``.
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
        # Each worker has its own breaker: across workers the largest value is shown, 1
        # while any of them stops partner calls, one series per integration rather than
        # prometheus-client's default of one per pid (a new set at every restart).
        self.breaker_open = Gauge(
            "amperity_signal_breaker_open",
            "1 while the integration's profile breaker stops partner calls.",
            ["integration"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.enrichment_degraded = Counter(
            "amperity_signal_enrichment_degraded",
            "Enrichments that ran without the cache, by integration and cause.",
            ["integration", "cause"],
            registry=r,
        )
        # Across workers the sum: each holds its own (``consent_pending``).
        self.consent_pending = Gauge(
            "amperity_signal_consent_pending",
            "Consent states the cache did not take, held until they are written.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.consent_unwritten = Counter(
            "amperity_signal_consent_unwritten",
            "Held consent states given up unwritten, by cause: evicted (the hold was full), "
            "stopped (the process stopped first).",
            ["cause"],
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
        # Observed once per RPC: tallied, see ``metric_tallies.HistogramTally``.
        self.rpc_latency = TalliedHistogram(
            "amperity_signal_rpc_seconds",
            "gRPC handling time by method and status code.",
            ["method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # The gateway's latency last, where the page has always listed it.
        super().__init__(r)

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
