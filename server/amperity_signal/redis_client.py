"""The Redis client of the cache and of the shared rate limiter, configured in one place.

Short timeouts, and one retry on a fresh connection after a connection error (redis-py's
``Retry``): after a Redis restart every pooled connection is dead, and without the retry
the first command on each failed although Redis was back, so the cache skipped itself for
a second and the rate limiter warned of an outage that was none. A Redis that is really
down refuses the second connection as fast as the first, so an outage is still seen, and
logged, at once. A timeout is never retried: a cache or a shared limit that answers slower
than that is worth less than none, and its caller goes on without it.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def redis_client(url: str, *, timeout: float) -> Redis:
    """A client of ``redis://host:port/db`` (or ``rediss://``, ``unix://``); bytes replies.

    Args:
        url: ``cache.redis_url``.
        timeout: Seconds to connect, and to answer each command, before it counts as down.

    Returns:
        The client; it connects on its first command, not here.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        decode_responses=False,
    )
