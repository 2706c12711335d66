"""The 64 KB body limit and Content-Length rules, decided without buffering a large body."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import Message

from amperity_signal.sandbox.testing import (
    ACME,
    ACME_COLLECTION,
    ACME_STREAM,
    InProcessSandbox,
    SandboxProcess,
)

EVENTS_PATH = f"/prof/events/{ACME_STREAM}"
LOOKUP_PATH = f"/prof/lookup/{ACME_COLLECTION}/keychain"
CHUNK = b"x" * 16_384
# Far more than the sandbox may read: 16 MiB offered 16 KiB at a time.
OFFERED_CHUNKS = 1_024


@dataclass
class EndlessBody:
    """An ASGI ``receive`` offering a body far over the limit, counting the chunks taken."""

    offered: int = OFFERED_CHUNKS
    chunks_read: int = 0
    sent: list[Message] = field(default_factory=list)

    async def receive(self) -> Message:
        """The next chunk; a disconnect once the offered body is used up."""
        if self.chunks_read >= self.offered:
            return {"type": "http.disconnect"}
        self.chunks_read += 1
        return {"type": "http.request", "body": CHUNK, "more_body": True}

    async def send(self, message: Message) -> None:
        """Keeps what the app answered."""
        self.sent.append(message)

    @property
    def status(self) -> int:
        """The answered status."""
        return int(self.sent[0]["status"])

    @property
    def body(self) -> dict[str, object]:
        """The answered JSON body."""
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.sent[1:])))


async def _call(
    box: InProcessSandbox,
    path: str,
    extra: list[tuple[bytes, bytes]],
    body: EndlessBody | None = None,
) -> EndlessBody:
    """POSTs an endless body straight to the ASGI app with acme's tokens and ``extra``."""
    token = box.tokens["acme-profile" if path == LOOKUP_PATH else "acme-ingest"]
    headers = [
        (b"amperity-tenant", ACME.encode()),
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
        *extra,
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50_000),
        "server": ("sandbox", 80),
    }
    body = body or EndlessBody()
    await box.app(scope, body.receive, body.send)
    return body


async def test_a_declared_content_length_over_64_kb_is_413_before_the_body_is_read(
    sandbox: InProcessSandbox,
) -> None:
    """Content-Length: 10 MB is refused from the header: not one chunk of the body is read."""
    answer = await _call(sandbox, EVENTS_PATH, [(b"content-length", b"10000000")])
    assert (answer.status, answer.chunks_read) == (413, 0)
    assert set(answer.body) == {"status", "message", "request_id", "trace_id"}
    assert str(answer.body["message"]).endswith("send one small event")


async def test_a_chunked_body_is_read_only_until_it_passes_64_kb_then_413(
    sandbox: InProcessSandbox,
) -> None:
    """A lookup body without Content-Length stops being read at the chunk that passes 65536."""
    answer = await _call(sandbox, LOOKUP_PATH, [(b"transfer-encoding", b"chunked")])
    assert (answer.status, answer.chunks_read) == (413, 65_536 // len(CHUNK) + 1)
    assert str(answer.body["message"]).endswith(
        "65536 bytes, Amperity's limit: send a smaller body"
    )


async def test_an_event_without_content_length_is_411_before_its_body_is_read(
    sandbox: InProcessSandbox,
) -> None:
    """Ingest requires Content-Length: a chunked event is 411, whatever its size, unread."""
    answer = await _call(sandbox, EVENTS_PATH, [(b"transfer-encoding", b"chunked")])
    assert (answer.status, answer.chunks_read) == (411, 0)
    assert "Content-Length" in str(answer.body["message"])


@pytest.mark.parametrize("declared", [b"\xb2", b"12a", b"-1", b"1" * 5_000])
async def test_a_content_length_that_is_no_plain_number_is_400_or_413_never_500(
    sandbox: InProcessSandbox, declared: bytes
) -> None:
    """A superscript 2 (a digit to str.isdigit, not to int) was a 500; 5000 digits is 413."""
    answer = await _call(sandbox, EVENTS_PATH, [(b"content-length", declared)])
    assert answer.status == (413 if declared.isdigit() else 400)
    assert answer.chunks_read == 0


async def test_an_injected_fault_still_answers_before_the_size_checks(
    sandbox: InProcessSandbox,
) -> None:
    """Faults come first: a 503 fault answers an oversized event 503, not 413."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 503, "count": 1})
    answer = await _call(sandbox, EVENTS_PATH, [(b"content-length", b"10000000")])
    assert (answer.status, answer.chunks_read) == (503, 0)
    answer = await _call(sandbox, EVENTS_PATH, [(b"content-length", b"10000000")])
    assert answer.status == 413


@pytest.mark.parametrize("fault", [{"latency_ms": 60_000}, {"hold": True}], ids=["latency", "hold"])
async def test_a_client_leaving_during_latency_is_seen_while_its_refused_body_arrives(
    sandbox: InProcessSandbox, fault: dict[str, object]
) -> None:
    """During a latency or hold the unread rest of a 413 body is discarded, not a reply."""
    await sandbox.client.post("/_sandbox/faults", json={**fault, "count": 1})
    leaving = EndlessBody(offered=3)  # three chunks arrive, then the client hangs up
    answer = await _call(sandbox, EVENTS_PATH, [(b"content-length", b"10000000")], leaving)
    assert (answer.sent, answer.chunks_read) == ([], 3)
    record = (await sandbox.client.get("/_sandbox/requests")).json()["requests"][-1]
    assert record["status"] == 499


async def test_a_client_gone_before_its_body_was_whole_is_499_not_a_500(
    sandbox: InProcessSandbox,
) -> None:
    """Two chunks of a declared 60000-byte event, then a hang-up: recorded 499, nothing sent."""
    await sandbox.client.post("/_sandbox/faults", json={"status": 503, "count": 1})
    leaving = EndlessBody(offered=2)
    answer = await _call(sandbox, EVENTS_PATH, [(b"content-length", b"60000")], leaving)
    assert answer.sent == []
    record = (await sandbox.client.get("/_sandbox/requests")).json()["requests"][-1]
    assert record["status"] == 499
    assert len((await sandbox.client.get("/_sandbox/faults")).json()["faults"]) == 1


async def _status_of_raw_request(base_url: str, head: list[str], body: bytes) -> int:
    """Sends a request's head and part of a body, never finishing it, and reads the status."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        lines = [*head, f"Host: {url.netloc}", "Content-Type: application/json"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        # A guard, not a measure: before the fix the sandbox waited for the whole body.
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


async def test_a_real_server_answers_413_without_waiting_for_the_body(
    sandbox_proc: SandboxProcess,
) -> None:
    """Over HTTP: 413 for a declared 1 GB event, and for a chunked lookup past 64 KB, unsent."""
    auth = f"Authorization: Bearer {sandbox_proc.tokens['acme-ingest']}"
    declared = [f"POST {EVENTS_PATH} HTTP/1.1", f"Amperity-Tenant: {ACME}", auth]
    declared.append("Content-Length: 1000000000")
    assert await _status_of_raw_request(sandbox_proc.base_url, declared, b"{") == 413
    profile_auth = f"Authorization: Bearer {sandbox_proc.tokens['acme-profile']}"
    chunked = [f"POST {LOOKUP_PATH} HTTP/1.1", f"Amperity-Tenant: {ACME}", profile_auth]
    chunked.append("Transfer-Encoding: chunked")
    chunks = (f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n") * 5
    assert await _status_of_raw_request(sandbox_proc.base_url, chunked, chunks) == 413


async def test_the_connection_serves_the_next_request_after_a_413(
    sandbox_proc: SandboxProcess,
) -> None:
    """A 413 sent before the body was read leaves a keep-alive connection usable."""
    headers = {
        "Amperity-Tenant": ACME,
        "Authorization": f"Bearer {sandbox_proc.tokens['acme-ingest']}",
    }
    event = {"source": "DATAFLY", "type": "page_view", "cookieid": "anon_f"}
    async with httpx.AsyncClient(base_url=sandbox_proc.base_url, timeout=10) as client:
        big = await client.post(EVENTS_PATH, content=b"x" * 200_000, headers=headers)
        after = await client.post(EVENTS_PATH, json=event, headers=headers)
    assert (big.status_code, after.status_code) == (413, 202)
