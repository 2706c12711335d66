"""The start-up check that Redis lets the service run its Lua scripts.

The rate limiter, the identity map, the consent ledger and the personalised cache (its
latest entry) each update Redis with one Lua script (EVALSHA, loaded by SCRIPT LOAD when
Redis does not know it). A Redis user whose ACL forbids scripting, or a managed Redis that
switches it off, fails every such update: the cache switches itself off again and again and
the limit falls back to each process. That is a configuration to fix, not an outage to ride
out, so it stops the start with the fix.

A Redis that does not answer in time leaves the question open: the start goes on (Redis may
only be busy), with a warning that the check could not be made and how to make it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from amperity_signal.amperity.ratelimit import REDIS_SCRIPTS as LIMITER_SCRIPTS
from amperity_signal.enrich.identity_entry import MERGE_SCRIPT
from amperity_signal.enrich.newer_entry import KEEP_NEWER_SCRIPT
from amperity_signal.enrich.stores import COPY_OBJECT_SCRIPT
from amperity_signal.errors import ConfigProblem
from amperity_signal.redis_advice import SCRIPTING_FIX, redis_location, scripting_refused

SERVICE_SCRIPTS = (*LIMITER_SCRIPTS, MERGE_SCRIPT, KEEP_NEWER_SCRIPT, COPY_OBJECT_SCRIPT)
"""Every Lua script the service runs on Redis."""

# Run by its digest to check EVALSHA itself: it touches no key.
_NO_OP = "return 1"

CHECK_SECONDS = 1.0
"""How long the check waits for Redis to connect, and for each of its answers."""


@dataclass(frozen=True)
class ScriptingCheck:
    """What the check found: a refusal that stops the start, or why it could not tell."""

    problem: ConfigProblem | None = None
    warning: str | None = None


async def scripting_check(client: Redis, where: str, seconds: float) -> ScriptingCheck:
    """Load the service's scripts and run one by digest; the problem if Redis refuses.

    Loading them also saves each one's first EVALSHA a NOSCRIPT round trip. Redis not
    answering within ``seconds`` (``client``'s timeout) is a warning naming ``where``, the
    Redis without its credentials. Any other failure (Redis down, a wrong password) is not
    this check's to report: the caller's ping says what to check.
    """
    try:
        for script in SERVICE_SCRIPTS:
            await client.script_load(script)
        digest = await client.script_load(_NO_OP)
        await client.evalsha(digest, 0)
    except RedisTimeoutError as exc:
        return ScriptingCheck(warning=_unchecked(where, seconds, exc))
    except RedisError as exc:
        if not scripting_refused(exc):
            return ScriptingCheck()
        return ScriptingCheck(
            problem=ConfigProblem(
                "cache.redis_url",
                f"Redis refuses the Lua scripts the identity map, consent ledger and rate "
                f"limiter run ({type(exc).__name__}: {exc}).",
                SCRIPTING_FIX[0].upper() + SCRIPTING_FIX[1:] + ".",
            )
        )
    return ScriptingCheck()


def _unchecked(where: str, seconds: float, exc: RedisTimeoutError) -> str:
    return (
        f"could not check that the Redis at {where} (cache.redis_url) lets the service run "
        f"its Lua scripts: it did not answer within {seconds:g} s ({type(exc).__name__}). "
        "Starting anyway; if that Redis refuses scripts, every cache merge and shared "
        "rate-limit slot will fail. Check that it is running and not overloaded, then run "
        "`amperity-signal check-config` again to finish the check."
    )


async def check_redis_scripting(url: str, *, seconds: float | None = None) -> ScriptingCheck:
    """``scripting_check`` on a new client for the Redis at ``url`` (``[cache] redis_url``).

    ``seconds`` defaults to ``CHECK_SECONDS``, read when called.
    """
    wait = CHECK_SECONDS if seconds is None else seconds
    client = Redis.from_url(url, socket_timeout=wait, socket_connect_timeout=wait)
    try:
        return await scripting_check(client, redis_location(url), wait)
    finally:
        await client.aclose()
