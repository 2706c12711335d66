"""The service's Redis clients parse replies with hiredis, the C parser pinned in pyproject.

redis-py picks its parser when a connection is made: hiredis when a version it accepts is
installed, else its pure-Python parser, silently. A dropped or too old hiredis would cost
every cache read a sixth to a quarter more CPU (docs/benchmarks.md, "Session 18: hiredis")
and nothing else would notice.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis._parsers import _AsyncHiredisParser
from redis.asyncio import Redis

from amperity_signal.amperity.ratelimit import RedisRateLimiter
from amperity_signal.config import CacheSettings
from amperity_signal.enrich.stores import RedisStore
from amperity_signal.service.app import build_rate_limiter

URL = "redis://127.0.0.1:6379/0"


def _parser(client: Redis) -> Any:
    """The parser of a connection the client's pool would use (nothing is connected)."""
    pool: Any = client.connection_pool  # make_connection is untyped
    return pool.make_connection()._parser


def _store_client() -> Redis:
    store = RedisStore.from_url(URL)
    client: Redis = store._client
    return client


def _limiter_client() -> Redis:
    limiter = build_rate_limiter(CacheSettings(backend="redis", redis_url=URL))
    assert isinstance(limiter, RedisRateLimiter)
    client: Redis = limiter._redis
    return client


@pytest.mark.parametrize("client", [_store_client, _limiter_client], ids=["cache", "rate-limit"])
def test_the_service_parses_redis_replies_with_hiredis(client: Any) -> None:
    """The cache's and the rate limiter's clients use hiredis; reinstall if this fails."""
    parser = _parser(client())
    assert isinstance(parser, _AsyncHiredisParser), (
        f"redis-py parses replies with {type(parser).__name__}, not hiredis: run "
        "`make setup` (pyproject.toml pins hiredis) and check redis-py accepts its version"
    )
