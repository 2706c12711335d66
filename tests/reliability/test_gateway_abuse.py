"""Gateway abuse against the real process: rate limit, size limits, CORS, identifier params.

``tests/gateway`` proves each rule in-process (ASGI transport, fake clock); these checks
repeat the essentials over a real socket to the gateway ``amperity-signal serve`` embeds,
so uvicorn's own parsing and the process's wiring are covered too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from tests.e2e.stack import Stack

# One sandbox and one service serve the whole module: no test changes either, and each
# test calls from a loopback address of its own (``gateway``), so each has its own
# rate-limit bucket, full at its start, as it had with a service of its own.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ALLOWED = "http://127.0.0.1"  # integration_dict's allowed_origins
ENRICH = "/v1/enrich?provider=amperity"
BURST = 40
DAY = 86_400
# One token a day refills a spent bucket: no run is that slow, so a burst past BURST is
# served exactly BURST times however long the machine takes to answer it.
RATE_LIMIT = {"rate_limit_per_second": 1 / DAY, "rate_limit_burst": BURST}
# The 200 requests at once of one client open as many connections: caps of their own, so
# that the ones derived from the machine's ulimit -n (under 1024: 512 in all) play no part.
CONNECTION_CAPS = {"max_connections": 400, "max_connections_per_client": 250}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The embedded gateway of a service process on a sandbox, for every test here."""
    stack = Stack(workdir=tmp_path_factory.mktemp("abuse"))
    try:
        sandbox = await stack.sandbox()
        service = await stack.service(sandbox, gateway=RATE_LIMIT | CONNECTION_CAPS)
        yield service.http_url
    finally:
        await stack.close()


@pytest.fixture(scope="module")
def client_addresses() -> Iterator[str]:
    """Loopback addresses no other test of the module calls from (127.0.0.2, .3, ...)."""
    return (f"127.0.0.{host}" for host in itertools.count(2))


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(
    gateway_url: str, client_addresses: Iterator[str]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client to the gateway, calling from a client address of its own."""
    transport = httpx.AsyncHTTPTransport(local_address=next(client_addresses))
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10, transport=transport) as client:
        yield client


async def test_one_client_past_the_burst_gets_429_with_retry_after(
    gateway: httpx.AsyncClient,
) -> None:
    """200 requests at once from one IP (burst 40, a token a day): 40 served, 160 told 429.

    Each refusal carries a Retry-After of at most the day one token takes; the client,
    its bucket spent, still reaches the ops routes, which are not limited.
    """
    headers = {"X-Pipeline-Key": "pk_web"}
    answers = await asyncio.gather(*(gateway.get(ENRICH, headers=headers) for _ in range(200)))
    statuses = [a.status_code for a in answers]
    limited = [a for a in answers if a.status_code == 429]
    assert (statuses.count(200), len(limited)) == (BURST, 200 - BURST), statuses
    assert all(1 <= int(a.headers["retry-after"]) <= DAY for a in limited)
    assert limited[0].json()["error"]["code"] == "RATE_LIMITED"
    assert (await gateway.get(ENRICH, headers=headers)).status_code == 429
    assert (await gateway.get("/healthz")).status_code == 200


async def test_oversized_bodies_and_headers_are_refused(gateway: httpx.AsyncClient) -> None:
    """A 33 KB event is 413, a 257 KB batch is 413, 17 KB of headers is 431."""
    headers = {"X-Pipeline-Key": "pk_web", "Content-Type": "application/json"}
    event = b'{"event": "x", "anonymousId": "a", "properties": {"p": "' + b"x" * 33_000 + b'"}}'
    batch = b'{"batch": [{"event": "x", "anonymousId": "a", "p": "' + b"y" * 263_000 + b'"}]}'
    single = await gateway.post("/v1/t", content=event, headers=headers)
    many = await gateway.post("/v1/batch", content=batch, headers=headers)
    cookies = await gateway.get(ENRICH, headers={**headers, "Cookie": "c=" + "z" * 17_000})
    assert (single.status_code, many.status_code, cookies.status_code) == (413, 413, 431)
    assert cookies.json()["error"]["code"] == "HEADERS_TOO_LARGE"


async def test_cors_echoes_only_the_integrations_origins(gateway: httpx.AsyncClient) -> None:
    """The allowed origin gets credentialed CORS; others get none and a 403 preflight."""
    key = {"X-Pipeline-Key": "pk_web"}
    good = await gateway.get(ENRICH, headers={**key, "Origin": ALLOWED})
    evil = await gateway.get(ENRICH, headers={**key, "Origin": "https://evil.example"})
    null = await gateway.get(ENRICH, headers={**key, "Origin": "null"})
    preflight = await gateway.options(
        "/v1/enrich",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert good.headers["access-control-allow-origin"] == ALLOWED
    assert good.headers["access-control-allow-credentials"] == "true"
    for refused in (evil, null):
        assert "access-control-allow-origin" not in refused.headers
        assert "Origin" in refused.headers["vary"]
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


async def test_identifier_parameters_are_refused_without_echo(gateway: httpx.AsyncClient) -> None:
    """/v1/enrich with an email, user id or phone parameter is 400, the value unechoed."""
    for parameter in ("email=alice%40example.com", "user_id=cust-1001", "phone=%2B447700900123"):
        response = await gateway.get(f"{ENRICH}&{parameter}", headers={"X-Pipeline-Key": "pk_web"})
        assert response.status_code == 400, parameter
        assert response.json()["error"]["code"] == "PARAMETER_NOT_ALLOWED"
        assert parameter.split("=", 1)[1] not in response.text
