"""``amperity-signal demo --once``: what a newcomer's ``make demo`` shows."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import tomllib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from amperity_signal import demo
from amperity_signal.processes import Process, start_process
from datafly.amperity.v1 import amperity_service_pb2 as pb
from tests.e2e.stack import CLI
from tests.support import until

pytestmark = pytest.mark.e2e


async def _demo_once(env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """``demo --once``, to its end: its exit code and what it printed (stdout and stderr)."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 180)
    return process.returncode, output.decode(errors="replace")


async def test_the_demo_delivers_resolves_and_shows_the_browser_view() -> None:
    """The demo delivers each sample event, resolves the visitor and lists the URLs."""
    returncode, text = await _demo_once()
    assert returncode == 0, text
    for expected in ("type=pageview", "type=view_item", "type=purchase", " 202 (attempts 1)"):
        assert expected in text, text
    assert "resolved=True amperity_id=p-a11ce0000001 matched_key=email_sha256" in text
    assert '"EventCount": 92' in text  # the profile as the demo's own events changed it
    assert '"Persona": "Value Hunter"' in text.split("BrowserProfile", 1)[1]
    # The cache hit ratio, as /metrics shows it (the Enrich and BrowserProfile read the cache).
    assert re.search(r"\n-- Cache, from /metrics\n  hit ratio \d+% since the start", text), text
    assert "FAILED" not in text and "Traceback" not in text
    # The addresses listed were the stopped demo's: the last line says so, and how to keep
    # them up, rather than leave a newcomer opening pages nothing serves.
    closing = "The demo has stopped (--once): run it without --once to keep these addresses up."
    assert text.rstrip().splitlines()[-1] == closing, text


async def test_a_service_that_refuses_to_start_is_told_without_a_traceback() -> None:
    """The demo's service stops at once (a SOCKS proxy in the environment): its reason, exit 1.

    The demo used to end in a traceback, saying the service "did not print" its ready line
    "within 30.0s" when it had exited at once with its reason.
    """
    env = {**os.environ, "HTTPS_PROXY": "socks5://proxy.invalid:1080"}
    returncode, text = await _demo_once(env)
    assert returncode == 1, text
    assert "Traceback" not in text
    assert "error: the demo's service exited with code 2 before it was ready" in text, text
    assert "HTTPS_PROXY: is socks5://proxy.invalid:1080, a socks5 proxy" in text, text
    assert "within 30" not in text, text


async def test_the_demo_runs_behind_a_proxy_set_for_the_internet() -> None:
    """A newcomer's egress proxy in the environment does not carry the demo's local calls.

    Here one that answers nothing, in every proxy variable: every event is delivered
    directly to the sandbox on 127.0.0.1. It used to send the service's calls to the
    sandbox, and the demo's own, to the proxy: every Deliver failed and the demo ended in
    an httpx traceback.
    """
    proxy = "http://127.0.0.1:9"  # the discard port: nothing listens
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    env = {**os.environ, **dict.fromkeys(names, proxy), "NO_PROXY": "corp.example"}
    returncode, text = await _demo_once(env)
    assert returncode == 0, text
    assert text.count(" 202 (attempts 1)") == 6, text
    assert "FAILED" not in text and "Traceback" not in text, text


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie no longer runs anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux's /proc)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextlib.asynccontextmanager
async def _demo_up(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """``demo ARGS`` started and read up to "The demo stays up": the process, its lines.

    Stopped on the way out unless the body stopped it: by SIGTERM, so that it stops its
    sandbox and service itself, then SIGKILL.
    """
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        while not any("The demo stays up" in line for line in seen):
            line = await asyncio.wait_for(process.stdout.readline(), 180)
            assert line, "".join(seen)
            seen.append(line.decode(errors="replace"))
        yield process, seen
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.communicate(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_sigterm_stops_the_demo_and_the_processes_it_started() -> None:
    """A SIGTERM to the demo alone stops its sandbox and service too, and it exits 0."""
    async with _demo_up() as (process, seen):
        children = _children(process.pid)
        assert len(children) == 2, children  # the sandbox and the service
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
    text = "".join(seen) + rest.decode(errors="replace")
    assert process.returncode == 0, text
    assert [pid for pid in children if _running(pid)] == [], text
    assert "Traceback" not in text


async def test_a_demo_whose_service_dies_says_so_and_stops_rather_than_stay_up() -> None:
    """The service gone while the demo is up: the demo says so, with its log's end, and exits 1.

    It used to wait for a Ctrl-C with every address it had printed dead, and remove the
    only log that said why when it finally stopped.
    """
    async with _demo_up() as (process, seen):
        children = _children(process.pid)
        (service,) = [pid for pid in children if b"serve" in _cmdline(pid)]
        log = Path(os.readlink(f"/proc/{service}/fd/2"))
        last = _last_line(log)  # an idle service adds none before the kill
        os.kill(service, signal.SIGKILL)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
    text = "".join(seen) + rest.decode(errors="replace")
    assert process.returncode == 1, text
    assert "demo's service (gRPC and gateway) was killed by SIGKILL while" in text, text
    assert "the demo stops too" in text and "last lines of its log" in text, text
    assert last in text  # the log's end, printed before the log is removed with the demo
    assert [pid for pid in children if _running(pid)] == [], text
    assert "Traceback" not in text


def _last_line(log: Path) -> str:
    return log.read_text(errors="replace").splitlines()[-1]


def _cmdline(pid: int) -> bytes:
    """``pid``'s command line, its arguments separated by NULs."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _levels(log: Path) -> dict[str, set[str]]:
    """The levels each logger wrote to a JSON-lines log."""
    found: dict[str, set[str]] = {}
    for line in log.read_text(errors="replace").splitlines():
        entry = json.loads(line)
        found.setdefault(entry["logger"], set()).add(entry["level"])
    return found


async def test_log_level_reaches_the_sandbox_and_the_service_the_demo_starts() -> None:
    """--log-level debug logs debug lines in the sandbox too, not only in the service."""
    async with _demo_up("--log-level", "debug") as (process, seen):
        # Each child's stderr is its log file (read while the demo, and its directory, live).
        logs = {Path(os.readlink(f"/proc/{pid}/fd/2")) for pid in _children(process.pid)}
        by_name = {log.name: log for log in logs}
        assert set(by_name) == {"sandbox.log", "service.log"}, logs
        sandbox, service = _levels(by_name["sandbox.log"]), _levels(by_name["service.log"])
        printed = "".join(seen)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 60)
    assert "debug" in sandbox.get("amperity_signal.sandbox", set()), sandbox
    assert "debug" in service.get("amperity_signal.server", set()), service
    # The demo says where they are, so that --log-level is of use while it runs.
    for log in by_name.values():
        assert str(log) in printed, printed


async def test_the_grpcurl_call_the_demo_prints_answers_the_demos_visitor() -> None:
    """The printed grpcurl BrowserProfile call, made as printed, gets the visitor's Persona.

    The README's grpcurl calls name the example configuration's integration, which the
    demo does not run; the demo prints one of its own to paste.
    """
    async with _demo_up() as (process, seen):
        printed = [line for line in seen if "grpcurl" in line and "-d " in line]
        assert len(printed) == 1, "".join(seen)
        words = shlex.split(printed[0])
        assert words[:2] == ["grpcurl", "-plaintext"], words
        body, target, method = words[words.index("-d") + 1], words[-2], words[-1]
        request = json_format.Parse(body, pb.BrowserProfileRequest())
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(
                f"/{method}",
                request_serializer=pb.BrowserProfileRequest.SerializeToString,
                response_deserializer=pb.BrowserProfileResponse.FromString,
            )
            response = await call(request, timeout=10)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 60)
    assert json_format.MessageToDict(response)["attributes"]["Persona"] == "Value Hunter"


def _demo_dirs(parent: Path) -> set[Path]:
    """The demos' directories in ``parent``."""
    return {path for path in parent.iterdir() if path.name.startswith("amperity-signal-demo-")}


async def test_a_killed_demos_processes_stop_and_a_later_demo_sweeps_its_directory(
    tmp_path: Path,
) -> None:
    """A SIGKILLed demo: its sandbox and service stop on their own, its directory is swept.

    The directory is kept while a process still writes a log there (here the test holds
    the log's lock, as a sandbox still stopping does), and a running demo's is left alone.
    """
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    async with _demo_up(env=env) as (killed, _):
        (left,) = _demo_dirs(tmp_path)
        started = _children(killed.pid)  # its sandbox and service
        killed.kill()
        await killed.wait()
    try:
        for _ in range(600):
            if not any(_running(pid) for pid in started):
                break
            await asyncio.sleep(0.05)
        assert not any(_running(pid) for pid in started), "the killed demo's children still run"
        async with contextlib.AsyncExitStack() as stack:
            log = stack.enter_context((left / "sandbox.log").open("rb"))
            fcntl.flock(log, fcntl.LOCK_SH)  # as a writer still at work holds it
            running, _ = await stack.enter_async_context(_demo_up(env=env))
            (kept,) = _demo_dirs(tmp_path) - {left}
            assert (await _demo_once(env))[0] == 0
            assert _demo_dirs(tmp_path) == {left, kept}
            log.close()
            assert (await _demo_once(env))[0] == 0
            assert _demo_dirs(tmp_path) == {kept}
            assert running.returncode is None
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert _demo_dirs(tmp_path) == set()  # the running demo's, removed as it stopped


async def test_a_service_dying_while_the_demo_sends_its_traffic_is_said_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service killed mid-traffic: the call that finds it gone is not the message.

    The demo's traffic (in process, its sandbox and service real) kills the service and
    then calls it, as a sample call would the moment the service died. The demo used to
    end in that call's AioRpcError traceback.
    """

    async def traffic_meeting_a_dead_service(grpc_target: str, *_: object) -> None:
        (service,) = [p for p in _children(os.getpid()) if b"serve" in _cmdline(p)]
        os.kill(service, signal.SIGKILL)
        async with grpc.aio.insecure_channel(grpc_target) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type it sync
            await health.Check(health_pb2.HealthCheckRequest(), timeout=10)  # refused: gone

    monkeypatch.setattr(demo, "_traffic", traffic_meeting_a_dead_service)
    status = await asyncio.wait_for(demo.run_demo(once=True), 120)
    printed = capsys.readouterr()
    assert status == 1, printed
    assert (
        "The demo's service (gRPC and gateway) was killed by SIGKILL while the demo sent "
        "its traffic" in printed.err
    ), printed
    assert "the demo stops too" in printed.err and "last lines of its log" in printed.err
    assert "Traceback" not in printed.out + printed.err


def _port_to_take(taken: str, command: Sequence[str]) -> int | None:
    """The port the demo told this process to listen on, if it is the ``taken`` one.

    ``sandbox``: the sandbox's ``--port``; ``grpc`` and ``http``: the service's addresses in
    the configuration it was given.
    """
    if command[3] == "sandbox":
        return int(command[command.index("--port") + 1]) if taken == "sandbox" else None
    if taken == "sandbox":
        return None
    server = tomllib.loads(Path(command[command.index("--config") + 1]).read_text())["server"]
    return int(server[f"{taken}_address"].rsplit(":", 1)[1])


@pytest.mark.parametrize("taken", ["sandbox", "grpc", "http"])
async def test_a_port_taken_after_the_demo_found_it_free_is_replaced_by_another(
    taken: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port taken between the demo's look and its process's bind: the demo uses another.

    As two ``make demo`` started at the same moment do: both find 8765 free, one's sandbox
    binds it first. The other used to fail, telling its user to "pass another --port",
    which ``demo`` does not take. Here the port is taken as the process starts, and free
    again once it has failed, as when the other was a ``demo --once`` that ended meanwhile.
    """
    lost: list[int] = []

    async def start_once_the_port_is_taken(command: Sequence[str], **options: Any) -> Process:
        port = _port_to_take(taken, command)
        if port is None or lost:
            return await start_process(command, **options)
        lost.append(port)
        with socket.socket() as another:
            # As the demo's processes bind: a port the last demo left in TIME-WAIT is free.
            another.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            another.bind(("127.0.0.1", port))
            another.listen()
            return await start_process(command, **options)

    monkeypatch.setattr(demo, "start_process", start_once_the_port_is_taken)
    status = await asyncio.wait_for(demo.run_demo(once=True), 120)
    printed = capsys.readouterr()
    assert status == 0, printed
    assert printed.out.count(" 202 (attempts 1)") == 6, printed
    (port,) = lost
    assert f"127.0.0.1:{port}" not in printed.out, printed  # no address printed is the lost one
    assert "--port" not in printed.out + printed.err, printed


async def test_ctrl_c_while_the_demo_starts_its_processes_stops_it_quietly() -> None:
    """Ctrl-C while the sandbox starts: the demo and the sandbox stop, exit 130, no error.

    The terminal's SIGINT reaches the demo and the sandbox it is starting alike; the demo
    used to report the sandbox's exit "with code 130 before it was ready" and exit 1.
    """
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's job has
    )
    try:
        await until(lambda: bool(_children(process.pid)), lambda: "the demo started nothing")
        started = _children(process.pid)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 130, text
    assert "error" not in text and "Traceback" not in text, text
    assert [pid for pid in started if _running(pid)] == [], text
