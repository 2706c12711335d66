"""What the log lines say to check when Redis fails: credentials, time or reachability."""

from __future__ import annotations

import pytest
from redis import exceptions
from redis._parsers.base import BaseParser

from amperity_signal.redis_advice import redis_failure


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
