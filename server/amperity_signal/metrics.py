"""Prometheus metrics, held by one ``Metrics`` object wired through constructors.

Names are documented in the README's metrics list. A fresh ``CollectorRegistry`` per
``Metrics`` keeps tests independent; in multi-worker mode ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` so the workers' values are aggregated at ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every metric the service exports."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock  # wall-clock seconds, for the days to a key's expiry
        r = self.registry
        self.deliveries = Counter(
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
        self.partner_calls = Counter(
            "amperity_signal_amperity_calls",
            "HTTP requests made to Amperity, by integration, endpoint and status (0 = none).",
            ["integration", "endpoint", "status"],
            registry=r,
        )
        self.partner_latency = Histogram(
            "amperity_signal_amperity_call_seconds",
            "Latency of single HTTP requests to Amperity, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_events = Counter(
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
        self.rpc_latency = Histogram(
            "amperity_signal_rpc_seconds",
            "gRPC handling time by method and status code.",
            ["method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gateway_latency = Histogram(
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
