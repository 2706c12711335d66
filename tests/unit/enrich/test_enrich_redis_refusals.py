"""A Redis that is up and refuses a write is not reported as a Redis that cannot be reached.

"cache unavailable ... Redis cannot be reached (ResponseError): check that redis-server is
running" sent the operator to check a server that was running, for a full memory, a
read-only replica or any other error Redis answered.
"""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as redis

from amperity_signal.enrich import CacheBackend

from .redis_support import RedisProcess


async def unavailable_line(backend: CacheBackend, caplog: pytest.LogCaptureFixture) -> str:
    caplog.set_level(logging.WARNING)
    await backend.set("attributes:web:p-1", b'{"Persona": "Gold"}', 60)
    lines = [r.getMessage() for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "cannot be reached" not in lines[0]
    return lines[0]


async def test_a_full_redis_is_reported_out_of_memory(
    backend: CacheBackend, inspector: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """OOM (maxmemory reached, no eviction) asks for maxmemory or an eviction policy."""
    await inspector.config_set("maxmemory-policy", "noeviction")
    await inspector.config_set("maxmemory", 1)
    line = await unavailable_line(backend, caplog)
    assert "Redis is out of memory (OutOfMemoryError: OOM)" in line
    assert "maxmemory-policy allkeys-lru" in line


async def test_a_read_only_replica_is_reported_as_one(
    backend: CacheBackend, inspector: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """READONLY (a replica) asks to point cache.redis_url at the primary."""
    await inspector.replicaof("127.0.0.1", 1)  # nobody there: it stays a read-only replica
    line = await unavailable_line(backend, caplog)
    assert "read-only replica (ReadOnlyError: READONLY)" in line
    assert "point cache.redis_url at the primary" in line


async def test_a_stopped_redis_is_still_one_that_cannot_be_reached(
    backend: CacheBackend, redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusals above leave a stopped server's advice as it was."""
    redis_server.kill()
    caplog.set_level(logging.WARNING)
    await backend.set("attributes:web:p-1", b'{"Persona": "Gold"}', 60)
    lines = [r.getMessage() for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert len(lines) == 1 and "Redis cannot be reached" in lines[0], lines
