"""What to check when Redis fails, for the log lines of the cache and the rate limiter.

A wrong password and a stopped server are both "Redis failed" to the code that meets them;
the operator needs to know which setting to look at: ``cache.redis_url``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from amperity_signal.redis_keys import ACL_RULES, KEY_GRANTS


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
    refused = _acl_clause(exc, kind)
    if refused is not None:
        return refused
    # redis-py raises its own TimeoutError (not the builtin one) when socket_timeout passes.
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return (
            f"Redis did not answer in time ({kind}): check that it is running and reachable "
            "at cache.redis_url's host and port"
        )
    if isinstance(exc, ResponseError | BusyLoadingError) or "MAX NUMBER OF CLIENTS" in text:
        # Redis is up and answered: "cannot be reached" would send the operator to check
        # a server that runs.
        return _refusal(exc, kind, text)
    return (
        f"Redis cannot be reached ({kind}): check that redis-server is running at "
        "cache.redis_url's host and port"
    )


def _acl_clause(exc: BaseException, kind: str) -> str | None:
    """The clause for what an ACL (or a Redis without scripting) refused; None if nothing.

    A refused key names the patterns to grant, not scripting: until session 26 every
    NOPERM was told as a refused script, and an operator missing a key pattern granted
    ``+@scripting`` again.
    """
    refused = acl_refusal(exc)
    if refused == KEYS_REFUSED:
        return f"Redis refused cache.redis_url's user the service's keys ({kind}): {KEYS_FIX}"
    if scripting_refused(exc):
        return f"Redis refused to run the service's Lua scripts ({kind}): {SCRIPTING_FIX}"
    if refused is None:
        return None
    command = "a command" if refused == COMMAND_REFUSED else f"the '{refused}' command"
    return (
        f"Redis refused cache.redis_url's user {command} ({kind}): grant it the commands "
        f"the service runs (ACL SETUSER <user> {ACL_RULES})"
    )


# The error code Redis puts first in an error reply (OOM, READONLY, MISCONF, ...); the rest
# of the reply is not quoted, as it may hold a key or a value.
_ERROR_CODE = re.compile(r"[A-Z]{2,20}(?= |$)")


_REFUSALS: tuple[tuple[Callable[[BaseException, str], bool], str], ...] = (
    (
        lambda exc, _: isinstance(exc, OutOfMemoryError),
        "Redis is out of memory ({kind}: OOM): raise its maxmemory, or set "
        "maxmemory-policy allkeys-lru so it evicts old cache entries",
    ),
    (
        lambda exc, _: isinstance(exc, ReadOnlyError),
        "Redis refused a write as a read-only replica ({kind}: READONLY): point "
        "cache.redis_url at the primary",
    ),
    (
        lambda exc, _: isinstance(exc, BusyLoadingError),
        "Redis is still loading its data set ({kind}: LOADING): it answers once loaded; "
        "check its log if this lasts",
    ),
    (
        lambda _, text: "MAX NUMBER OF CLIENTS" in text,
        "Redis has as many clients as its maxclients allows ({kind}): raise maxclients, or "
        "find the clients holding connections",
    ),
    (
        lambda _, text: text.startswith("MISCONF"),
        "Redis refuses writes because it cannot save its snapshot ({kind}: MISCONF): fix "
        "its dir or disk, or set stop-writes-on-bgsave-error no",
    ),
    (
        lambda exc, _: isinstance(
            exc, MovedError | AskError | ClusterDownError | ClusterCrossSlotError
        ),
        "cache.redis_url is a Redis Cluster node ({kind}), which the service does not use "
        "as a cluster: point it at a standalone Redis or a primary",
    ),
)
"""Errors Redis answers that say what to change, each with its clause."""


def _refusal(exc: BaseException, kind: str, text: str) -> str:
    """The clause for an error Redis answered: what it means and what to change."""
    for means, clause in _REFUSALS:
        if means(exc, text):
            return clause.format(kind=kind)
    # redis-py takes the code off a reply it maps (ERR, ...) and keeps it as status_code.
    code = getattr(exc, "status_code", None)
    if not isinstance(code, str) or not _ERROR_CODE.fullmatch(code):
        found = _ERROR_CODE.match(str(exc))
        code = found[0] if found else None
    return (
        f"Redis answered an error ({kind}{': ' + code if code else ''}): it is running "
        "and refused a command; its log and the code say why"
    )


SCRIPTING_FIX = (
    "grant the user of cache.redis_url scripting (ACL SETUSER <user> +@scripting, or at "
    "least +evalsha +script|load), or use a Redis that allows Lua scripts"
)
"""What to do when Redis refuses scripts, as the end of a sentence."""


KEYS_FIX = (
    "grant it the key patterns of every prefix the service writes (ACL SETUSER <user> "
    f"{KEY_GRANTS}; docs/enrich.md, Redis keys and ACL)"
)
"""What to do when Redis refuses the service's keys, as the end of a sentence."""

KEYS_REFUSED = "<keys>"
"""``acl_refusal``'s answer for a key the user may not access (no command's name: a
refused KEYS command answers ``keys``)."""

COMMAND_REFUSED = "<command>"
"""``acl_refusal``'s answer for a command Redis refused without naming it."""

# Redis 6.2-7.0 and 7.2+ word their ACL refusals differently (the keys one in a script
# too); none names the key, or an identifier, unless the code quotes it back.
_KEY_REFUSAL = re.compile(
    r"no permissions to access (a key|one of the keys|the '.*' key$)"
    r"|can't access at least one of the keys",
    re.IGNORECASE,
)
_COMMAND_REFUSAL = re.compile(r"no permissions to run the '([a-z_|-]{1,40})' command", re.I)
_SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "script"})


def acl_refusal(exc: BaseException) -> str | None:
    """What an ACL refused: ``KEYS_REFUSED``, the command's name, or None (no ACL refusal).

    Redis says which: "no permissions to access one of the keys" (a key pattern the user
    lacks) or "no permissions to run the 'get' command" (a command or category it lacks).
    A command refused without its name (inside a script) is ``COMMAND_REFUSED``.
    """
    if not isinstance(exc, ResponseError):
        return None
    text = str(exc)
    if _KEY_REFUSAL.search(text):
        return KEYS_REFUSED
    command = _COMMAND_REFUSAL.search(text)
    if command:
        return command[1].lower()
    if isinstance(exc, NoPermissionError) or "can't run this command" in text:
        return COMMAND_REFUSED
    return None


def scripting_refused(exc: BaseException) -> bool:
    """Whether Redis refused a script command: an ACL without it, or scripting switched off.

    An ACL answers ``NOPERM`` naming the command (a key or another command refused is not
    this); a managed Redis that disables scripting answers that the command is unknown or
    disabled.
    """
    if isinstance(exc, NoPermissionError):
        return (acl_refusal(exc) or "").partition("|")[0] in _SCRIPT_COMMANDS
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
