"""Every key the service writes in Redis falls under one prefix of the table docs/enrich.md lists.

An ACL user granted the documented patterns must be able to use every key: a writer with a
prefix of its own, missing from the table, fails every write on such a Redis (session 26:
the consent ledger's ``consent:`` keys were documented nowhere).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import get_args

import pytest
from redis.asyncio import Redis

from amperity_signal.amperity import RedisRateLimiter
from amperity_signal.browser import ConsentLedger
from amperity_signal.enrich import MemoryStore
from amperity_signal.enrich.keys import Kind, cache_key, profile_scope
from amperity_signal.redis_keys import ACL_RULES, KEY_GRANTS, KEY_PREFIXES

ENRICH_DOC = Path(__file__).resolve().parents[2] / "docs" / "enrich.md"


def written_keys() -> list[str]:
    """One key of each kind the service writes: cache kinds, consent, rate limit."""
    scope = profile_scope("web", "acme", "apc-1")
    keys = [cache_key(kind, scope, "profile_id", "p-1") for kind in get_args(Kind)]
    keys.append(ConsentLedger(MemoryStore(10)).gate("web", "anon-1", "analytics").key)
    limiter = RedisRateLimiter(Redis.from_url("redis://127.0.0.1:1/0"))
    keys.append(limiter.redis_key("acme@https://acme.amperity.com"))
    return keys


@pytest.mark.parametrize("key", written_keys())
def test_every_key_the_service_writes_is_under_one_prefix_and_its_pattern(key: str) -> None:
    """Each key starts with exactly one table prefix, and that prefix's ACL pattern matches."""
    (prefix,) = [p for p in KEY_PREFIXES if key.startswith(p.prefix)]
    assert prefix.grant.startswith("~")
    assert fnmatchcase(key, prefix.grant[1:])


def test_docs_list_every_prefix_and_the_acl_line_of_the_table() -> None:
    """docs/enrich.md shows each prefix's row (keys, holds, pattern) and the ACL rules."""
    doc = ENRICH_DOC.read_text()
    for p in KEY_PREFIXES:
        assert f"| `{p.prefix}` | `{p.keys}` | {p.holds} | `{p.grant}` |" in doc
    assert f"ACL SETUSER amperity-signal on >PASSWORD {ACL_RULES}\n" in doc


def test_the_readme_names_the_key_patterns_of_the_table() -> None:
    """The README's Redis paragraph copies the patterns to grant: the table's, all of them."""
    readme = " ".join((ENRICH_DOC.parents[1] / "README.md").read_text().split())
    assert f"(`{KEY_GRANTS}`;" in readme
