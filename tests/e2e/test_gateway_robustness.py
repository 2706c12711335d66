"""Bad requests against the real gateway process: always 4xx JSON, never a 500.

Each batch of requests leaves from its own loopback address (127.0.0.N), so the
per-client rate limit stays out of the way except where it is the subject.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from amperity_signal.gateway.openapi import openapi_document
from tests.e2e.stack import Service, Stack

pytestmark = pytest.mark.e2e

KEY = {"X-Pipeline-Key": "pk_web"}
JSON = {"Content-Type": "application/json"}
MEGABYTE = b'{"event": "' + b"x" * (1024 * 1024) + b'"}'
_addresses = (f"127.0.0.{n}" for n in itertools.count(10))


async def _clients(service: Service) -> AsyncGenerator[httpx.AsyncClient, None]:
    """A fresh client (and client IP) for every few requests."""
    while True:
        transport = httpx.AsyncHTTPTransport(local_address=next(_addresses))
        async with httpx.AsyncClient(
            base_url=service.http_url, transport=transport, timeout=30
        ) as client:
            yield client


def _bad_requests() -> list[tuple[str, str, dict[str, str], bytes, int]]:
    """(method, url, headers, body, expected status) for every route and kind of abuse."""
    paths = [p.replace("{name}", "x") for p in openapi_document()["paths"]]
    posts = ["/v1/t", "/v1/p", "/v1/i", "/v1/batch", "/v1/consent"]
    cases: list[tuple[str, str, dict[str, str], bytes, int]] = []
    for path in paths:
        wrong = ["PUT", "DELETE", "PATCH"] + (["GET"] if path in posts else ["POST"])
        cases += [(method, path, {}, b"", 405) for method in wrong]
        for size in (20_000, 100_000, 200_000):
            cases.append(("GET", path, {"Cookie": "c=" + "y" * size}, b"", 431))
    for path in posts:
        cases += [
            ("POST", path, {**KEY, **JSON}, b"{not json", 400),
            ("POST", path, {**KEY, **JSON}, b'{"a": NaN}', 400),
            ("POST", path, {**KEY, **JSON}, b"\xff\xfe", 400),
            ("POST", path, {**KEY, **JSON}, b"", 400),
            ("POST", path, {**KEY, **JSON}, MEGABYTE, 413),
            ("POST", path, {**KEY, "Content-Type": "application/xml"}, b"<a/>", 415),
            ("POST", path, JSON, b"{}", 400),
            ("POST", f"{path}?pipeline_key=%FF%FE", JSON, b"{}", 400),
            ("POST", f"{path}?email=alice@example.com", {**KEY, **JSON}, b"{}", 400),
        ]
    for path in posts[:3]:
        unknown_key = {"X-Pipeline-Key": "pk_nope", **JSON}
        cases.append(("POST", path, unknown_key, b'{"anonymousId": "a"}', 404))
    cases += [("POST", "/v1/t", {**KEY, **JSON}, b'{"type": 5, "anonymousId": "a"}', 400)]
    cases += [("POST", "/v1/batch", {**KEY, **JSON}, b'{"batch": {}}', 400)]
    unknown = {"X-Pipeline-Key": "pk_nope", **JSON}
    cases += [("POST", "/v1/consent", unknown, b'{"anonymousId": "a", "consent": {}}', 404)]
    cases += [("POST", "/v1/consent", {**KEY, **JSON}, b'{"anonymousId": "a"}', 400)]
    enrich = "/v1/enrich"
    cases += [
        ("GET", enrich, KEY, b"", 400),
        ("GET", f"{enrich}?provider=other", KEY, b"", 400),
        ("GET", f"{enrich}?provider=amperity", {}, b"", 400),
        ("GET", f"{enrich}?provider=amperity&pipeline_key=%00%FF", {}, b"", 400),
        ("GET", f"{enrich}?provider=amperity&email=alice@example.com", KEY, b"", 400),
        ("GET", f"{enrich}?provider=amperity&user_id=u1", KEY, b"", 400),
        ("GET", f"{enrich}?provider=amperity&provider=amperity", KEY, b"", 400),
        ("GET", f"{enrich}?provider=amperity&anonymous_id={'a' * 300}", KEY, b"", 400),
        ("GET", f"{enrich}?provider=amperity&anonymous_id=a", {"X-Pipeline-Key": "pk_x"}, b"", 404),
        ("GET", f"{enrich}?provider=%FF", {**KEY, **JSON}, MEGABYTE, 400),
        ("GET", "/v1/%FF", {}, b"", 404),
        ("GET", "/nowhere", {}, b"", 404),
        ("GET", "/demo/%2e%2e%2fpyproject.toml", {}, b"", 404),
        ("GET", "/live", {}, b"", 404),
        ("GET", "/live?token=guess", {}, b"", 404),
        ("GET", "/live/stream?replay=x", {}, b"", 404),
    ]
    return cases


def _status_samples(text: str) -> set[str]:
    return {
        s.labels["status"]
        for family in text_string_to_metric_families(text)
        if family.name == "amperity_signal_gateway_seconds"
        for s in family.samples
    }


async def test_every_route_answers_bad_requests_with_4xx_json_and_never_500(
    stack: Stack,
) -> None:
    """Wrong methods, huge headers, bad JSON, 1 MB bodies, bad parameters: 4xx JSON each."""
    sandbox = await stack.sandbox()
    service = await stack.service(sandbox)
    clients = _clients(service)
    cases = _bad_requests()
    failures: list[Any] = []
    for start in range(0, len(cases), 20):
        client = await anext(clients)
        for method, url, headers, body, expected in cases[start : start + 20]:
            response = await client.request(method, url, headers=headers, content=body)
            is_json = response.headers.get("content-type", "").startswith("application/json")
            error = response.json().get("error", {}) if is_json else {}
            if response.status_code != expected or not {"code", "message"} <= set(error):
                failures.append((method, url[:80], expected, response.status_code, error))
    await clients.aclose()
    assert not failures

    async with httpx.AsyncClient(base_url=service.http_url) as client:
        limited = await asyncio.gather(
            *(client.get("/v1/enrich?provider=amperity", headers=KEY) for _ in range(100))
        )
        metrics = (await client.get("/metrics")).text
    refused = [r for r in limited if r.status_code == 429]
    assert refused
    assert refused[0].json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused[0].headers["retry-after"]) >= 1
    statuses = _status_samples(metrics)
    assert {"400", "404", "405", "413", "415", "429", "431"} <= statuses
    assert not [s for s in statuses if s.startswith("5")]
    assert "Traceback" not in stack.logs()
