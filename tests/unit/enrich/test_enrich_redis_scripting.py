"""A Redis user that may not run Lua scripts stops check-config and serve with the grant to add.

Every test runs a real redis-server and an ACL user without scripting (``-@scripting``), as
a locked-down or managed Redis would hand out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as redis
import tomli_w
from redis import exceptions

from amperity_signal.redis_advice import redis_failure
from amperity_signal.redis_scripting import SERVICE_SCRIPTS, redis_scripting_problem
from tests.unit.cli_support import integration, run_cli

from .redis_support import RedisProcess

PASSWORD = "noscript-canary-5a1f"


@pytest.fixture
async def users(redis_server: RedisProcess) -> dict[str, str]:
    """URLs for a user without scripting and one with every command, on a real Redis."""
    admin = redis.Redis.from_url(redis_server.url)
    for user, commands in (("noscript", ["+@all", "-@scripting"]), ("scripter", ["+@all"])):
        await admin.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{PASSWORD}"],
            keys=["*"],
            channels=["*"],
            commands=commands,
        )
    await admin.aclose()
    base = f"127.0.0.1:{redis_server.port}/0"
    return {
        "noscript": f"redis://noscript:{PASSWORD}@{base}",
        "scripter": f"redis://scripter:{PASSWORD}@{base}",
    }


async def test_a_user_without_scripting_is_a_problem_naming_redis_url_and_the_grant(
    users: dict[str, str],
) -> None:
    """-@scripting is refused at the check, naming cache.redis_url and +@scripting."""
    problem = await redis_scripting_problem(users["noscript"])

    assert problem is not None
    assert problem.location == "cache.redis_url"
    assert "Lua scripts" in problem.problem
    assert "+@scripting" in problem.fix and "+evalsha +script|load" in problem.fix
    assert PASSWORD not in str(problem)


async def test_a_user_with_scripting_passes_and_has_the_scripts_loaded(
    users: dict[str, str],
) -> None:
    """A user allowed scripts passes, and every script the service runs is already loaded."""
    assert await redis_scripting_problem(users["scripter"]) is None

    client = redis.Redis.from_url(users["scripter"])
    try:
        digests = [await client.script_load(script) for script in SERVICE_SCRIPTS]
        assert await client.script_exists(*digests) == [True] * len(SERVICE_SCRIPTS)
    finally:
        await client.aclose()


async def test_a_redis_that_does_not_answer_is_left_to_the_start_up_probe() -> None:
    """No Redis at the URL is not this check's problem: serve starts and warns as before."""
    assert await redis_scripting_problem("redis://127.0.0.1:1/0") is None


def test_check_config_and_serve_refuse_a_redis_user_without_scripting(
    users: dict[str, str], tmp_path: Path
) -> None:
    """check-config and serve exit with cache.redis_url and the grant, not a cache that flaps."""
    config = tmp_path / "c.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "server": {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"},
                "cache": {"backend": "redis", "redis_url": users["noscript"]},
                "integrations": [integration()],
            }
        )
    )
    for command in (["check-config"], ["serve", "--no-gateway"]):
        result = run_cli(*command, "--config", str(config))
        assert result.returncode == 2, result.stderr
        assert "cache.redis_url" in result.stderr and "+@scripting" in result.stderr
        assert PASSWORD not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


def test_a_refused_script_in_a_log_line_names_the_grant() -> None:
    """NOPERM on EVALSHA (an event's merge) says to grant scripting, not to check the server."""
    refused = exceptions.NoPermissionError(
        "User noscript has no permissions to run the 'evalsha' command"
    )
    text = redis_failure(refused)
    assert "Lua scripts" in text and "+@scripting" in text and "cache.redis_url" in text
