"""The sandbox as a real process over real HTTP: the notes' status table and behaviours."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from amperity_signal.processes import Process, start_process
from amperity_signal.sandbox import mint_token
from amperity_signal.sandbox.identity import hash_email
from amperity_signal.sandbox.testing import (
    ACME,
    ACME_COLLECTION,
    ACME_DROP_STREAM,
    ACME_REJECT_STREAM,
    ACME_STREAM,
    ALICE_PROFILE,
    LISTENING_PREFIX,
    SandboxProcess,
    sandbox_process,
)
from tests.support import until_held, until_refused

EVENT = {"source": "DATAFLY", "type": "page_view", "cookieid": "anon_p"}
EVENTS_URL = f"/prof/events/{ACME_STREAM}"


@pytest.fixture
async def client(sandbox_proc: SandboxProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running sandbox, which is reset to the data file's state first."""
    async with httpx.AsyncClient(base_url=sandbox_proc.base_url, timeout=10) as http:
        (await http.post("/_sandbox/reset")).raise_for_status()
        yield http


def _auth(sandbox_proc: SandboxProcess, name: str) -> dict[str, str]:
    return {"Amperity-Tenant": ACME, "Authorization": f"Bearer {sandbox_proc.tokens[name]}"}


async def _mint(client: httpx.AsyncClient, scopes: list[str], ttl: int) -> str:
    body = {"tenant": ACME, "scopes": scopes, "ttl_seconds": ttl}
    return str((await client.post("/_sandbox/tokens", json=body)).json()["token"])


async def _raw_chunked_post(base_url: str, path: str, headers: dict[str, str], body: bytes) -> int:
    """POSTs with Transfer-Encoding: chunked (hence no Content-Length) over a raw socket."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", "Transfer-Encoding: chunked"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + chunk)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_every_status_of_the_ingest_table(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """202, 204, 400, 401, 403, 404, 409, 411, 413, 415 and 503 under the notes' conditions."""
    ingest = {**_auth(sandbox_proc, "acme-ingest"), "Content-Type": "application/json"}
    body = json.dumps(EVENT).encode()
    expired = await _mint(client, ["stream:write"], -60)

    async def post(
        path: str = EVENTS_URL, content: bytes = body, headers: dict[str, str] | None = None
    ) -> int:
        response = await client.post(path, content=content, headers={**ingest, **(headers or {})})
        return response.status_code

    assert await post() == 202
    assert await post(f"/prof/events/{ACME_DROP_STREAM}") == 204
    assert await post(content=b"[" + body + b"]") == 400
    assert await post(headers={"Authorization": f"Bearer {expired}"}) == 401
    assert await post(headers=_auth(sandbox_proc, "acme-profile")) == 403
    assert await post("/prof/events/esm-doesNotExist") == 404
    assert await post(f"/prof/events/{ACME_REJECT_STREAM}") == 409
    assert await _raw_chunked_post(sandbox_proc.base_url, EVENTS_URL, ingest, body) == 411
    assert await post(content=b'{"pad": "' + b"x" * 70_000 + b'"}') == 413
    assert await post(headers={"Content-Type": "text/plain"}) == 415
    await client.post("/_sandbox/faults", json={"status": 503, "count": 1})
    assert await post() == 503
    assert await post() == 202


async def test_the_body_limit_is_exactly_64_kib(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """65536 bytes are accepted; 65537 bytes are 413."""
    headers = {**_auth(sandbox_proc, "acme-ingest"), "Content-Type": "application/json"}
    skeleton = b'{"source": "DATAFLY", "pad": ""}'
    for size, status in ((65_536, 202), (65_537, 413)):
        content = skeleton[:-2] + b"x" * (size - len(skeleton)) + b'"}'
        assert len(content) == size
        response = await client.post(EVENTS_URL, content=content, headers=headers)
        assert response.status_code == status


async def test_scopes_are_refused_both_ways(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """The ingest key gets 403 on the Profile API and the profile key 403 on ingest."""
    lookup = await client.get(
        f"/prof/lookup/{ACME_COLLECTION}/keychain",
        params={"customer_id": "cust-1001"},
        headers=_auth(sandbox_proc, "acme-ingest"),
    )
    ingest = await client.post(EVENTS_URL, json=EVENT, headers=_auth(sandbox_proc, "acme-profile"))
    assert (lookup.status_code, ingest.status_code) == (403, 403)


async def test_wrong_source_is_accepted_and_shown_in_unknown(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """A lower-case source is 202 yet routed to _unknown in the inspector."""
    event = {**EVENT, "source": "datafly"}
    response = await client.post(EVENTS_URL, json=event, headers=_auth(sandbox_proc, "acme-ingest"))
    assert response.status_code == 202
    events = (await client.get("/_sandbox/events", params={"stream": ACME_STREAM})).json()
    assert [(e["routed_to"], e["body"]) for e in events["events"]] == [("_unknown", event)]


async def test_stitching_then_lookup_by_cookie_and_email(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """Anonymous events plus an identify sharing the cookie give one profile found both ways."""
    headers = _auth(sandbox_proc, "acme-ingest")
    for event_type in ("view_item", "add_to_cart"):
        event = {"source": "DATAFLY", "type": event_type, "cookieid": "anon_proc"}
        assert (await client.post(EVENTS_URL, json=event, headers=headers)).status_code == 202
    identify = {
        "source": "DATAFLY",
        "type": "identify",
        "cookieid": "anon_proc",
        "email": "pat@example.com",
    }
    assert (await client.post(EVENTS_URL, json=identify, headers=headers)).status_code == 202
    assert (await client.post("/_sandbox/flush")).json() == {"applied": 3}
    profile_headers = _auth(sandbox_proc, "acme-profile")
    url = f"/prof/lookup/{ACME_COLLECTION}/keychain"
    by_cookie = await client.get(
        url, params={"device_cookie": "anon_proc"}, headers=profile_headers
    )
    by_email = await client.post(
        url, json={"keys": {"email_sha256": hash_email("pat@example.com")}}, headers=profile_headers
    )
    assert by_cookie.status_code == by_email.status_code == 200
    assert by_cookie.json()["profile_id"] == by_email.json()["profile_id"]
    assert by_cookie.json()["attributes"]["EventCount"] == 3


async def test_context_dependent_attribute_over_http(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """enrich=true&pageCategory=shoes answers NextBestOffer shoes-10-off."""
    response = await client.get(
        f"/prof/profiles/{ACME_COLLECTION}/{ALICE_PROFILE}",
        params={"enrich": "true", "pageCategory": "shoes"},
        headers=_auth(sandbox_proc, "acme-profile"),
    )
    assert response.json()["attributes"]["NextBestOffer"] == "shoes-10-off"


async def test_drop_fault_is_a_transport_error_for_httpx(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """A drop fault closes the connection: httpx raises a transport error, not a 500."""
    await client.post("/_sandbox/faults", json={"drop_rate": 1.0, "count": 1, "kind": "events"})
    async with httpx.AsyncClient(base_url=sandbox_proc.base_url) as fresh:
        with pytest.raises(httpx.TransportError):
            await fresh.post(EVENTS_URL, json=EVENT, headers=_auth(sandbox_proc, "acme-ingest"))
        after = await fresh.post(EVENTS_URL, json=EVENT, headers=_auth(sandbox_proc, "acme-ingest"))
    assert after.status_code == 202
    stats = (await client.get("/_sandbox/stats")).json()
    assert stats["dropped"] == 1


async def _raw_exchange(base_url: str, request: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """Writes one request on a fresh connection, reads until the server hangs up.

    Returns the status line, the headers (lower-case names) and every body byte that came.
    """
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        answer = await reader.read()  # to EOF: a cut answer ends with the connection
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (h.partition(":") for h in lines)}
    return status_line.encode(), headers, body


def _raw_event_post(sandbox_proc: SandboxProcess, stream: str) -> bytes:
    body = json.dumps(EVENT).encode()
    head = "".join(
        f"{name}: {value}\r\n" for name, value in _auth(sandbox_proc, "acme-ingest").items()
    )
    return (
        f"POST /prof/events/{stream} HTTP/1.1\r\nHost: sandbox\r\n{head}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_a_cut_body_fault_sends_the_status_line_and_headers_then_half_the_body(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """cut_body_rate: 202 and its Content-Length reach the wire, then fewer bytes, then EOF."""
    fault = {"cut_body_rate": 1.0, "count": 1, "kind": "events"}
    assert (await client.post("/_sandbox/faults", json=fault)).status_code == 200

    status_line, headers, body = await _raw_exchange(
        sandbox_proc.base_url, _raw_event_post(sandbox_proc, ACME_STREAM)
    )

    assert status_line == b"HTTP/1.1 202 Accepted"
    announced = int(headers["content-length"])
    assert 0 < len(body) < announced
    assert body == body[: announced // 2] and body.startswith(b'{"status":202')
    # Amperity took the event: it is recorded once, and the request shows the cut.
    events = (await client.get("/_sandbox/events")).json()["events"]
    assert [e["body"] for e in events] == [EVENT]
    record = (await client.get("/_sandbox/requests")).json()["requests"][-1]
    assert (record["status"], record["body_cut"], record["dropped"]) == (202, True, False)
    assert (await client.get("/_sandbox/stats")).json()["body_cut"] == 1
    assert (await client.get("/_sandbox/faults")).json()["faults"] == []


async def test_a_cut_body_fault_cuts_an_injected_status_too_and_spares_a_bodiless_204(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """With status 503 the 503 and its Retry-After arrive cut; a 204 has no body to cut."""
    fault = {"status": 503, "retry_after": 2, "cut_body_rate": 1.0, "count": 1}
    await client.post("/_sandbox/faults", json=fault)
    status_line, headers, body = await _raw_exchange(
        sandbox_proc.base_url, _raw_event_post(sandbox_proc, ACME_STREAM)
    )
    assert status_line == b"HTTP/1.1 503 Service Unavailable"
    assert headers["retry-after"] == "2"
    assert len(body) < int(headers["content-length"])

    await client.post("/_sandbox/faults", json={"cut_body_rate": 1.0, "count": 1})
    status_line, headers, body = await _raw_exchange(
        sandbox_proc.base_url, _raw_event_post(sandbox_proc, ACME_DROP_STREAM)
    )
    assert status_line == b"HTTP/1.1 204 No Content"
    assert body == b""
    record = (await client.get("/_sandbox/requests")).json()["requests"][-1]
    assert (record["status"], record["body_cut"]) == (204, False)


async def test_a_cut_profile_answer_is_a_protocol_error_for_httpx(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """A cut 200 lookup: httpx sees an incomplete body; the next lookup is whole."""
    await client.post("/_sandbox/faults", json={"cut_body_rate": 1.0, "count": 1, "kind": "lookup"})
    url = f"/prof/lookup/{ACME_COLLECTION}/keychain"
    params = {"email_sha256": hash_email("alice@example.com")}
    async with httpx.AsyncClient(base_url=sandbox_proc.base_url) as fresh:
        headers = _auth(sandbox_proc, "acme-profile")
        with pytest.raises(httpx.RemoteProtocolError):
            await fresh.get(url, params=params, headers=headers)
        after = await fresh.get(url, params=params, headers=headers)
    assert after.status_code == 200
    assert after.json()["profile_id"] == ALICE_PROFILE


async def _fire_at_once(base_url: str, request: bytes, count: int) -> list[int]:
    """Opens ``count`` connections first, then writes the same request on all of them at once.

    Raw sockets, because an ``httpx`` pool with hundreds of queued requests spends more time
    scheduling than the server spends answering, and would spread the burst over seconds.
    """
    url = urlsplit(base_url)
    connections = await asyncio.gather(
        *(asyncio.open_connection(url.hostname, url.port) for _ in range(count))
    )
    for _, writer in connections:
        writer.write(request)
    status_lines = await asyncio.gather(*(reader.readline() for reader, _ in connections))
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections))
    return [int(line.split()[1]) for line in status_lines]


def _busiest_second(timestamps: list[float]) -> int:
    """The most timestamps (sorted) falling in any window of one second."""
    busiest, start = 0, 0
    for end, timestamp in enumerate(timestamps):
        while timestamps[start] <= timestamp - 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest


async def test_rate_limit_never_admits_more_than_500_in_any_second(
    client: httpx.AsyncClient, sandbox_proc: SandboxProcess
) -> None:
    """600 concurrent requests: 429s, each justified, and at most 500 admitted in any 1 s window."""
    token = sandbox_proc.tokens["acme-profile"]
    request = (
        f"GET /prof/lookup/{ACME_COLLECTION}/keychain?customer_id=cust-1001 HTTP/1.1\r\n"
        f"Host: sandbox\r\nAmperity-Tenant: {ACME}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    statuses = await _fire_at_once(sandbox_proc.base_url, request, 600)
    assert set(statuses) <= {200, 429}
    log = (await client.get("/_sandbox/requests", params={"limit": "1000"})).json()["requests"]
    assert len(log) == 600
    arrivals = sorted(r["timestamp"] for r in log)
    admitted = sorted(r["timestamp"] for r in log if r["status"] != 429)
    refused = [r["timestamp"] for r in log if r["status"] == 429]
    assert _busiest_second(admitted) <= 500
    for timestamp in refused:
        assert sum(timestamp - 1.0 < t <= timestamp for t in admitted) >= 500
    if _busiest_second(arrivals) > 500:  # a slow machine may not offer 500 in one second
        assert statuses.count(429) > 0
    stats = (await client.get("/_sandbox/stats")).json()
    assert stats["throttled"] == statuses.count(429)


async def test_a_lower_rate_limit_throttles_a_burst_on_any_machine() -> None:
    """With --rate-limit 50, 200 requests at once get 429s and never over 50 admitted in 1 s."""
    with sandbox_process("--rate-limit", "50") as proc:
        token = proc.tokens["acme-profile"]
        request = (
            f"GET /prof/lookup/{ACME_COLLECTION}/keychain?customer_id=cust-1001 HTTP/1.1\r\n"
            f"Host: sandbox\r\nAmperity-Tenant: {ACME}\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        statuses = await _fire_at_once(proc.base_url, request, 200)
        async with httpx.AsyncClient(base_url=proc.base_url) as inspector:
            log = (await inspector.get("/_sandbox/requests", params={"limit": "1000"})).json()
    admitted = sorted(r["timestamp"] for r in log["requests"] if r["status"] != 429)
    assert statuses.count(429) > 0
    assert _busiest_second(admitted) <= 50


def test_data_option_loads_another_world(tmp_path: Path) -> None:
    """--data F serves the tenants of F instead of the default ones."""
    world = {
        "signing_secret": "other-secret",
        "tenants": [
            {
                "id": "initech",
                "streams": [{"id": "esm-Init1", "routing": 'source == "X"', "target": "E"}],
            }
        ],
    }
    path = tmp_path / "world.json"
    path.write_text(json.dumps(world))
    token = mint_token("other-secret", "initech", ["stream:write"], 60)
    headers = {"Amperity-Tenant": "initech", "Authorization": f"Bearer {token}"}
    with sandbox_process("--data", str(path)) as process:
        assert process.base_url.startswith("http://127.0.0.1:")
        response = httpx.post(
            f"{process.base_url}/prof/events/esm-Init1", json={"source": "X"}, headers=headers
        )
    assert response.status_code == 202


async def _start_sandbox(tmp_path: Path, *flags: str) -> tuple[Process, str, Path]:
    """A sandbox process on a free port: the process, its base URL, its stderr's log."""
    command = [sys.executable, "-m", "amperity_signal.sandbox", "--port", "0", *flags]
    log = tmp_path / "sandbox.log"
    process = await start_process(command, ready=LISTENING_PREFIX, log=log)
    return process, process.ready_line.removeprefix(LISTENING_PREFIX), log


async def test_sigterm_stops_the_sandbox_with_exit_code_0(tmp_path: Path) -> None:
    """SIGTERM is the normal way to stop the sandbox: a graceful stop and exit 0, not -15."""
    process, base_url, log = await _start_sandbox(tmp_path)
    async with httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/_sandbox/stats")).status_code == 200
    assert await process.stop() == 0
    assert log.read_text() == "", "a clean stop writes nothing to stderr"


LONG_LATENCY: dict[str, object] = {"latency_ms": 120_000}
"""A latency no stop waits out: the request is in flight until the stop cuts it."""


async def _hold_a_request(
    http: httpx.AsyncClient, holding: dict[str, object] = LONG_LATENCY
) -> asyncio.Task[httpx.Response]:
    """POST an event the sandbox holds (``holding``, a fault); return once it is held."""
    token = await _mint(http, ["stream:write"], 3600)
    headers = {"Amperity-Tenant": ACME, "Authorization": f"Bearer {token}"}
    fault = {"kind": "events", **holding, "count": 1}
    (await http.post("/_sandbox/faults", json=fault)).raise_for_status()
    held = asyncio.create_task(http.post(EVENTS_URL, json=EVENT, headers=headers))
    await until_held(http, held)
    return held


def _assert_cut_answer(answer: httpx.Response) -> None:
    """The sandbox's own 503 for a request a stop cut: Amperity's JSON shape, to resend."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    assert "send the request again" in answer.json()["message"], answer.text


@pytest.mark.parametrize("holding", [LONG_LATENCY, {"hold": True}], ids=["latency", "hold"])
async def test_a_second_sigint_forces_the_stop_exit_130_with_no_error_logged(
    tmp_path: Path, holding: dict[str, object]
) -> None:
    """Ctrl-C twice, a request held in flight: exit 130, nothing on stderr, the request a 503.

    The forced stop exited 0, the request got uvicorn's plain-text 500, and the end of the
    event loop logged two tracebacks (``CancelledError``): the request's and the lifespan's.
    """
    # A long graceful wait: however slow the machine, the second Ctrl-C is what ends it.
    process, base_url, log = await _start_sandbox(tmp_path, "--stop-grace", "600")
    async with httpx.AsyncClient(base_url=base_url, timeout=90) as http:
        held = await _hold_a_request(http, holding)
        process.proc.send_signal(signal.SIGINT)
        # The first stop has begun once the sandbox stops listening; then the second Ctrl-C
        # (two SIGINTs sent at once could reach Python's handler as one).
        await asyncio.wait_for(until_refused(urlsplit(base_url).netloc), 60)
        process.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.proc.wait(), 60) == 130
        answer = await asyncio.wait_for(held, 60)
    _assert_cut_answer(answer)
    assert log.read_text() == "", "a forced stop logs no error and no traceback"


@pytest.mark.parametrize("holding", [LONG_LATENCY, {"hold": True}], ids=["latency", "hold"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_a_request_held_past_the_stop_grace_is_cut_with_a_503_and_exit_0(
    tmp_path: Path, stop: signal.Signals, holding: dict[str, object]
) -> None:
    """One stop, a request held past ``--stop-grace``: the request a JSON 503, exit 0.

    uvicorn's own timeout cut it: an ERROR line ("Cancel 1 running task(s), timeout
    graceful shutdown exceeded") on stderr. Now one warning says how many were cut. A
    ``hold`` fault's request is in flight like a latency's: a stop does not release it.
    """
    process, base_url, log = await _start_sandbox(tmp_path, "--stop-grace", "1")
    async with httpx.AsyncClient(base_url=base_url, timeout=90) as http:
        held = await _hold_a_request(http, holding)
        process.proc.send_signal(stop)
        assert await asyncio.wait_for(process.proc.wait(), 60) == 0
        answer = await asyncio.wait_for(held, 60)
    _assert_cut_answer(answer)
    stderr = log.read_text()
    for unwanted in ('"level": "error"', "Traceback", "Cancel"):
        assert unwanted not in stderr, stderr
    # One JSON line at warning, in the sandbox's log format, saying how many were cut.
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert [(line["level"], line.get("requests")) for line in lines] == [("warning", 1)], lines
    assert lines[0]["msg"].startswith("grace period over"), lines
    assert lines[0]["logger"] == "amperity_signal.sandbox.server", lines


async def test_answers_carry_a_date_and_advertise_no_server_software(
    sandbox_proc: SandboxProcess, client: httpx.AsyncClient
) -> None:
    """No ``server: uvicorn`` on any answer (API, refusal, controls); Date stays on each."""
    answers = [
        await client.post(EVENTS_URL, json=EVENT, headers=_auth(sandbox_proc, "acme-ingest")),
        await client.get("/prof/nothing"),
        await client.get(EVENTS_URL),
        await client.get("/_sandbox/stats"),
    ]
    assert [a.status_code for a in answers] == [202, 404, 405, 200]
    for answer in answers:
        assert "server" not in answer.headers, answer.request.url
        assert parsedate_to_datetime(answer.headers["date"]).year >= 2025, answer.request.url


async def test_log_level_debug_logs_each_api_request_as_json_without_its_token(
    tmp_path: Path,
) -> None:
    """--log-level debug: one JSON line per /prof request (method, path, status), no token."""
    command = [sys.executable, "-m", "amperity_signal.sandbox", "--port", "0"]
    log = tmp_path / "sandbox.log"
    process = await start_process(
        [*command, "--log-level", "DEBUG"], ready=LISTENING_PREFIX, log=log
    )
    base_url = process.ready_line.removeprefix(LISTENING_PREFIX)
    async with httpx.AsyncClient(base_url=base_url) as http:
        token = await _mint(http, ["stream:write"], 3600)
        headers = {"Amperity-Tenant": ACME, "Authorization": f"Bearer {token}"}
        assert (await http.post(EVENTS_URL, json=EVENT, headers=headers)).status_code == 202
    assert await process.stop() == 0
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    answered = [line for line in lines if line["logger"] == "amperity_signal.sandbox"]
    assert [(a["level"], a["msg"], a["tenant"]) for a in answered] == [
        ("debug", f"POST {EVENTS_URL} answered 202", ACME)
    ]
    assert token not in text and token.split(".")[2] not in text


def test_an_unknown_log_level_is_a_usage_error_naming_the_levels() -> None:
    """--log-level loud exits 2 and lists the levels it takes."""
    command = [sys.executable, "-m", "amperity_signal.sandbox", "--log-level", "loud"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 2
    assert "debug, info, warning, error" in finished.stderr
