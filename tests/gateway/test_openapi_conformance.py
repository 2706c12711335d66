"""Real gateway answers checked against its own /openapi.json: status, media type, headers, body.

A client generated from the document breaks on any answer it does not describe. The fuzz
run (``tests/reliability/test_fuzz_gateway.py``) checks that with schemathesis against the
real service, slowly; these tests check one answer of every status each route gives,
against the fake service in process, so a drift between a route and the document fails
here in a second.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import jsonschema_rs

from amperity_signal.gateway.openapi import openapi_document

from .conftest import GatewayFactory
from .fakes import KNOWN_KEY, KNOWN_VISITOR, RunningService

KEY = {"X-Pipeline-Key": KNOWN_KEY}
ADMIN_TOKEN = "admin-2b8e41d0-conformance"
EVENT: dict[str, Any] = {"event": "Product Viewed", "anonymousId": "anon-1", "messageId": "m-1"}
# Headers a client acts on: each one an answer carries must be in the document.
CONTRACT_HEADERS = ("retry-after", "location", "www-authenticate", "set-cookie", "accept-encoding")
DOCUMENT = openapi_document()

Answer = tuple[str, httpx.Response]
"""The documented path (``/demo/{name}``) an answer came from, and the answer."""


def _schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    root = {"allOf": [schema], "components": DOCUMENT["components"]}
    validator = jsonschema_rs.Draft202012Validator(root)
    return [
        f"/{'/'.join(map(str, error.instance_path))}: {error.message}"
        for error in validator.iter_errors(value)
    ]


def _header_value(value: str, schema: dict[str, Any]) -> Any:
    """A header's text as the JSON value its schema describes (``Retry-After: 7`` → 7)."""
    if schema.get("type") == "integer" and value.isascii() and value.isdigit():
        return int(value)
    return value


def mismatches(path: str, response: httpx.Response) -> list[str]:
    """Where ``response`` differs from what the document says ``path`` answers; [] if nowhere."""
    method = response.request.method
    status = str(response.status_code)
    where = f"{method} {response.request.url.path} {status}"
    described = DOCUMENT["paths"][path][method.lower()]["responses"].get(status)
    if described is None:
        return [f"{where}: the document lists no {status} for {method} {path}"]
    found: list[str] = []
    headers = {name.lower(): spec for name, spec in described.get("headers", {}).items()}
    for name, spec in headers.items():
        value = response.headers.get(name)
        if value is None:
            if spec.get("required"):
                found.append(f"{where}: no {name} header, which the document requires")
            continue
        for error in _schema_errors(spec["schema"], _header_value(value, spec["schema"])):
            found.append(f"{where}: header {name}: {error}")
    found.extend(
        f"{where}: a {name} header the document does not list"
        for name in CONTRACT_HEADERS
        if name in response.headers and name not in headers
    )
    content = described.get("content", {})
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content:
        if response.content:
            found.append(f"{where}: a {media_type} body where the document lists none")
    elif media_type not in content:
        found.append(f"{where}: {media_type} is not among {sorted(content)}")
    elif "schema" in content[media_type]:
        found.extend(
            f"{where}: body {e}"
            for e in _schema_errors(content[media_type]["schema"], response.json())
        )
    return found


def all_mismatches(answers: list[Answer]) -> list[str]:
    """Every mismatch of every answer, so one failure shows them all."""
    return [error for path, response in answers for error in mismatches(path, response)]


async def test_every_enrich_answer_is_described(
    gateway: httpx.AsyncClient, make_gateway: GatewayFactory
) -> None:
    """GET /v1/enrich: attributes, a first touch, each 4xx and a service failure match."""
    enrich = "/v1/enrich?provider=amperity"
    limited = make_gateway(rate_limit_burst=1)
    await limited.get(enrich, headers=KEY)
    answers = [
        (enrich + f"&anonymous_id={KNOWN_VISITOR}", 200),
        (enrich, 200),
        ("/v1/enrich?provider=other", 400),
        (enrich + "&email=a@example.com", 400),
        (enrich + "&anonymous_id=" + "x" * 201, 400),
        (enrich + "&anonymous_id=visitor-slow", 504),
    ]
    checked: list[Answer] = []
    for url, status in answers:
        response = await gateway.get(url, headers=KEY)
        assert response.status_code == status, (url, response.text)
        checked.append(("/v1/enrich", response))
    unknown = await gateway.get(enrich + "&anonymous_id=a", headers={"X-Pipeline-Key": "pk_other"})
    no_key = await gateway.get(enrich)
    too_large = await gateway.get(enrich, headers={**KEY, "Cookie": "c=" + "x" * 17_000})
    rate_limited = await limited.get(enrich, headers=KEY)
    for response, status in [(unknown, 404), (no_key, 400), (too_large, 431), (rate_limited, 429)]:
        assert response.status_code == status, response.text
        checked.append(("/v1/enrich", response))

    assert all_mismatches(checked) == []


async def test_every_collector_answer_is_described(
    gateway: httpx.AsyncClient, make_gateway: GatewayFactory
) -> None:
    """/v1/t and /v1/batch: delivered, mixed results, bad bodies, and each failed delivery."""
    checked: list[Answer] = []

    async def post(path: str, status: int, **kwargs: Any) -> None:
        response = await gateway.post(path, **{"headers": KEY, **kwargs})
        assert response.status_code == status, response.text
        checked.append((path, response))

    await post("/v1/t", 200, json=EVENT)
    mixed = [EVENT, {**EVENT, "anonymous_id": 7}, {**EVENT, "event": "fail:UNAVAILABLE"}]
    await post("/v1/batch", 200, json={"batch": mixed})
    await post("/v1/batch", 400, json={"events": []})
    await post("/v1/t", 400, content=b"{not json", headers={**KEY, "Content-Type": "text/plain"})
    await post("/v1/t", 400, json=EVENT, headers={})
    await post("/v1/t", 400, json={**EVENT, "event": "fail:INVALID_ARGUMENT"})
    await post("/v1/t", 404, json=EVENT, headers={"X-Pipeline-Key": "pk_other"})
    await post("/v1/t", 413, json={**EVENT, "properties": {"blob": "x" * 40_000}})
    await post("/v1/t", 415, content=b"event=x", headers={**KEY, "Content-Type": "text/csv"})
    gzipped = {**KEY, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    await post("/v1/t", 415, content=gzip.compress(json.dumps(EVENT).encode()), headers=gzipped)
    await post("/v1/t", 429, json={**EVENT, "event": "fail:RESOURCE_EXHAUSTED"})
    await post("/v1/t", 502, json={**EVENT, "event": "fail:INTERNAL"})
    await post("/v1/t", 503, json={**EVENT, "event": "fail:UNAVAILABLE"})
    await post("/v1/t", 504, json={**EVENT, "event": "fail:DEADLINE_EXCEEDED"})
    await post("/v1/consent", 200, json={"anonymousId": "anon-1", "consent": {"functional": True}})
    await post("/v1/consent", 400, json={"anonymousId": "anon-1", "consent": "yes"})

    assert all_mismatches(checked) == []


async def test_every_operational_answer_is_described(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """Health, readiness (both ways), metrics, this document and every demo asset match."""
    answers: list[tuple[str, str, int]] = [
        ("/healthz", "/healthz", 200),
        ("/readyz", "/readyz", 200),
        ("/metrics", "/metrics", 200),
        ("/openapi.json", "/openapi.json", 200),
        ("/demo", "/demo?pipeline_key=pk", 308),
        ("/demo/", "/demo/", 200),
        ("/demo/{name}", "/demo/datafly.js", 200),
        ("/demo/{name}", "/demo/datafly.mjs", 200),
        ("/demo/{name}", "/demo/index.html", 200),
        ("/demo/{name}", "/demo/other.js", 404),
    ]
    checked: list[Answer] = []
    for path, url, status in answers:
        response = await gateway.get(url)
        assert response.status_code == status, (url, response.text)
        checked.append((path, response))
    await service.set_serving(False)
    not_ready = await gateway.get("/readyz")
    assert not_ready.status_code == 503
    checked.append(("/readyz", not_ready))

    assert all_mismatches(checked) == []


async def test_every_live_events_answer_is_described(
    gateway: httpx.AsyncClient, make_gateway: GatewayFactory
) -> None:
    """/live, its assets and its stream: off, refused, redirected, served, streamed."""
    admin = make_gateway(admin_token=ADMIN_TOKEN)
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    answers: list[tuple[httpx.AsyncClient, str, str, dict[str, str], int]] = [
        (gateway, "/live", "/live", {}, 404),
        (admin, "/live", "/live", {}, 401),
        (admin, "/live/stream", "/live/stream", {}, 401),
        (admin, "/live", f"/live?token={ADMIN_TOKEN}", {}, 303),
        (admin, "/live", "/live", bearer, 200),
        (admin, "/live/{name}", "/live/live.js", bearer, 200),
        (admin, "/live/{name}", "/live/live.css", bearer, 200),
        (admin, "/live/{name}", "/live/other.js", bearer, 404),
        (admin, "/live/stream", "/live/stream?replay=many", bearer, 400),
        # The fake's watch ends after its (no) records, so the stream ends too.
        (admin, "/live/stream", "/live/stream", bearer, 200),
    ]
    checked: list[Answer] = []
    for client, path, url, headers, status in answers:
        response = await client.get(url, headers=headers)
        assert response.status_code == status, (url, response.text)
        checked.append((path, response))

    assert all_mismatches(checked) == []
