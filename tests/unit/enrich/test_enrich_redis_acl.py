"""A Redis user missing a key pattern stops check-config and serve naming the pattern to grant.

Session 26: a user granted ``~amperity_signal:* ~amperity-signal:*`` passed check-config,
then every RecordConsent answered CACHE_UNAVAILABLE (the ledger's keys are ``consent:``)
and the log said to grant ``+@scripting``, which the user had. The tests run a real
redis-server with ACL users built from the documented rules, less one prefix.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis as sync_redis
import redis.asyncio as redis

from amperity_signal import redis_scripting
from amperity_signal.amperity import RedisRateLimiter
from amperity_signal.browser import ConsentLedger
from amperity_signal.cli import main
from amperity_signal.config import CacheSettings
from amperity_signal.enrich import build_cache
from amperity_signal.enrich.keys import cache_key, profile_scope, rekind
from amperity_signal.enrich.stores import RedisStore
from amperity_signal.errors import CacheUnavailable
from amperity_signal.metrics import Metrics
from amperity_signal.redis_keys import ACL_RULES, KEY_GRANTS, KEY_PREFIXES, KeyPrefix
from amperity_signal.redis_scripting import ScriptingCheck, check_redis_scripting

from .redis_support import ANSWER_SECONDS, RedisProcess
from .test_enrich_redis_scripting import cli_config

PASSWORD = "acl-canary-3e9d"
NO_CONSENT = "~amperity_signal:* ~amperity-signal:*"
"""The audit's grant: the cache and limiter patterns, without the consent ledger's."""


def acl_user(server: RedisProcess, name: str, rules: str, db: int = 0) -> str:
    """Create ``name`` with ``rules`` (ACL SETUSER syntax) on ``server``; its URL (``db``)."""
    with sync_redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", name, "on", f">{PASSWORD}", *rules.split())
    return f"redis://{name}:{PASSWORD}@127.0.0.1:{server.port}/{db}"


def rules_without(prefix: KeyPrefix, *, read_only: bool = False) -> str:
    """The documented rules with ``prefix``'s pattern left out (or made read-only)."""
    return ACL_RULES.replace(prefix.grant, f"%R{prefix.grant}" if read_only else "")


@pytest.mark.parametrize("read_only", [False, True], ids=["missing", "read-only"])
@pytest.mark.parametrize("prefix", KEY_PREFIXES, ids=[p.prefix for p in KEY_PREFIXES])
async def test_a_user_without_a_prefix_pattern_is_a_problem_naming_that_pattern(
    redis_server: RedisProcess, prefix: KeyPrefix, *, read_only: bool
) -> None:
    """Each prefix refused (or read-only) is a problem naming it and its pattern alone."""
    url = acl_user(redis_server, "partial", rules_without(prefix, read_only=read_only))

    problem = (await check_redis_scripting(url, seconds=ANSWER_SECONDS)).problem

    assert problem is not None
    assert problem.location == "cache.redis_url"
    assert f"the keys under {prefix.prefix}... ({prefix.holds})" in problem.problem
    assert f"grant the user those key patterns (ACL SETUSER <user> {prefix.grant})" in (problem.fix)
    assert "scripting" not in str(problem) and PASSWORD not in str(problem)


async def test_a_user_refused_a_command_the_service_runs_is_a_problem_naming_it(
    redis_server: RedisProcess,
) -> None:
    """Without DEL (which the probe's script calls, as the cache does) the check stops."""
    url = acl_user(redis_server, "nodel", f"{ACL_RULES} -del")

    problem = (await check_redis_scripting(url, seconds=ANSWER_SECONDS)).problem

    assert problem is not None and problem.location == "cache.redis_url"
    assert "refuses a command the service runs" in problem.problem
    assert f"grant it the commands the service runs (ACL SETUSER <user> {ACL_RULES})" in (
        problem.problem
    )
    assert "key patterns" not in str(problem) and PASSWORD not in str(problem)


@pytest.mark.parametrize("db", [0, 1])
async def test_the_documented_rules_pass_the_check_and_run_every_redis_operation(
    redis_server: RedisProcess, db: int
) -> None:
    """A user with exactly the rules docs/enrich.md gives passes, and each writer works.

    Also in a database of its own (``/1``, as docs/enrich.md suggests), which takes SELECT.
    """
    url = acl_user(redis_server, "signal", ACL_RULES, db)
    assert await check_redis_scripting(url, seconds=ANSWER_SECONDS) == ScriptingCheck()

    client = redis.Redis.from_url(url, socket_timeout=ANSWER_SECONDS)
    store = RedisStore(client)
    try:
        attrs = cache_key("attrs", profile_scope("web", "acme", "apc-1"), "profile_id", "p-1")
        await store.set(attrs, b'{"Persona": "Gold"}', 60)
        await store.copy_object(attrs, rekind(attrs, "perslast"))
        assert (
            await store.multi_get([attrs, rekind(attrs, "perslast")])
            == [b'{"Persona": "Gold"}'] * 2
        )
        await store.delete(attrs)
        ident = cache_key("ident", "web", "anonymous_id", "anon-1")
        merged = await store.merge_identifiers(
            ident, {"email_sha256": "ab" * 32}, now=time.time(), ttl=60
        )
        assert merged.changed
        ledger = ConsentLedger(store)
        await ledger.record("web", "anon-1", {"analytics": True})
        assert await ledger.allows("web", "anon-1", "analytics")
        limiter = RedisRateLimiter(client, redis_timeout=ANSWER_SECONDS)
        async with limiter.slot("acme", 10, None) as waited:
            assert waited == 0
        assert await client.exists(limiter.redis_key("acme")) == 1
    finally:
        await client.aclose()


async def test_the_check_leaves_no_key_behind(
    redis_server: RedisProcess, inspector: redis.Redis
) -> None:
    """The probe reads and deletes a key the service never writes: Redis stays empty."""
    url = acl_user(redis_server, "signal", ACL_RULES)

    assert await check_redis_scripting(url, seconds=ANSWER_SECONDS) == ScriptingCheck()

    assert await inspector.dbsize() == 0


def test_check_config_and_serve_stop_on_the_audits_grant_naming_the_consent_pattern(
    redis_server: RedisProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """~amperity_signal:* ~amperity-signal:* is refused before serving, naming ~consent:*."""
    url = acl_user(redis_server, "audit", ACL_RULES.replace(KEY_GRANTS, NO_CONSENT))
    monkeypatch.setattr(redis_scripting, "CHECK_SECONDS", ANSWER_SECONDS)
    monkeypatch.setattr("amperity_signal.runner.run_service", refuse_to_serve)
    config = cli_config(tmp_path, url)
    for command in (["check-config"], ["serve", "--no-gateway"]):
        assert main([*command, "--config", str(config)]) == 2
        printed = capsys.readouterr()
        assert "cache.redis_url" in printed.err
        assert "consent:... (the browser consent ledger)" in printed.err
        assert "(ACL SETUSER <user> ~consent:*)" in printed.err
        assert "+@scripting" not in printed.err
        assert PASSWORD not in printed.err + printed.out
        assert "Traceback" not in printed.err


def refuse_to_serve(*args: object, **kwargs: object) -> int:
    """``run_service`` for a test where serve must stop before it: fail, never serve."""
    raise AssertionError("serve started with a Redis user refused the consent keys")


async def test_a_refused_consent_key_is_logged_as_a_key_pattern_not_as_scripting(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """RecordConsent's CACHE_UNAVAILABLE logs the key patterns to grant, not +@scripting."""
    url = acl_user(redis_server, "audit", ACL_RULES.replace("~consent:*", ""))
    cache = build_cache(
        CacheSettings(backend="redis", redis_url=url), Metrics(), redis_timeout=ANSWER_SECONDS
    )
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(CacheUnavailable):
            await ConsentLedger(cache).record("web", "anon-1", {"analytics": True})
    finally:
        await cache.close()

    (line,) = [r.getMessage() for r in caplog.records if "cache unavailable" in r.getMessage()]
    assert "Redis refused cache.redis_url's user the service's keys (NoPermissionError)" in line
    assert "~consent:*" in line and "+@scripting" not in line
