"""Live Events across ``serve --workers N``: one stream of every worker's deliveries.

Each worker keeps its own deliveries in memory (``service.live.LiveEvents``), and a
gateway's channel reaches one worker only. So under ``--workers`` each worker also listens
on a Unix socket, ``worker-<n>.sock``, in a directory the parent made for them all (mode
700: only the service's user can connect; gRPC local credentials). A Live Events stream
opens ``WatchDeliveries`` on every socket there (its own worker's included) and merges the
watches: first the newest ``replay`` of all their replayed records by ``delivered_at``,
then live records as they come. Each record keeps its own watch's ``missed_before``, so
what the page adds up is what every worker's watch missed. A worker that is gone (its
socket refuses) is left out, and said once, at debug; one that stops mid-stream is left
out from then on, and the stream ends when the last does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from amperity_signal.gateway.backend import ServiceClient

log = logging.getLogger("amperity_signal.gateway")

SOCKET_GLOB = "worker-*.sock"
_Record = dict[str, Any]


def worker_socket(directory: str, n: int) -> str:
    """The path of worker ``n``'s socket in the workers' shared ``directory``."""
    return str(Path(directory) / f"worker-{n}.sock")


@dataclass
class Opened:
    """One worker's watch, its headers received: ``replaying`` records come first."""

    replaying: int
    records: AsyncIterator[_Record]


def delivered_at(record: _Record) -> int:
    """A record's ``delivered_at`` in nanoseconds: RFC 3339 text does not sort as time."""
    stamp = timestamp_pb2.Timestamp()
    with contextlib.suppress(ValueError, TypeError):
        stamp.FromJsonString(str(record.get("delivered_at", "")))
    return stamp.ToNanoseconds()


async def merged(watches: list[Opened], replay: int) -> AsyncGenerator[_Record]:
    """The records of several watches as one watch's.

    First the newest ``replay`` of their replayed records, oldest first; then each live
    record as any watch yields it. A watch that ends or fails is left out; the merged
    watch ends once every one has, with the last failure, if any.
    """
    replays: list[_Record] = []
    live: list[AsyncIterator[_Record]] = []
    failure: grpc.aio.AioRpcError | None = None
    for watch in watches:
        try:
            for _ in range(watch.replaying):
                replays.append(await anext(watch.records))
        except StopAsyncIteration:
            continue
        except grpc.aio.AioRpcError as error:
            failure = error
            continue
        live.append(watch.records)
    replays.sort(key=delivered_at)
    for record in replays[-replay:] if replay > 0 else []:
        yield record
    queue: asyncio.Queue[_Record | grpc.aio.AioRpcError | None] = asyncio.Queue(1000)

    async def pump(records: AsyncIterator[_Record]) -> None:
        try:
            async for record in records:
                await queue.put(record)
        except grpc.aio.AioRpcError as error:
            await queue.put(error)
        else:
            await queue.put(None)

    pumps = [asyncio.create_task(pump(records)) for records in live]
    try:
        running = len(pumps)
        while running:
            item = await queue.get()
            if isinstance(item, dict):
                yield item
                continue
            running -= 1
            failure = item or failure
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
    if failure is not None:
        raise failure


class WorkerWatches:
    """``WatchDeliveries`` on every worker's socket in ``directory``, merged.

    Args:
        directory: Where the workers' sockets are (``worker_socket``).
        rpc_timeout: Each channel's ``ServiceClient`` deadline (a watch has none).
    """

    def __init__(self, directory: str, rpc_timeout: float) -> None:
        self._directory = Path(directory)
        self._rpc_timeout = rpc_timeout
        self._gone: set[str] = set()

    def _client(self, path: Path) -> ServiceClient:
        credentials = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
        return ServiceClient(
            lambda: grpc.aio.secure_channel(f"unix:{path}", credentials),
            rpc_timeout=self._rpc_timeout,
            deliver_timeout=self._rpc_timeout,
        )

    async def watch(
        self, integration_id: str, replay: int, subscribed: Callable[[], None] = lambda: None
    ) -> AsyncGenerator[_Record]:
        """Like ``ServiceClient.watch_deliveries``, over every worker that answers.

        ``subscribed`` is called once every worker has taken its watch or refused it.

        Raises:
            grpc.aio.AioRpcError: When a worker refuses the watch for another reason than
                being gone (an unknown integration), or every worker is gone.
        """
        paths = sorted(self._directory.glob(SOCKET_GLOB))
        clients = [self._client(path) for path in paths]
        try:
            opening = zip(paths, clients, strict=True)
            opened = await asyncio.gather(
                *(self._open(path, client, integration_id, replay) for path, client in opening)
            )
            subscribed()
            watches = [watch for watch in opened if watch is not None]
            if not watches:
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    details="No worker of the service answers.",
                )
            async for record in merged(watches, replay):
                yield record
        finally:
            subscribed()
            await asyncio.gather(*(client.close() for client in clients))

    async def _open(
        self, path: Path, client: ServiceClient, integration_id: str, replay: int
    ) -> Opened | None:
        """The worker's watch once it is taken; None when the worker is gone."""
        try:
            replaying, records = await client.open_watch(integration_id, replay)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            if str(path) not in self._gone:
                self._gone.add(str(path))
                log.debug("a worker's Live Events socket refuses; left out", extra={"path": path})
            return None
        return Opened(replaying, records)
