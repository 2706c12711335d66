"""What the log lines say to check when Redis fails: credentials, ACL, time or reachability."""

from __future__ import annotations

import pytest
from redis import exceptions
from redis._parsers.base import BaseParser

from amperity_signal.redis_advice import redis_failure
from amperity_signal.redis_keys import ACL_RULES, KEY_GRANTS, KEY_PREFIXES


@pytest.mark.parametrize(
    "exc",
    [
        exceptions.TimeoutError("Timeout reading from socket"),
        TimeoutError(),
    ],
)
def test_a_redis_timeout_says_redis_did_not_answer_in_time(exc: BaseException) -> None:
    """redis-py's own TimeoutError (a socket_timeout) is a slow Redis, not a stopped one."""
    text = redis_failure(exc)
    assert "did not answer in time" in text and "cache.redis_url" in text


def test_a_refused_connection_says_redis_cannot_be_reached() -> None:
    """A connection error asks to check that redis-server runs at cache.redis_url."""
    text = redis_failure(exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379."))
    assert "cannot be reached" in text and "redis-server is running" in text


def test_a_wrong_password_points_at_the_credentials_in_the_url() -> None:
    """WRONGPASS names the user and password in cache.redis_url, never the URL itself."""
    text = redis_failure(exceptions.AuthenticationError("WRONGPASS invalid username-password"))
    assert "refused the credentials" in text and "cache.redis_url" in text


@pytest.mark.parametrize(
    ("reply", "advice"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", "out of memory (Out"),
        ("READONLY You can't write against a read only replica.", "read-only replica"),
        ("LOADING Redis is loading the dataset in memory", "still loading its data set"),
        ("ERR max number of clients reached", "maxclients"),
        ("MISCONF Redis is configured to save RDB snapshots", "cannot save its snapshot"),
        ("MOVED 3999 127.0.0.1:6381", "Redis Cluster node"),
        ("ERR value is not an integer or out of range", "(ResponseError: ERR): it is running"),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "WRONGTYPE)"),
    ],
)
def test_an_error_redis_answered_says_what_it_means_not_that_redis_is_down(
    reply: str, advice: str
) -> None:
    """Each reply as redis-py's parser turns it into an exception, and only its code quoted."""
    exc = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    text = redis_failure(exc)
    assert advice in text, text
    assert "cannot be reached" not in text
    assert "wrong kind of value" not in text and "out of range" not in text


@pytest.mark.parametrize(
    "reply",
    [
        "NOPERM this user has no permissions to access one of the keys used as arguments",
        "NOPERM No permissions to access a key",
        "ERR The user executing the script can't access at least one of the keys mentioned "
        "in the command arguments script: 370a619c, on @user_script:1.",
    ],
)
def test_a_refused_key_names_the_key_patterns_to_grant_not_scripting(reply: str) -> None:
    """Redis 6.2-7.0's and 7.2's key refusals (and one inside a script) name the patterns."""
    exc = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    text = redis_failure(exc)
    assert "refused cache.redis_url's user the service's keys" in text, text
    assert f"ACL SETUSER <user> {KEY_GRANTS};" in text
    assert all(prefix.grant in text for prefix in KEY_PREFIXES)
    assert "scripting" not in text and "Lua" not in text


@pytest.mark.parametrize(
    "reply",
    [
        "NOPERM this user has no permissions to run the 'get' command",
        "NOPERM User svc-7f3e has no permissions to run the 'get' command",
        "NOPERM this user has no permissions to run the 'keys' command",
        "NOPERM this user has no permissions to run the 'command' command",
    ],
)
def test_a_refused_command_is_named_with_the_rules_to_grant(reply: str) -> None:
    """NOPERM for GET names the command and the service's ACL rules, not scripting.

    KEYS and COMMAND too, though their names are the words "keys" and "command": a
    refused KEYS is no key pattern missing.
    """
    text = redis_failure(BaseParser.parse_error(reply))  # type: ignore[no-untyped-call]
    command = reply.split("'")[1]
    assert f"refused cache.redis_url's user the '{command}' command (NoPermissionError)" in text
    assert f"ACL SETUSER <user> {ACL_RULES})" in text
    assert "Lua scripts" not in text and "svc-7f3e" not in text


@pytest.mark.parametrize("command", ["evalsha", "script|load"])
def test_a_refused_script_command_still_names_the_scripting_grant(command: str) -> None:
    """Redis 7.0's wording of a refused EVALSHA or SCRIPT LOAD keeps the +@scripting advice."""
    reply = f"NOPERM this user has no permissions to run the '{command}' command"
    text = redis_failure(BaseParser.parse_error(reply))  # type: ignore[no-untyped-call]
    assert "Lua scripts" in text and "+@scripting" in text
