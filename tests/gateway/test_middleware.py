"""The one ASGI layer for latency, CORS, header size and rate limit keeps their old order."""

from __future__ import annotations

from typing import Any

import grpc.aio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from amperity_signal.gateway import PipelineSettings, create_gateway_app
from amperity_signal.gateway.middleware import GatewayMiddleware, _add_cors
from amperity_signal.gateway.ratelimit import TokenBuckets
from amperity_signal.gateway.settings import normalise_origin
from amperity_signal.metrics import Metrics

from .conftest import SHOP_ORIGIN, FakeClock, GatewayFactory, gateway_settings
from .fakes import KNOWN_KEY, KNOWN_VISITOR, RunningService

ENRICH = f"/v1/enrich?provider=amperity&anonymous_id={KNOWN_VISITOR}"
BIG_COOKIE = {"Cookie": "x=" + "y" * 2000}


def _counts(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "amperity_signal_gateway_seconds_count"
    }


def _client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=app, client=("203.0.113.7", 50000), raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def test_every_answer_is_observed_with_its_route_and_status(
    service: RunningService, clock: FakeClock
) -> None:
    """200s, a preflight, a 431, a 429 and an unknown route each land in the histogram."""
    metrics = Metrics()
    settings = gateway_settings(max_header_bytes=1024, rate_limit_per_second=1.0)
    app = create_gateway_app(
        settings=settings.replace(rate_limit_burst=2),
        grpc_target=service.target,
        metrics=metrics,
        clock=clock,
    )
    key = {"X-Pipeline-Key": KNOWN_KEY}
    async with _client(app) as gateway:
        statuses = [
            (await gateway.get(ENRICH, headers=key)).status_code,
            (await gateway.options("/v1/enrich", headers={"Origin": SHOP_ORIGIN})).status_code,
            (await gateway.get(ENRICH, headers={**key, **BIG_COOKIE})).status_code,
            (await gateway.get(ENRICH, headers=key)).status_code,
            (await gateway.get(ENRICH, headers=key)).status_code,
        ]
        clock.now += 10
        statuses.append((await gateway.get("/v1/nope")).status_code)
        text = (await gateway.get("/metrics")).text
    assert statuses == [200, 204, 431, 200, 429, 404]
    counts = _counts(text)
    assert counts[("/v1/enrich", "200")] == 2
    assert counts[("/v1/enrich", "204")] == 1
    assert counts[("/v1/enrich", "431")] == 1
    assert counts[("/v1/enrich", "429")] == 1
    assert counts[("other", "404")] == 1


async def test_an_unexpected_failure_answers_500_and_is_observed_as_500() -> None:
    """An error escaping the app is a generic 500 JSON, counted as 500."""

    def broken_channel() -> grpc.aio.Channel:
        raise RuntimeError("no channel for you")

    metrics = Metrics()
    app = create_gateway_app(
        settings=gateway_settings(), channel_factory=broken_channel, metrics=metrics
    )
    async with _client(app, raise_app_exceptions=False) as gateway:
        response = await gateway.get(ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY})
        text = (await gateway.get("/metrics")).text
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "INTERNAL"
    assert "no channel" not in response.text
    assert _counts(text)[("/v1/enrich", "500")] == 1


async def test_refusals_carry_cors_headers(make_gateway: GatewayFactory) -> None:
    """A 431 for an allowed origin still echoes it, so the page can read the error."""
    gateway = make_gateway(max_header_bytes=1024)
    response = await gateway.get(
        ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY, "Origin": SHOP_ORIGIN, **BIG_COOKIE}
    )
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "HEADERS_TOO_LARGE"
    assert response.headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert response.headers["access-control-expose-headers"] == "Retry-After"
    assert response.headers["vary"] == "Origin"


async def test_preflights_are_answered_before_the_header_limit(
    make_gateway: GatewayFactory,
) -> None:
    """A preflight is answered by CORS first, as when CORS wrapped the header limit."""
    gateway = make_gateway(max_header_bytes=1024)
    response = await gateway.options("/v1/enrich", headers={"Origin": SHOP_ORIGIN, **BIG_COOKIE})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP_ORIGIN


async def test_the_pipeline_key_parameter_selects_the_origins(make_gateway: GatewayFactory) -> None:
    """Without the header, the pipeline_key parameter's origins decide; another key's do not."""
    other_pipeline = PipelineSettings("pk_other", ("https://other.example",))
    gateway = make_gateway(pipelines=(*gateway_settings().pipelines, other_pipeline))
    own = await gateway.get(f"{ENRICH}&pipeline_key={KNOWN_KEY}", headers={"Origin": SHOP_ORIGIN})
    other = await gateway.get(
        f"{ENRICH}&pipeline_key={KNOWN_KEY}", headers={"Origin": "https://other.example"}
    )
    assert own.headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert "access-control-allow-origin" not in other.headers
    preflight = await gateway.options("/v1/enrich", headers={"Origin": "https://other.example"})
    assert preflight.status_code == 204


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("https://shop.example.com", "https://shop.example.com:443"),
    ],
)
async def test_an_origin_written_with_its_default_port_matches_the_browsers(
    make_gateway: GatewayFactory, configured: str, sent: str
) -> None:
    """Browsers never send :443 / :80, so a configured default port must still match."""
    gateway = make_gateway(pipelines=(PipelineSettings(KNOWN_KEY, (configured,)),))
    response = await gateway.get(ENRICH, headers={"X-Pipeline-Key": KNOWN_KEY, "Origin": sent})
    assert response.headers["access-control-allow-origin"] == sent
    preflight = await gateway.options("/v1/enrich", headers={"Origin": sent})
    assert preflight.status_code == 204


def test_a_non_default_port_still_tells_origins_apart() -> None:
    """Only the scheme's own default port is dropped: :8443 and http's :443 stay distinct."""
    assert normalise_origin("https://Shop.example.com:443/") == "https://shop.example.com"
    assert normalise_origin("https://shop.example.com:8443") == "https://shop.example.com:8443"
    assert normalise_origin("http://shop.example.com:443") == "http://shop.example.com:443"


def _starlette_cors(message: dict[str, Any], origin: str | None) -> None:
    """What the CORS middleware did before, with Starlette's header objects."""
    headers = MutableHeaders(scope=message)
    headers.add_vary_header("Origin")
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Access-Control-Expose-Headers"] = "Retry-After"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"content-type", b"application/json")],
        [(b"vary", b"Accept-Encoding")],
        [(b"vary", b"Accept"), (b"x-a", b"1"), (b"vary", b"Cookie")],
        [(b"access-control-allow-origin", b"https://x"), (b"access-control-allow-origin", b"y")],
        [(b"access-control-allow-credentials", b"false"), (b"vary", b"Origin")],
    ],
)
@pytest.mark.parametrize("origin", [None, SHOP_ORIGIN])
def test_cors_headers_are_what_starlettes_header_objects_made(
    headers: list[tuple[bytes, bytes]], origin: str | None
) -> None:
    """Vary joins every earlier value; each allow header replaces any earlier ones."""
    ours: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": headers}
    theirs: dict[str, Any] = {**ours, "headers": tuple(headers)}
    snapshot = list(headers)
    _add_cors(ours, origin)
    _starlette_cors(theirs, origin)
    assert ours["headers"] == theirs["headers"]
    assert headers == snapshot  # the app's own list is not changed in place


async def test_a_direct_route_is_called_for_its_methods_and_head_the_app_for_the_rest(
    clock: FakeClock,
) -> None:
    """GET and HEAD of a direct path reach its own ASGI app, after the rate limit and CORS."""
    reached: list[tuple[str, str]] = []

    def answering(name: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            reached.append((name, scope["method"]))
            await PlainTextResponse(name)(scope, receive, send)

        return app

    settings = gateway_settings(rate_limit_per_second=1.0).replace(rate_limit_burst=3)
    middleware = GatewayMiddleware(
        answering("app"),
        metrics=Metrics(),
        routes=frozenset({"/v1/enrich"}),
        settings=settings,
        methods={"/v1/enrich": ("GET",)},
        buckets=TokenBuckets(1.0, 3, clock, 100),
        direct={"/v1/enrich": answering("direct")},
    )
    origin = {"Origin": SHOP_ORIGIN, "X-Pipeline-Key": KNOWN_KEY}
    async with _client(middleware) as client:
        answers = [await client.request(m, "/v1/enrich", headers=origin) for m in ("GET", "HEAD")]
        answers.append(await client.post("/v1/enrich", headers=origin))
        limited = await client.get("/v1/enrich", headers=origin)
    assert reached == [("direct", "GET"), ("direct", "HEAD"), ("app", "POST")]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert limited.status_code == 429
