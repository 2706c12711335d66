"""A throwaway real redis-server for the Redis backend tests (``redis_server`` fixture)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from amperity_signal.config import CacheSettings
from amperity_signal.enrich import CacheBackend, MemoryStore, build_cache
from amperity_signal.metrics import Metrics

REDIS_SERVER = "/usr/bin/redis-server"
ANSWER_SECONDS = 10.0
"""How long the tests' Redis clients wait for redis-server to connect or answer.

The service's 0.25 s (``REDIS_SECONDS``) is far more than a local redis-server needs, but on
a loaded 2-core machine either process can wait longer than that for the CPU: the cache
then counts as down and a test fails for no fault of the code. No test here needs a slow
Redis to time out (a killed one refuses at once), so they wait this long instead.
"""


class RedisProcess:
    """A throwaway redis-server on a fixed free port, stoppable and restartable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready_by = time.monotonic() + 10
        while time.monotonic() < ready_by:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)  # waiting for a real process to bind, not for test logic
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CountingRedis(redis.Redis):
    """A Redis client that records the name of every command it sends (one per round trip).

    ``after_get``, when set, runs once after the next GET has been answered and before
    its caller sees the answer: another replica's write landing at that moment.
    """

    def __init__(self, port: int) -> None:
        # Configured as ``RedisStore.from_url`` configures the service's client, but for the
        # timeout (ANSWER_SECONDS).
        super().__init__(
            host="127.0.0.1",
            port=port,
            socket_timeout=ANSWER_SECONDS,
            socket_connect_timeout=ANSWER_SECONDS,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.commands: list[str] = []
        self.after_get: Callable[[], Awaitable[object]] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        command = str(args[0]).upper()
        self.commands.append(command)
        # redis-py leaves execute_command unannotated.
        reply = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if command == "GET" and self.after_get is not None:
            hook, self.after_get = self.after_get, None
            await hook()
        return reply


class ReplyLosingRedis(CountingRedis):
    """A counting client that loses the reply to the next ``lose`` command, once.

    The command reaches Redis and runs; then, instead of its reply, the caller's connection
    raises ConnectionError (a connection reset after the request went out). redis-py's own
    retry (one, as the service configures it) then sends the command again on a new
    connection: the second run sees what the first one wrote.
    """

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.lose: str | None = None
        self.lost: list[str] = []
        client = self

        class LosingConnection(Connection):
            async def send_command(self, *args: Any, **kwargs: Any) -> None:
                self.sent = str(args[0]).upper()
                await super().send_command(*args, **kwargs)

            async def read_response(self, *args: Any, **kwargs: Any) -> Any:
                reply = await super().read_response(*args, **kwargs)
                if client.lose is not None and getattr(self, "sent", None) == client.lose:
                    client.lost.append(client.lose)
                    client.lose = None
                    raise RedisConnectionError("connection reset: the reply was lost")
                return reply

        self.connection_pool.connection_class = LosingConnection


def memory_or_redis(
    request: pytest.FixtureRequest, kind: str, metrics: Metrics, clock: Callable[[], float]
) -> CacheBackend:
    """The service's cache backend on a memory store (``kind`` "memory") or a real Redis.

    For tests that pin one rule on both stores; the Redis one starts the ``redis_server``
    fixture only when asked for.
    """
    if kind == "memory":
        return CacheBackend(MemoryStore(100, clock=clock), metrics=metrics, clock=clock)
    server: RedisProcess = request.getfixturevalue("redis_server")
    settings = CacheSettings(backend="redis", redis_url=server.url)
    return build_cache(settings, metrics, clock=clock, redis_timeout=ANSWER_SECONDS)
