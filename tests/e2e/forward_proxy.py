"""A minimal HTTP forward proxy, run as its own process by the outbound-proxy tests.

``python tests/e2e/forward_proxy.py --port 0 [--credentials user:password]`` prints
``proxy listening on http://127.0.0.1:PORT`` once bound. It forwards absolute-form
requests (``POST http://host:port/path HTTP/1.1``), one upstream connection each, and keeps
the client's connection alive between them. With ``--credentials`` a request without the
matching ``Proxy-Authorization: Basic ...`` is answered 407 and not forwarded.

``CONNECT host:port`` (an https tunnel) is checked the same way, then answered 200 and
the bytes relayed both ways, unread, until either side closes; 502 when the target cannot
be reached. With ``--connect-status N`` every authorised ``CONNECT`` is answered N instead
(a proxy refusing tunnels by policy: 403, 405...; or 502 for an unreachable upstream),
with no tunnel opened. What crossed the tunnel is summed up, so a test can show the TLS was end to
end: the proxy only ever had the ``CONNECT`` line and its headers in the clear.

``GET /_proxy/requests`` (origin form, asked of the proxy itself) answers what it saw, as
JSON: ``{"requests": [{"method", "url", "status", "authorized", "headers"}]}``, where
``url`` is the absolute URL (``host:port`` for a CONNECT), ``status`` what the client was
answered (407 for a refused one), ``authorized`` whether the request carried the right
credentials and ``headers`` the lower-case names of the headers it came with. A tunnel's
record adds ``tunnel``: ``{"client_bytes", "server_bytes", "first_byte"}`` (the first byte
the client sent through it, as a number: 22 opens a TLS handshake) and
``"plaintext_authorization"`` (whether ``authorization:`` appeared in the client's bytes).
The ``Proxy-Authorization`` header is never forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any
from urllib.parse import urlsplit

HEAD_LIMIT = 65_536
_HOP_BY_HOP = {b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive"}


class ForwardProxy:
    """Forwards requests; remembers each one for ``/_proxy/requests``."""

    def __init__(self, credentials: str | None, connect_status: int | None = None) -> None:
        self._expected = (
            b"Basic " + base64.b64encode(credentials.encode()) if credentials is not None else None
        )
        self._connect_status = connect_status
        self.seen: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection until it closes."""
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the client is gone."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head[:-4].split(b"\r\n")
        method, target, _version = lines[0].decode("latin-1").split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:]]
        length = next((int(v) for k, v in headers if k.lower() == b"content-length"), 0)
        body = await reader.readexactly(length)
        if target == "/_proxy/requests":
            await _answer(writer, 200, json.dumps({"requests": self.seen}).encode())
            return True
        if method != "CONNECT" and not target.startswith("http://"):
            await _answer(writer, 501, b"only absolute-form http requests are forwarded")
            return True
        given = next((v for k, v in headers if k.lower() == b"proxy-authorization"), None)
        authorized = self._expected is None or given == self._expected
        record: dict[str, Any] = {
            "method": method,
            "url": target,
            "authorized": authorized,
            "headers": [k.decode("latin-1").lower() for k, _ in headers],
        }
        self.seen.append(record)
        if not authorized:
            record["status"] = 407
            await _answer(writer, 407, b"", [(b"Proxy-Authenticate", b'Basic realm="test"')])
            return True
        if method == "CONNECT":
            return await self._connect(target, reader, writer, record)
        status, answer = await _forward(method, target, headers, body)
        record["status"] = status
        writer.write(answer)
        await writer.drain()
        return True

    async def _connect(
        self,
        target: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: dict[str, Any],
    ) -> bool:
        """Answer an authorised CONNECT: ``--connect-status`` if set, else open the tunnel.

        True when the client's connection stays open for another request.
        """
        if self._connect_status is not None:
            record["status"] = self._connect_status
            await _answer(writer, self._connect_status, b"tunnel refused by test policy")
            return True
        await _tunnel(target, reader, writer, record)
        return False


async def _tunnel(
    target: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    record: dict[str, Any],
) -> None:
    """Open ``host:port``, answer 200, then relay bytes both ways until either side closes."""
    host, _, port = target.rpartition(":")
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            host.strip("[]"), int(port)
        )
    except (OSError, ValueError):
        record["status"] = 502
        await _answer(writer, 502, b"cannot reach " + target.encode("latin-1"))
        return
    record["status"] = 200
    tunnel = record["tunnel"] = {"client_bytes": 0, "server_bytes": 0, "first_byte": None}
    record["plaintext_authorization"] = False
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, key: str) -> None:
        tail = b""  # the end of the previous chunk, so a word split across two is found
        try:
            while chunk := await source.read(65_536):
                if key == "client_bytes":
                    if tunnel["first_byte"] is None:
                        tunnel["first_byte"] = chunk[0]
                    if b"authorization:" in (tail + chunk).lower():
                        record["plaintext_authorization"] = True
                    tail = chunk[-16:]
                tunnel[key] += len(chunk)
                sink.write(chunk)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    await asyncio.gather(
        pipe(reader, upstream_writer, "client_bytes"),
        pipe(upstream_reader, writer, "server_bytes"),
    )


async def _forward(
    method: str, target: str, headers: list[tuple[bytes, ...]], body: bytes
) -> tuple[int, bytes]:
    """Send the request upstream in origin form; its status and the answer to relay."""
    url = urlsplit(target)
    upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port or 80)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
    request = [f"{method} {path} HTTP/1.1".encode("latin-1")]
    request += [k + b": " + v for k, v in kept] + [b"Connection: close", b"", b""]
    upstream_writer.write(b"\r\n".join(request) + body)
    await upstream_writer.drain()
    raw = await upstream_reader.read()
    upstream_writer.close()
    head, _, answer_body = raw.partition(b"\r\n\r\n")
    status_line, *answer_headers = head.split(b"\r\n")
    status = int(status_line.split(b" ")[1])
    relayed = [h for h in answer_headers if h.split(b":", 1)[0].strip().lower() != b"connection"]
    if not any(h.lower().startswith((b"content-length:", b"transfer-encoding:")) for h in relayed):
        relayed.append(b"Content-Length: " + str(len(answer_body)).encode())
    return status, b"\r\n".join([status_line, *relayed, b"", answer_body])


async def _answer(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    head = [f"HTTP/1.1 {status} Proxy".encode(), b"Content-Length: " + str(len(body)).encode()]
    head += [k + b": " + v for k, v in headers or []]
    writer.write(b"\r\n".join([*head, b"", body]))
    await writer.drain()


async def serve(port: int, credentials: str | None, connect_status: int | None = None) -> None:
    """Listen on 127.0.0.1 until killed; announce the address once bound."""
    proxy = ForwardProxy(credentials, connect_status)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, limit=HEAD_LIMIT)
    bound = server.sockets[0].getsockname()[1]
    print(f"proxy listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the command line and run the proxy."""
    parser = argparse.ArgumentParser(description="A minimal HTTP forward proxy for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--credentials", help="user:password a request must carry")
    parser.add_argument(
        "--connect-status", type=int, help="answer every authorised CONNECT with this status"
    )
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.credentials, args.connect_status))


if __name__ == "__main__":
    main()
