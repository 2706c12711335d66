"""The start-up check that Redis lets the service run its Lua scripts.

The rate limiter, the identity map and the consent ledger each update Redis with one Lua
script (EVALSHA, loaded by SCRIPT LOAD when Redis does not know it). A Redis user whose ACL
forbids scripting, or a managed Redis that switches it off, fails every such update: the
cache switches itself off again and again and the limit falls back to each process. That is
a configuration to fix, not an outage to ride out, so it stops the start with the fix.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from amperity_signal.amperity.ratelimit import REDIS_SCRIPTS as LIMITER_SCRIPTS
from amperity_signal.enrich.identity_entry import MERGE_SCRIPT
from amperity_signal.enrich.newer_entry import KEEP_NEWER_SCRIPT
from amperity_signal.errors import ConfigProblem
from amperity_signal.redis_advice import SCRIPTING_FIX, scripting_refused

SERVICE_SCRIPTS = (*LIMITER_SCRIPTS, MERGE_SCRIPT, KEEP_NEWER_SCRIPT)
"""Every Lua script the service runs on Redis."""

# Run by its digest to check EVALSHA itself: it touches no key.
_NO_OP = "return 1"


async def scripting_problem(client: Redis) -> ConfigProblem | None:
    """Load the service's scripts and run one by digest; the problem if Redis refuses.

    Loading them also saves each one's first EVALSHA a NOSCRIPT round trip. Any other
    failure (Redis down, too slow) is not this check's to report: it is None here, and the
    caller's ping says what to check.
    """
    try:
        for script in SERVICE_SCRIPTS:
            await client.script_load(script)
        digest = await client.script_load(_NO_OP)
        await client.evalsha(digest, 0)
    except RedisError as exc:
        if not scripting_refused(exc):
            return None
        return ConfigProblem(
            "cache.redis_url",
            f"Redis refuses the Lua scripts the identity map, consent ledger and rate "
            f"limiter run ({type(exc).__name__}: {exc}).",
            SCRIPTING_FIX[0].upper() + SCRIPTING_FIX[1:] + ".",
        )
    return None


CHECK_SECONDS = 1.0


async def redis_scripting_problem(url: str) -> ConfigProblem | None:
    """``scripting_problem`` for the Redis at ``url`` (``[cache] redis_url``), on a new client."""
    client = Redis.from_url(url, socket_timeout=CHECK_SECONDS, socket_connect_timeout=CHECK_SECONDS)
    try:
        return await scripting_problem(client)
    finally:
        await client.aclose()
