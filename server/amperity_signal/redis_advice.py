"""What to check when Redis fails, for the log lines of the cache and the rate limiter.

A wrong password and a stopped server are both "Redis failed" to the code that meets them;
the operator needs to know which setting to look at: ``cache.redis_url``.
"""

from __future__ import annotations

from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


def redis_failure(exc: BaseException) -> str:
    """One clause naming the failure, its type and what to check (never the URL itself)."""
    kind = type(exc).__name__
    text = str(exc).upper()
    if isinstance(exc, AuthenticationError | AuthorizationError) or (
        isinstance(exc, ResponseError) and ("NOAUTH" in text or "WRONGPASS" in text)
    ):
        return (
            f"Redis refused the credentials ({kind}): check the user and password in "
            "cache.redis_url"
        )
    # redis-py raises its own TimeoutError (not the builtin one) when socket_timeout passes.
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return (
            f"Redis did not answer in time ({kind}): check that it is running and reachable "
            "at cache.redis_url's host and port"
        )
    return (
        f"Redis cannot be reached ({kind}): check that redis-server is running at "
        "cache.redis_url's host and port"
    )
