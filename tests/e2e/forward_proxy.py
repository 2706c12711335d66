"""A minimal HTTP forward proxy, run as its own process by the outbound-proxy tests.

``python tests/e2e/forward_proxy.py --port 0 [--credentials user:password]`` prints
``proxy listening on http://127.0.0.1:PORT`` once bound. It forwards absolute-form
requests (``POST http://host:port/path HTTP/1.1``), one upstream connection each, and keeps
the client's connection alive between them. With ``--credentials`` a request without the
matching ``Proxy-Authorization: Basic ...`` is answered 407 and not forwarded. ``CONNECT``
(https tunnels) is answered 501: the sandbox speaks plain http.

``GET /_proxy/requests`` (origin form, asked of the proxy itself) answers what it saw, as
JSON: ``{"requests": [{"method", "url", "status", "authorized"}]}``, where ``status`` is what
the client was answered (407 for a refused one) and ``authorized`` whether the request
carried the right credentials. The ``Proxy-Authorization`` header is never forwarded.
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

    def __init__(self, credentials: str | None) -> None:
        self._expected = (
            b"Basic " + base64.b64encode(credentials.encode()) if credentials is not None else None
        )
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
        if method == "CONNECT" or not target.startswith("http://"):
            await _answer(writer, 501, b"only absolute-form http requests are forwarded")
            return True
        given = next((v for k, v in headers if k.lower() == b"proxy-authorization"), None)
        authorized = self._expected is None or given == self._expected
        record: dict[str, Any] = {"method": method, "url": target, "authorized": authorized}
        self.seen.append(record)
        if not authorized:
            record["status"] = 407
            await _answer(writer, 407, b"", [(b"Proxy-Authenticate", b'Basic realm="test"')])
            return True
        status, answer = await _forward(method, target, headers, body)
        record["status"] = status
        writer.write(answer)
        await writer.drain()
        return True


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


async def serve(port: int, credentials: str | None) -> None:
    """Listen on 127.0.0.1 until killed; announce the address once bound."""
    proxy = ForwardProxy(credentials)
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
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.credentials))


if __name__ == "__main__":
    main()
