"""/metrics on the gateway, multi-worker aggregation, and /openapi.json matching the app."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from amperity_signal.gateway import create_gateway_app
from amperity_signal.gateway.openapi import openapi_document
from amperity_signal.metrics import Metrics

from .conftest import gateway_settings
from .fakes import KNOWN_KEY, KNOWN_VISITOR, RunningService


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def test_metrics_exposes_the_registry_with_api_latency(service: RunningService) -> None:
    """/v1 calls, refused ones included, land in amperity_signal_gateway_seconds on /metrics."""
    metrics = Metrics()
    metrics.deliveries.labels("web", "add_to_cart", "delivered", "").inc(3)
    app = create_gateway_app(
        settings=gateway_settings(), grpc_target=service.target, metrics=metrics
    )
    async with _client(app) as gateway:
        ok = await gateway.get(
            f"/v1/enrich?provider=amperity&anonymous_id={KNOWN_VISITOR}",
            headers={"X-Pipeline-Key": KNOWN_KEY},
        )
        assert ok.status_code == 200
        assert (await gateway.get("/v1/enrich?provider=nope")).status_code == 400
        response = await gateway.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    count = "amperity_signal_gateway_seconds_count"
    assert samples[(count, frozenset({("route", "/v1/enrich"), ("status", "200")}))] == 1
    assert samples[(count, frozenset({("route", "/v1/enrich"), ("status", "400")}))] == 1
    delivered = {("integration", "web"), ("amperity_type", "add_to_cart"), ("reason", "")}
    key = ("amperity_signal_deliveries_total", frozenset({*delivered, ("outcome", "delivered")}))
    assert samples[key] == 3


async def test_metrics_of_one_process_has_no_created_series(service: RunningService) -> None:
    """No ``*_created`` line, as under --workers: one per counter and histogram child before.

    prometheus-client adds each child's creation time as a gauge of its own; a counter's
    series doubled for a value nobody queries.
    """
    metrics = Metrics()
    metrics.deliveries.labels("web", "add_to_cart", "delivered", "").inc()
    metrics.retries.labels("web", "events", "timeout").inc()
    metrics.rpc_latency.labels("Deliver", "OK").observe(0.01)
    app = create_gateway_app(
        settings=gateway_settings(), grpc_target=service.target, metrics=metrics
    )
    async with _client(app) as gateway:
        assert (await gateway.get("/v1/enrich?provider=nope")).status_code == 400
        page = (await gateway.get("/metrics")).text
    names = {name for name, _ in _samples(page)}
    assert {"amperity_signal_deliveries_total", "amperity_signal_rpc_seconds_count"} <= names
    assert "amperity_signal_gateway_seconds_count" in names
    assert [line for line in page.splitlines() if "_created" in line] == []


async def test_the_latency_observed_lies_within_the_request(service: RunningService) -> None:
    """``amperity_signal_gateway_seconds`` measures the request: no more than it took."""
    metrics = Metrics()
    app = create_gateway_app(
        settings=gateway_settings(), grpc_target=service.target, metrics=metrics
    )
    async with _client(app) as gateway:
        began = time.perf_counter()
        assert (await gateway.get("/v1/enrich?provider=nope")).status_code == 400
        took = time.perf_counter() - began
    labels = {"route": "/v1/enrich", "status": "400"}
    seconds = metrics.registry.get_sample_value("amperity_signal_gateway_seconds_sum", labels)
    assert seconds is not None
    assert 0 < seconds <= took


async def test_metrics_shows_the_cache_hit_ratio_of_its_own_counters(
    service: RunningService,
) -> None:
    """/metrics carries hits / (hit + miss + error) by kind and for all, beside the counters."""
    metrics = Metrics()
    metrics.cache_events.labels("attrs", "hit").inc(3)
    metrics.cache_events.labels("attrs", "miss").inc()
    metrics.cache_events.labels("res", "hit").inc()
    metrics.cache_events.labels("res", "dampened").inc()
    metrics.cache_events.labels("res", "error").inc()
    app = create_gateway_app(
        settings=gateway_settings(), grpc_target=service.target, metrics=metrics
    )
    async with _client(app) as gateway:
        samples = _samples((await gateway.get("/metrics")).text)
    ratio = {
        dict(labels)["cache"]: value
        for (name, labels), value in samples.items()
        if name == "amperity_signal_cache_hit_ratio"
    }
    assert ratio == {"attrs": 0.75, "res": 0.5, "all": 4 / 6}


async def test_metrics_aggregates_every_worker_in_multiprocess_mode(
    service: RunningService, tmp_path: Path
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, /metrics sums what every worker process recorded."""
    worker = (
        "from amperity_signal.metrics import Metrics\n"
        "Metrics().deliveries.labels('web', 'pageview', 'delivered', '').inc()\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", worker, env=env)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    app = create_gateway_app(
        settings=gateway_settings(), grpc_target=service.target, multiprocess_dir=str(tmp_path)
    )
    async with _client(app) as gateway:
        text = (await gateway.get("/metrics")).text
    labels = {
        ("integration", "web"),
        ("amperity_type", "pageview"),
        ("outcome", "delivered"),
        ("reason", ""),
    }
    assert _samples(text)[("amperity_signal_deliveries_total", frozenset(labels))] == 2


def test_openapi_lists_exactly_the_routes_and_methods_the_app_serves(
    service: RunningService,
) -> None:
    """Every route of the app is in /openapi.json with its methods, and nothing else is."""
    app = create_gateway_app(settings=gateway_settings(), grpc_target=service.target)
    served = {
        route.path: {m.lower() for m in (route.methods or ()) if m != "HEAD"}
        for route in app.routes
        if isinstance(route, Route)
    }
    document = openapi_document()
    described = {path: set(item) for path, item in document["paths"].items()}
    assert described == served
    for path, item in document["paths"].items():
        for operation in item.values():
            assert "431" in operation["responses"], path
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path


async def test_days_to_key_expiry_count_down_between_scrapes(service: RunningService) -> None:
    """token_days_to_expiry is computed at each scrape, not frozen at the value of the start."""
    now = [1_800_000_000.0]
    metrics = Metrics(clock=lambda: now[0])
    expires = datetime.fromtimestamp(now[0] + 10 * 86_400, UTC)
    metrics.key_expires("web", "api_key", expires)
    app = create_gateway_app(
        settings=gateway_settings(), grpc_target=service.target, metrics=metrics
    )
    key = (
        "amperity_signal_token_days_to_expiry",
        frozenset({("integration", "web"), ("key", "api_key")}),
    )
    async with _client(app) as gateway:
        first = _samples((await gateway.get("/metrics")).text)[key]
        now[0] += 3 * 86_400
        later = _samples((await gateway.get("/metrics")).text)[key]
    assert (first, later) == (10, 7)
