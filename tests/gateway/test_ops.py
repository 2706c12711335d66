"""Health, readiness, OpenAPI, the demo assets, settings and the never-a-500 rule."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from amperity_signal.gateway import GatewaySettings, load_gateway_settings
from amperity_signal.gateway.routes_api import API_METHODS

from .conftest import GatewayFactory
from .fakes import KNOWN_KEY, RunningService

REPO = Path(__file__).resolve().parents[2]


async def test_healthz_answers_ok(gateway: httpx.AsyncClient) -> None:
    """/healthz answers 200 while the process lives."""
    response = await gateway.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_follows_the_grpc_health_check(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """/readyz is 200 while the service is SERVING and 503 JSON when it is not."""
    assert (await gateway.get("/readyz")).status_code == 200
    await service.set_serving(False)
    response = await gateway.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_NOT_READY"


async def test_readyz_is_503_when_the_service_is_gone(
    gateway: httpx.AsyncClient, service: RunningService
) -> None:
    """A stopped service makes /readyz 503 and the API 503, never a 500."""
    await service.server.stop(None)
    assert (await gateway.get("/readyz")).status_code == 503
    response = await gateway.get(
        "/v1/enrich?provider=amperity&anonymous_id=v", headers={"X-Pipeline-Key": KNOWN_KEY}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_openapi_describes_every_api_route(gateway: httpx.AsyncClient) -> None:
    """/openapi.json is OpenAPI 3 and lists each API route with its method."""
    document = (await gateway.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    for path, methods in API_METHODS.items():
        assert set(document["paths"][path]) == {m.lower() for m in methods}
    assert {"/healthz", "/readyz"} <= set(document["paths"])


@pytest.mark.parametrize(
    ("url", "media_type", "marker"),
    [
        ("/demo/", "text/html", 'id="hero"'),
        ("/demo/datafly.js", "text/javascript", "globalThis.datafly = datafly"),
        ("/demo/datafly.mjs", "text/javascript", "export function createDatafly"),
    ],
)
async def test_demo_assets_are_served(
    gateway: httpx.AsyncClient, url: str, media_type: str, marker: str
) -> None:
    """The packaged demo page and both client builds are served under /demo/."""
    response = await gateway.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert marker in response.text


async def test_packaged_copies_match_the_client_sources() -> None:
    """The gateway's static copies are exactly what clients/browser/build.mjs produces."""
    static = REPO / "server" / "amperity_signal" / "gateway" / "static"
    browser = REPO / "clients" / "browser"
    pairs = [
        ("index.html", "demo/index.html"),
        ("datafly.js", "dist/datafly.js"),
        ("datafly.mjs", "src/datafly.mjs"),
    ]
    for packaged, source in pairs:
        assert (static / packaged).read_bytes() == (browser / source).read_bytes(), packaged


async def test_demo_redirect_and_unknown_asset(gateway: httpx.AsyncClient) -> None:
    """/demo redirects to /demo/ keeping the query; unknown assets are 404 JSON."""
    redirect = await gateway.get("/demo?pipelineKey=pk")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "/demo/?pipelineKey=pk"
    missing = await gateway.get("/demo/secret.txt")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"


async def test_favicon_is_no_content_not_a_404(gateway: httpx.AsyncClient) -> None:
    """/favicon.ico, which browsers ask for on the demo and Live Events pages, is a 204."""
    response = await gateway.get("/favicon.ico")
    assert (response.status_code, response.content) == (204, b"")


async def test_unknown_route_and_wrong_method_are_json(gateway: httpx.AsyncClient) -> None:
    """Unknown paths answer 404 and wrong methods 405, both JSON."""
    missing = await gateway.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = await gateway.post("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_huge_headers_are_431(make_gateway: GatewayFactory) -> None:
    """Headers beyond max_header_bytes answer 431 JSON."""
    gateway = make_gateway(max_header_bytes=1024)
    response = await gateway.get("/healthz", headers={"Cookie": "x=" + "y" * 2000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "HEADERS_TOO_LARGE"


async def test_random_junk_never_causes_a_500(make_gateway: GatewayFactory) -> None:
    """Seeded random methods, paths, parameters, headers and bodies never get a 5xx."""
    gateway = make_gateway(rate_limit_per_second=10_000.0, rate_limit_burst=10_000)
    rng = random.Random(20250131)
    paths = [*API_METHODS, "/healthz", "/openapi.json", "/demo/", "/v1/x", "/"]
    junk = [
        "",
        "null",
        "[]",
        '{"batch": [null, 1, "x", {}]}',
        '{"type": 5}',
        "\x00",
        '{"context": {"page": 1, "session": {"id": true}}}',
        '{"timestamp": "2025-13-40"}',
        '{"properties": {"a": [{"b": -1e308}]}}',
        '{"context": {"consent": []}}',
    ]
    for _ in range(300):
        path = rng.choice(paths)
        query = rng.choice(
            [
                "",
                "?provider=amperity",
                "?pipeline_key=%FF",
                f"?pipeline_key={KNOWN_KEY}",
                "?provider=amperity&anonymous_id=" + "a" * 300,
            ]
        )
        headers = {
            "X-Pipeline-Key": rng.choice([KNOWN_KEY, "pk_x", " "]),
            "Content-Type": rng.choice(["application/json", "text/plain", "x/y"]),
            "Origin": rng.choice(["https://shop.example.com", "null", "https://x"]),
        }
        method = rng.choice(["GET", "POST", "PUT", "OPTIONS", "DELETE"])
        body = rng.choice(junk).encode()
        response = await gateway.request(method, path + query, content=body, headers=headers)
        assert response.status_code < 500, (method, path, query, body, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"code", "message"}


def test_settings_load_from_the_example_config() -> None:
    """The example TOML yields one pipeline with its allowed origins."""
    settings = load_gateway_settings(REPO / "examples" / "amperity-signal.toml")
    (pipeline,) = settings.pipelines
    assert pipeline.pipeline_key == "pk_live_acme_web"
    assert settings.allowed_origins(pipeline.pipeline_key) == frozenset(
        o.lower() for o in pipeline.allowed_origins
    )


def test_settings_reject_nonsense_limits() -> None:
    """A non-positive limit is refused at construction; the admin token is never in repr."""
    with pytest.raises(ValueError, match="rate_limit_per_second"):
        GatewaySettings(rate_limit_per_second=0)
    assert "hunter2" not in repr(GatewaySettings(admin_token="hunter2"))


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/enrich/"), ("POST", "/v1/t/"), ("GET", "/healthz/"), ("GET", "/live/")],
)
async def test_a_path_one_slash_off_a_route_is_a_404_not_a_redirect(
    gateway: httpx.AsyncClient, method: str, path: str
) -> None:
    """No 307 to the other spelling, whose Location was built from the Host header.

    ``Host: attacker.example`` made it ``http://attacker.example/v1/enrich``, and behind a
    proxy that ends TLS the scheme was http; the answer had no JSON body either.
    """
    response = await gateway.request(
        method,
        path + "?provider=amperity",
        headers={"Host": "attacker.example", "X-Pipeline-Key": KNOWN_KEY},
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["code"] == "NOT_FOUND"
