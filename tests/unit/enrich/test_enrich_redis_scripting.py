"""A Redis user that may not run Lua scripts stops check-config and serve with the grant to add.

The tests run a real redis-server and an ACL user without scripting (``-@scripting``), as
a locked-down or managed Redis would hand out; a Redis too slow to answer is a port that
takes connections and never replies, and leaves a warning instead.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
import tomli_w
from redis import exceptions

from amperity_signal import redis_scripting
from amperity_signal.cli import main
from amperity_signal.redis_advice import redis_failure
from amperity_signal.redis_scripting import SERVICE_SCRIPTS, check_redis_scripting
from tests.unit.cli_support import integration

from .redis_support import RedisProcess, free_port

PASSWORD = "noscript-canary-5a1f"
# How long the checks against the real redis-server wait for it: a refusal must never pass
# for a slow answer because the loaded machine kept redis-server off the CPU for a second.
ANSWER_SECONDS = 60.0


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


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel takes (the listen backlog) and nobody answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port: int = listener.getsockname()[1]
        yield port


def cli_config(tmp_path: Path, redis_url: str) -> Path:
    """A configuration with the Redis cache at ``redis_url``."""
    config = tmp_path / "c.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "server": {"grpc_address": "127.0.0.1:0", "http_address": "127.0.0.1:0"},
                "cache": {"backend": "redis", "redis_url": redis_url},
                "integrations": [integration()],
            }
        )
    )
    return config


async def test_a_user_without_scripting_is_a_problem_naming_redis_url_and_the_grant(
    users: dict[str, str],
) -> None:
    """-@scripting is refused at the check, naming cache.redis_url and +@scripting."""
    problem = (await check_redis_scripting(users["noscript"], seconds=ANSWER_SECONDS)).problem

    assert problem is not None
    assert problem.location == "cache.redis_url"
    assert "Lua scripts" in problem.problem
    assert "+@scripting" in problem.fix and "+evalsha +script|load" in problem.fix
    assert PASSWORD not in str(problem)


async def test_a_user_with_scripting_passes_and_has_the_scripts_loaded(
    users: dict[str, str],
) -> None:
    """A user allowed scripts passes, and every script the service runs is already loaded."""
    assert await check_redis_scripting(users["scripter"], seconds=ANSWER_SECONDS) == (
        redis_scripting.ScriptingCheck()
    )

    client = redis.Redis.from_url(users["scripter"])
    try:
        digests = [await client.script_load(script) for script in SERVICE_SCRIPTS]
        assert await client.script_exists(*digests) == [True] * len(SERVICE_SCRIPTS)
    finally:
        await client.aclose()


async def test_a_redis_that_cannot_be_reached_is_named_without_being_a_problem() -> None:
    """No Redis at the URL stops nothing: the check names it, with the start-up ping's advice."""
    url = f"redis://noscript:{PASSWORD}@127.0.0.1:{free_port()}/0"

    found = await check_redis_scripting(url)

    assert (found.problem, found.warning, found.credentials) == (None, None, None)
    assert found.unreachable is not None
    assert "Redis cannot be reached (ConnectionError)" in found.unreachable
    assert PASSWORD not in found.unreachable and "noscript" not in found.unreachable


WRONG_PASSWORD = "wrong-canary-77c2"


@pytest.fixture
def wrong_password(users: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration whose redis_url has a password the real Redis refuses."""
    monkeypatch.setattr(redis_scripting, "CHECK_SECONDS", ANSWER_SECONDS)
    return cli_config(tmp_path, users["scripter"].replace(PASSWORD, WRONG_PASSWORD))


def test_check_config_refuses_a_password_redis_refuses_naming_redis_url(
    wrong_password: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong password is a setting to change: check-config exits 2 with serve's advice."""
    assert main(["check-config", "--config", str(wrong_password)]) == 2

    printed = capsys.readouterr()
    assert "config OK" not in printed.out
    assert "cache.redis_url: the Redis at redis://127.0.0.1:" in printed.err
    assert (
        "Redis refused the credentials (AuthenticationError): check the user and password in "
        "cache.redis_url"
    ) in printed.err
    assert WRONG_PASSWORD not in printed.out + printed.err
    assert "Traceback" not in printed.err


def test_serve_starts_with_a_password_redis_refuses_and_leaves_it_to_its_ping(
    wrong_password: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused login does not stop serve, as it stops check-config: deliveries need no Redis.

    serve's own start-up ping names the refused credentials instead (tested in
    tests/e2e/test_enrich_redis.py, ``test_a_redis_that_refuses_or_is_down_is_named_at_start``).
    """
    monkeypatch.setattr("amperity_signal.commands.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("amperity_signal.runner.run_service", lambda *a, **k: 0)

    assert main(["serve", "--no-gateway", "--config", str(wrong_password)]) == 0


def test_check_config_warns_that_a_redis_it_cannot_reach_was_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis down at check time may be up at serve time: a warning with the advice, exit 0."""
    port = free_port()
    config = cli_config(tmp_path, f"redis://noscript:{PASSWORD}@127.0.0.1:{port}/0")

    assert (
        f"warning: could not check the Redis at redis://127.0.0.1:{port}/0 (cache.redis_url): "
        "Redis cannot be reached (ConnectionError): check that redis-server is running"
    ) in passed_check_config(config, capsys)


async def test_a_redis_that_never_answers_is_a_warning_naming_it_without_credentials(
    silent_port: int,
) -> None:
    """Timed out, the check cannot tell: no problem, but a warning saying where and what next."""
    url = f"redis://noscript:{PASSWORD}@127.0.0.1:{silent_port}/0?password={PASSWORD}"

    found = await check_redis_scripting(url, seconds=0.05)

    assert found.problem is None
    assert found.warning is not None
    assert f"Redis at redis://127.0.0.1:{silent_port}/0 (cache.redis_url)" in found.warning
    assert "did not answer within 0.05 s" in found.warning
    assert "run `amperity-signal check-config` again" in found.warning
    assert PASSWORD not in found.warning and "noscript" not in found.warning


def test_check_config_warns_that_a_redis_too_slow_to_answer_was_not_checked(
    silent_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A check that times out passes with a warning line, not silently as a checked Redis."""
    monkeypatch.setattr(redis_scripting, "CHECK_SECONDS", 0.05)
    config = cli_config(tmp_path, f"redis://noscript:{PASSWORD}@127.0.0.1:{silent_port}/0")

    assert (
        f"warning: could not check that the Redis at redis://127.0.0.1:{silent_port}/0 "
        "(cache.redis_url) lets the service run its Lua scripts"
    ) in passed_check_config(config, capsys)


def passed_check_config(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What check-config prints for ``config``, once it passed (exit 0, OK, no credentials)."""
    assert main(["check-config", "--config", str(config)]) == 0
    printed = capsys.readouterr()
    assert "config OK" in printed.out
    assert PASSWORD not in printed.out + printed.err and "noscript" not in printed.out
    return printed.out


def test_serve_logs_that_a_redis_too_slow_to_answer_was_not_checked_and_starts(
    silent_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service starts as before, and its log says the check could not be made."""
    monkeypatch.setattr(redis_scripting, "CHECK_SECONDS", 0.05)
    monkeypatch.setattr("amperity_signal.commands.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("amperity_signal.runner.run_service", lambda *a, **k: 0)
    config = cli_config(tmp_path, f"redis://noscript:{PASSWORD}@127.0.0.1:{silent_port}/0")

    with caplog.at_level(logging.WARNING):
        assert main(["serve", "--no-gateway", "--config", str(config)]) == 0

    assert [r.levelno for r in caplog.records if "could not check" in r.getMessage()] == [
        logging.WARNING
    ]
    assert PASSWORD not in caplog.text


def test_check_config_and_serve_refuse_a_redis_user_without_scripting(
    users: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check-config and serve exit with cache.redis_url and the grant, not a cache that flaps."""
    monkeypatch.setattr(redis_scripting, "CHECK_SECONDS", ANSWER_SECONDS)
    monkeypatch.setattr("amperity_signal.runner.run_service", refuse_to_serve)
    config = cli_config(tmp_path, users["noscript"])
    for command in (["check-config"], ["serve", "--no-gateway"]):
        assert main([*command, "--config", str(config)]) == 2
        printed = capsys.readouterr()
        assert "cache.redis_url" in printed.err and "+@scripting" in printed.err
        assert PASSWORD not in printed.err + printed.out
        assert "Traceback" not in printed.err


def refuse_to_serve(*args: object, **kwargs: object) -> int:
    """``run_service`` for a test where serve must stop before it: fail, never serve."""
    raise AssertionError("serve started with a Redis user that may not run scripts")


def test_a_refused_script_in_a_log_line_names_the_grant() -> None:
    """NOPERM on EVALSHA (an event's merge) says to grant scripting, not to check the server."""
    refused = exceptions.NoPermissionError(
        "User noscript has no permissions to run the 'evalsha' command"
    )
    text = redis_failure(refused)
    assert "Lua scripts" in text and "+@scripting" in text and "cache.redis_url" in text


async def test_a_read_only_replica_is_a_problem_not_a_redis_to_wait_for(
    redis_server: RedisProcess,
) -> None:
    """A replica answers, and refuses every write for as long as it is one: exit 2, not 0.

    Its READONLY used to read as "could not check ... serve uses it once it answers".
    """
    admin = redis.Redis.from_url(redis_server.url)
    try:
        await admin.replicaof("127.0.0.1", free_port())
        check = await check_redis_scripting(redis_server.url, seconds=ANSWER_SECONDS)
    finally:
        await admin.replicaof("NO", "ONE")
        await admin.aclose()

    assert check.unreachable is None and check.warning is None
    assert check.problem is not None
    assert check.problem.location == "cache.redis_url"
    assert "is a read-only replica" in check.problem.problem
    assert "point cache.redis_url at the primary" in check.problem.problem
