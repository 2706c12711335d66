"""The per-client token buckets: bounded memory, and forgetting a bucket grants nothing.

And what a client is: an IPv4 address, or an IPv6 network (/64 unless configured), in the
buckets alone, through the ASGI app, and through uvicorn's ``X-Forwarded-For`` handling.
"""

from __future__ import annotations

import httpx
import pytest

from amperity_signal.gateway import create_gateway_app
from amperity_signal.gateway.ratelimit import TokenBuckets, client_keys

from .conftest import FakeClock, gateway_settings, served
from .fakes import KNOWN_KEY, RunningService

RATE = 2.0
BURST = 4
REFILL = BURST / RATE
"""Seconds after its last request at which any bucket is full again."""


def _allowed(buckets: TokenBuckets, key: str, times: int) -> int:
    """How many of ``times`` requests from ``key`` may proceed."""
    return sum(buckets.take(key) == 0.0 for _ in range(times))


def test_the_table_never_holds_more_than_max_clients_buckets(clock: FakeClock) -> None:
    """50,000 distinct clients, in bursts and spread over time, leave at most 100 buckets."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=100)
    highest = 0
    for wave in range(50):
        for client in range(1_000):
            buckets.take(f"198.51.{wave}.{client}")
            highest = max(highest, buckets.tracked)
        clock.now += REFILL / 3
    assert highest == 100
    clock.now += REFILL
    for client in range(1_000):
        buckets.take(f"203.0.113.{client}")
    assert buckets.tracked == 100


def test_other_clients_cannot_push_out_a_limited_clients_bucket(clock: FakeClock) -> None:
    """A client that spent its burst is still limited after max_clients others arrive."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=10)
    assert _allowed(buckets, "attacker", BURST + 1) == BURST
    for client in range(10):
        buckets.take(f"other-{client}")
    assert buckets.take("attacker") > 0.0


def test_cycling_through_more_addresses_than_the_table_holds_stays_limited(
    clock: FakeClock,
) -> None:
    """11 addresses against a table of 10, 100 rounds at once: 10 bursts plus one, no more."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=10)
    allowed = sum(_allowed(buckets, f"2001:db8::{n}", 1) for _ in range(100) for n in range(11))
    assert allowed == 10 * BURST + BURST  # ten tracked buckets and the shared overflow one
    assert buckets.tracked == 10


def test_a_refilled_bucket_is_forgotten_for_a_newcomer(clock: FakeClock) -> None:
    """Once a bucket has refilled, a new client takes its place; the old one starts full."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=1)
    assert _allowed(buckets, "first", BURST + 1) == BURST
    assert _allowed(buckets, "second", 1) == 1  # the overflow bucket: "first" is not full
    clock.now += REFILL
    assert _allowed(buckets, "third", 1) == 1  # takes the slot "first" held
    assert _allowed(buckets, "first", BURST + 1) == BURST  # as a remembered full bucket would


def test_clients_without_a_bucket_share_one_while_the_table_is_busy(clock: FakeClock) -> None:
    """Untracked clients together get one client's burst and rate, not one each."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=2)
    _allowed(buckets, "a", BURST)
    _allowed(buckets, "b", BURST)
    assert sum(_allowed(buckets, f"new-{n}", 1) for n in range(BURST * 3)) == BURST
    clock.now += 1 / RATE
    # "a" and "b" have not refilled yet: the overflow bucket earned one token meanwhile.
    assert sum(_allowed(buckets, f"late-{n}", 1) for n in range(3)) == 1


def test_wait_says_what_take_would_answer_and_spends_nothing(clock: FakeClock) -> None:
    """``wait`` (the Live Events guess limit's look before comparing) agrees with ``take``.

    For a tracked client, a fresh one, and one sharing the overflow bucket; asking never
    spends a token, so asking a thousand times leaves the burst whole.
    """
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=1)
    assert [buckets.wait("198.51.100.1") for _ in range(1_000)] == [0.0] * 1_000
    assert _allowed(buckets, "198.51.100.1", BURST + 1) == BURST
    assert buckets.wait("198.51.100.1") == buckets.take("198.51.100.1") > 0
    assert _allowed(buckets, "198.51.100.2", BURST) == BURST  # the overflow bucket
    assert buckets.wait("198.51.100.3") == buckets.take("198.51.100.3") > 0
    clock.now += REFILL
    assert buckets.wait("198.51.100.3") == buckets.wait("198.51.100.1") == 0.0


def test_max_clients_below_one_is_refused() -> None:
    """A table without room would forget every bucket at once: refused, naming the setting."""
    with pytest.raises(ValueError, match="rate_limit_max_clients"):
        TokenBuckets(RATE, BURST, FakeClock(), max_clients=0)


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:cb00:7107", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(host: str, key: str) -> None:
    """IPv4-mapped IPv6 is the IPv4 address; a name that is no address stays its own key."""
    assert client_keys(64)(host) == key


def test_the_ipv6_prefix_length_is_configurable() -> None:
    host = "2001:db8:1:2ff:aaaa::1"
    assert client_keys(48)(host) == "2001:db8:1::/48"
    assert client_keys(56)(host) == "2001:db8:1:200::/56"
    assert client_keys(128)(host) == "2001:db8:1:2ff:aaaa::1/128"
    assert client_keys(128)("::ffff:203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize("prefix", [0, 32, 47, 129, 64.0, True])
def test_an_ipv6_prefix_outside_48_to_128_is_refused(prefix: object) -> None:
    with pytest.raises(ValueError, match=r"rate_limit_ipv6_prefix .* from 48 to 128.*use 64"):
        client_keys(prefix)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"GatewaySettings.rate_limit_ipv6_prefix"):
        gateway_settings(rate_limit_ipv6_prefix=prefix)


def test_rotating_addresses_within_one_64_shares_one_bucket(clock: FakeClock) -> None:
    """A fresh address per request, all in one /64: one burst, not one per address."""
    buckets = TokenBuckets(RATE, BURST, clock, max_clients=100)
    key = client_keys(64)
    allowed = sum(buckets.take(key(f"2001:db8:1:2::{n:x}")) == 0.0 for n in range(1, 50))
    assert allowed == BURST
    assert buckets.tracked == 1
    assert buckets.take(key("2001:db8:1:3::1")) == 0.0  # the next /64 is someone else


ENRICH = "/v1/enrich?provider=amperity&anonymous_id=anon_ratelimit"
KEY = {"X-Pipeline-Key": KNOWN_KEY}


async def test_the_app_limits_an_ipv6_peer_by_its_64_and_a_mapped_peer_as_ipv4(
    service: RunningService, clock: FakeClock
) -> None:
    """Socket peers as a dual-stack listener reports them, through the ASGI app."""
    app = create_gateway_app(
        settings=gateway_settings(rate_limit_per_second=1.0, rate_limit_burst=1),
        grpc_target=service.target,
        clock=clock,
    )

    async def status(peer: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            return (await c.get(ENRICH, headers=KEY)).status_code

    peers = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:3::1"]
    assert [await status(p) for p in peers] == [200, 429, 200]
    peers = ["::ffff:203.0.113.9", "203.0.113.9", "203.0.113.10"]
    assert [await status(p) for p in peers] == [200, 429, 200]
    async with app.router.lifespan_context(app):
        pass  # closes the channel: ASGITransport runs no lifespan


async def test_forwarded_ipv6_visitors_are_limited_by_their_64_behind_a_trusted_proxy(
    service: RunningService, clock: FakeClock
) -> None:
    """Uvicorn takes the visitor from X-Forwarded-For (bracketed or not); the /64 is limited."""
    settings = gateway_settings(
        rate_limit_per_second=1.0, rate_limit_burst=1, trusted_proxies=("127.0.0.1",)
    )
    app = create_gateway_app(settings=settings, grpc_target=service.target, clock=clock)
    visitors = ["2001:db8:5:6::1", "[2001:db8:5:6::2]:4711", "2001:db8:5:7::1", "2001:db8:5:7::1"]
    async with served(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
        statuses = [
            (await client.get(ENRICH, headers={**KEY, "X-Forwarded-For": v})).status_code
            for v in visitors
        ]
    assert statuses == [200, 429, 200, 429]
