"""Every key prefix the service writes in Redis, and the ACL rules that let it.

An operator who gives the service a Redis user of its own grants it key patterns; a
pattern missing from them fails every write under it (``NOPERM``), so the start-up check
(``redis_scripting``), the advice of the log lines (``redis_advice``) and the operator's
guide (docs/enrich.md, "Redis keys and ACL") all read this one table.

| prefix | holds | pattern to grant |
| --- | --- | --- |
| ``amperity_signal:v1:`` | the enrichment cache and the identity map (``enrich/keys.py``) | ``~amperity_signal:*`` |
| ``consent:`` | the browser consent ledger (``browser.ConsentLedger``) | ``~consent:*`` |
| ``amperity-signal:rl:`` | the shared rate limiter (``RedisRateLimiter``) | ``~amperity-signal:rl:*`` |

The cache's pattern leaves out ``v1``: the version changes when its value shapes do, and
the next release's keys must not need a new grant. The consent ledger keeps the bare prefix
it has always written: moving it would hide every visitor's kept consent state from a
release that reads the new prefix, or from one rolled back to the old (docs/enrich.md).
"""  # noqa: E501 (the table's rows are one line each)

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CACHE_PREFIX: Final = "amperity_signal:v1"
"""The cache's keys: ``amperity_signal:v1:{kind}:{sha256}`` (``enrich.keys.cache_key``)."""

CONSENT_PREFIX: Final = "consent:"
"""The consent ledger's keys: ``consent:{sha256(integration id, anonymous id)}``."""

RATE_LIMIT_PREFIX: Final = "amperity-signal:rl:"
"""The shared rate limiter's sorted sets: ``amperity-signal:rl:{tenant}``."""


@dataclass(frozen=True)
class KeyPrefix:
    """One prefix the service writes under, what it holds and the ACL pattern covering it.

    Attributes:
        prefix: The start of every key written under it.
        keys: The keys' shape, as the docs show it.
        holds: What the keys hold, as a noun phrase.
        grant: The ACL key pattern to grant (``~`` and a glob matching ``prefix``).
    """

    prefix: str
    keys: str
    holds: str
    grant: str


KEY_PREFIXES: Final = (
    KeyPrefix(
        f"{CACHE_PREFIX}:",
        f"{CACHE_PREFIX}:{{kind}}:{{sha256}}",
        "the enrichment cache and the identity map",
        f"~{CACHE_PREFIX.partition(':')[0]}:*",
    ),
    KeyPrefix(
        CONSENT_PREFIX,
        f"{CONSENT_PREFIX}{{sha256}}",
        "the browser consent ledger",
        f"~{CONSENT_PREFIX}*",
    ),
    KeyPrefix(
        RATE_LIMIT_PREFIX,
        f"{RATE_LIMIT_PREFIX}{{tenant}}",
        "the shared rate limiter",
        f"~{RATE_LIMIT_PREFIX}*",
    ),
)
"""Every prefix the service writes under, in the order the docs list them."""

KEY_GRANTS: Final = " ".join(prefix.grant for prefix in KEY_PREFIXES)
"""The ACL key patterns the service's Redis user needs, all of them."""

ACL_RULES: Final = (
    f"resetkeys {KEY_GRANTS} resetchannels -@all +@read +@write +@scripting +ping +time "
    "+select -@dangerous"
)
"""The rules of ``ACL SETUSER <user> on ><password> ...`` for the service's Redis user.

Its keys and nothing else; the commands it sends (GET, MGET, SET, DEL, EVALSHA, SCRIPT
LOAD, PING, and SELECT for a database other than 0 in the URL) and those its Lua scripts
call (GET, SET, PTTL, PEXPIRE, TIME and the sorted set commands), without the
``@dangerous`` ones (FLUSHALL, KEYS, CONFIG, ...).
"""
