"""The start-up check that Redis lets the service run its Lua scripts, on its keys.

The rate limiter, the identity map, the consent ledger and the personalised cache (its
latest entry) each update Redis with one Lua script (EVALSHA, loaded by SCRIPT LOAD when
Redis does not know it). A Redis user whose ACL forbids scripting, or a managed Redis that
switches it off, fails every such update: the cache switches itself off again and again and
the limit falls back to each process. That is a configuration to fix, not an outage to ride
out, so it stops the start with the fix.

The same holds for the keys: a user whose ACL lacks the pattern of one prefix the service
writes (``redis_keys.KEY_PREFIXES``) fails every write under it, and Redis' refusal said
only "NOPERM". So the check then runs a probe script on one key under each prefix (a key
the service never writes: the script reads it and deletes it, so nothing is written and
nothing stays) and stops the start naming every pattern to grant. Redis checks a script's
keys for both reading and writing before it runs it, so a read-only pattern fails too.

A Redis that does not answer in time leaves the question open: the start goes on (Redis may
only be busy), with a warning that the check could not be made and how to make it again.

A Redis that refuses ``cache.redis_url``'s user or password, or cannot be reached at all, is
reported too (``ScriptingCheck.credentials`` and ``.unreachable``); ``check-config`` makes the
first an error and the second a warning, while ``serve`` leaves both to its start-up ping.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from amperity_signal.amperity.ratelimit import REDIS_SCRIPTS as LIMITER_SCRIPTS
from amperity_signal.enrich.identity_entry import MERGE_SCRIPT
from amperity_signal.enrich.newer_entry import KEEP_NEWER_SCRIPT
from amperity_signal.enrich.stores import COPY_OBJECT_SCRIPT
from amperity_signal.errors import ConfigProblem
from amperity_signal.redis_advice import (
    KEYS_REFUSED,
    SCRIPTING_FIX,
    acl_refusal,
    redis_failure,
    redis_location,
    scripting_refused,
)
from amperity_signal.redis_keys import KEY_GRANTS, KEY_PREFIXES, KeyPrefix

SERVICE_SCRIPTS = (*LIMITER_SCRIPTS, MERGE_SCRIPT, KEEP_NEWER_SCRIPT, COPY_OBJECT_SCRIPT)
"""Every Lua script the service runs on Redis."""

# Run by its digest to check EVALSHA itself: it touches no key.
_NO_OP = "return 1"

# Run on one key per prefix: Redis refuses it (NOPERM) unless the user may read and write
# the key. The key is never written by the service, so GET finds nothing and DEL deletes
# nothing, and neither leaves anything behind.
_KEY_PROBE = "redis.call('GET', KEYS[1]) return redis.call('DEL', KEYS[1])"
PROBE_NAME = "probe:start-check"
"""What follows a prefix in the probe's key: no key the service writes looks like it."""

CHECK_SECONDS = 1.0
"""How long the check waits for Redis to connect, and for each of its answers."""


@dataclass(frozen=True)
class ScriptingCheck:
    """What the check found: a refusal that stops the start, or why it could not tell.

    Attributes:
        problem: Redis refuses the scripts, a command or the keys under a prefix:
            ``check-config`` and ``serve`` stop on it.
        warning: Redis did not answer in time: both print (or log) it and go on.
        credentials: Redis refused the URL's user or password. A setting to change, so an
            error for ``check-config``; ``serve`` starts without Redis (deliveries do not
            need it) and its start-up ping logs the same advice.
        unreachable: Redis could not be asked (down, a wrong host or port, an error it
            answered): a warning for ``check-config``, as Redis may be up by the time
            ``serve`` starts, where the start-up ping says the same.
    """

    problem: ConfigProblem | None = None
    warning: str | None = None
    credentials: ConfigProblem | None = None
    unreachable: str | None = None


async def scripting_check(client: Redis, where: str, seconds: float) -> ScriptingCheck:
    """Load the service's scripts, run one by digest and probe each key prefix.

    The problem if Redis refuses any of it (scripting, a command, or the keys under a
    prefix, naming the pattern to grant for each). Loading the scripts also saves each
    one's first EVALSHA a NOSCRIPT round trip. Redis not answering within ``seconds``
    (``client``'s timeout) is a warning naming ``where``, the Redis without its
    credentials. A refused user or password, and any other failure (Redis down), say what
    to check in the words the start-up ping logs (``redis_failure``).
    """
    try:
        for script in SERVICE_SCRIPTS:
            await client.script_load(script)
        digest = await client.script_load(_NO_OP)
        await client.evalsha(digest, 0)
        refused = await _refused_prefixes(client)
    except RedisTimeoutError as exc:
        return ScriptingCheck(warning=_unchecked(where, seconds, exc))
    except RedisError as exc:
        return _failed(where, exc)
    if refused:
        return ScriptingCheck(problem=_keys_refused(where, refused))
    return ScriptingCheck()


def _failed(where: str, exc: RedisError) -> ScriptingCheck:
    """What a Redis error the check met means: a refusal, a login refused, or no answer."""
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return ScriptingCheck(credentials=_credentials_refused(where, exc))
    if scripting_refused(exc):
        return ScriptingCheck(
            problem=ConfigProblem(
                "cache.redis_url",
                f"Redis refuses the Lua scripts the identity map, consent ledger and rate "
                f"limiter run ({type(exc).__name__}: {exc}).",
                _sentence(SCRIPTING_FIX),
            )
        )
    if isinstance(exc, ReadOnlyError):
        # It answered, and will refuse every write for as long as it is a replica: no
        # "once it answers" to wait for.
        return ScriptingCheck(
            problem=ConfigProblem(
                "cache.redis_url",
                f"the Redis at {where} is a read-only replica: every cache, identity-map, "
                f"consent and rate-limit write would fail. {_sentence(redis_failure(exc))}",
                "then run `amperity-signal check-config` again.",
            )
        )
    if acl_refusal(exc) is None:
        return ScriptingCheck(unreachable=_not_asked(where, exc))
    return ScriptingCheck(
        problem=ConfigProblem(
            "cache.redis_url",
            f"the Redis at {where} refuses a command the service runs. "
            f"{_sentence(redis_failure(exc))}",
            "grant it, then run `amperity-signal check-config` again.",
        )
    )


async def _refused_prefixes(client: Redis) -> list[KeyPrefix]:
    """The prefixes under which Redis refuses the user a key (the probe's NOPERM)."""
    digest = await client.script_load(_KEY_PROBE)
    refused = []
    for prefix in KEY_PREFIXES:
        try:
            await client.evalsha(digest, 1, prefix.prefix + PROBE_NAME)
        except ResponseError as exc:
            if acl_refusal(exc) != KEYS_REFUSED:
                raise
            refused.append(prefix)
    return refused


def _keys_refused(where: str, refused: list[KeyPrefix]) -> ConfigProblem:
    """The problem of a user refused the keys under ``refused``, with the patterns to grant."""
    keys = "; ".join(f"{p.prefix}... ({p.holds})" for p in refused)
    grants = " ".join(p.grant for p in refused)
    return ConfigProblem(
        "cache.redis_url",
        f"the Redis at {where} refuses cache.redis_url's user the keys under {keys}: every "
        "read and write of them would fail (NOPERM), as if Redis were down for them.",
        f"grant the user those key patterns (ACL SETUSER <user> {grants}); the service "
        f"writes under every one of {KEY_GRANTS} (docs/enrich.md, Redis keys and ACL).",
    )


def _credentials_refused(where: str, exc: RedisError) -> ConfigProblem:
    """The problem of a Redis that refused the URL's user or password (never shown)."""
    return ConfigProblem(
        "cache.redis_url",
        f"the Redis at {where} did not let check-config in. {_sentence(redis_failure(exc))}",
        "correct them (percent-encode @, : and / in a password; when redis_url is written as "
        "env:NAME, in that variable) and run `amperity-signal check-config` again. `serve` "
        "would start anyway and run without Redis (no shared cache, identity map, consent "
        "ledger or rate limit), logging this advice at start.",
    )


def _sentence(clause: str) -> str:
    """A ``redis_advice`` clause as a sentence of its own."""
    return clause[0].upper() + clause[1:] + "."


def _not_asked(where: str, exc: RedisError) -> str:
    """The warning that Redis could not be asked: down, or an error it answered."""
    return (
        f"could not check the Redis at {where} (cache.redis_url): {redis_failure(exc)}. "
        "`serve` starts without it and uses it once it answers; run `amperity-signal "
        "check-config` again then to check its login and that it runs the service's Lua "
        "scripts."
    )


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
