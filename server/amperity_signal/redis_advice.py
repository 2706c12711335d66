"""What to check when Redis fails, for the log lines of the cache and the rate limiter.

A wrong password and a stopped server are both "Redis failed" to the code that meets them;
the operator needs to know which setting to look at: ``cache.redis_url``.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ResponseError,
)
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
    if scripting_refused(exc):
        return f"Redis refused to run the service's Lua scripts ({kind}): {SCRIPTING_FIX}"
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


SCRIPTING_FIX = (
    "grant the user of cache.redis_url scripting (ACL SETUSER <user> +@scripting, or at "
    "least +evalsha +script|load), or use a Redis that allows Lua scripts"
)
"""What to do when Redis refuses scripts, as the end of a sentence."""


def scripting_refused(exc: BaseException) -> bool:
    """Whether Redis refused a script command: an ACL without it, or scripting switched off.

    An ACL answers ``NOPERM``; a managed Redis that disables scripting answers that the
    command is unknown or disabled.
    """
    if isinstance(exc, NoPermissionError):
        return True
    if not isinstance(exc, ResponseError):
        return False
    text = str(exc).lower()
    scripting = any(word in text for word in ("script", "evalsha", "eval"))
    return scripting and any(word in text for word in ("unknown command", "disabled", "noperm"))


def redis_location(url: str) -> str:
    """``url`` (a checked ``cache.redis_url``) without its user, password or query.

    What a log line may say of where Redis is: the scheme, host, port and database or
    socket path. A password can sit in the user info or in a ``?password=`` query.
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
